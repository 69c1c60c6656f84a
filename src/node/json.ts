/**
 * JSON renderings of service results, shared by the REST API (src/api/ops.ts) and the CLI's `--json`
 * (src/cli/commands/): bytes cannot go into JSON as they are, so both spell them the same way.
 */
import type { KvRow } from './views.js';

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** `b` as UTF-8 text, or null if it is not valid UTF-8. */
export function utf8Text(b: Uint8Array): string | null {
  try {
    return utf8.decode(b);
  } catch {
    return null;
  }
}

/** A JSON-safe copy of a service result: byte arrays become base64 strings (JSON would spell them as maps). */
export function jsonSafe(v: unknown): unknown {
  if (v instanceof Uint8Array) return Buffer.from(v).toString('base64');
  if (Array.isArray(v)) return v.map(jsonSafe);
  if (v !== null && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = jsonSafe(x);
    return out;
  }
  return v;
}

/** A kv entry (value as bytes; anything else counts as empty) as JSON: the value as text and as base64. */
export function kvRow(e: {
  key: string;
  value: unknown;
  revision: number;
  createRevision: number;
  version: number;
}): KvRow {
  const value = e.value instanceof Uint8Array ? e.value : new Uint8Array(0);
  return {
    key: e.key,
    value: utf8Text(value),
    base64: Buffer.from(value).toString('base64'),
    revision: e.revision,
    createRevision: e.createRevision,
    version: e.version,
  };
}
