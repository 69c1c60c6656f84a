/**
 * Validation of a DC configuration as it arrives from the CLI, the REST API or the cluster store. It lives
 * here (not in the daemon) so the cluster services can validate what they read without pulling the daemon in;
 * src/node/daemon.ts re-exports it.
 */
import {
  type DcConfig,
  DEFAULT_MAX_PAYLOAD,
  DEFAULT_POST_WINDOW,
  DEFAULT_SYS_ENDPOINTS,
  MAX_PAYLOAD_LIMIT,
} from '../kernel/types.js';
import { dvsError } from '../protocol/errors.js';

/** DC names: letters, digits, '_' and '-', starting with a letter (safe in store keys and URLs). */
export const DC_NAME_RE = /^[A-Za-z][A-Za-z0-9_-]*$/;
/** Longest DC name. */
export const DC_NAME_MAX = 32;

function numberParam(v: unknown, what: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw dvsError('EINVAL', `${what} must be an integer in ${min}..${max} (got ${JSON.stringify(v)})`);
  }
  return v;
}

/** Validate a DC name (EINVAL with the rule if it breaks it). */
export function validateDcName(v: unknown): string {
  if (typeof v !== 'string' || v.length === 0 || v.length > DC_NAME_MAX) {
    throw dvsError('EINVAL', `dc name must be a string of 1..${DC_NAME_MAX} characters`);
  }
  if (!DC_NAME_RE.test(v)) {
    throw dvsError('EINVAL', `bad DC name '${v}': letters, digits, '_' and '-', starting with a letter`);
  }
  return v;
}

/** Validate a DcConfig from the wire, filling defaults. Throws DvsError EINVAL naming the bad field. */
export function validateDcConfig(v: unknown): DcConfig {
  if (typeof v !== 'object' || v === null) throw dvsError('EINVAL', 'config must be an object');
  const o = v as Record<string, unknown>;
  const id = numberParam(o.id, 'dc id', 1, 65535);
  const name = validateDcName(o.name);
  if (!Array.isArray(o.nodes) || o.nodes.length === 0)
    throw dvsError('EINVAL', 'nodes must be a non-empty list');
  const nodes = [...new Set(o.nodes.map((n) => numberParam(n, 'node id', 0, 65535)))].sort((a, b) => a - b);
  const maxPayload =
    o.maxPayload === undefined
      ? DEFAULT_MAX_PAYLOAD
      : numberParam(o.maxPayload, 'maxPayload', 1, MAX_PAYLOAD_LIMIT);
  const sysEndpoints =
    o.sysEndpoints === undefined
      ? DEFAULT_SYS_ENDPOINTS
      : numberParam(o.sysEndpoints, 'sysEndpoints', 0, 1 << 20);
  const postWindow =
    o.postWindow === undefined ? DEFAULT_POST_WINDOW : numberParam(o.postWindow, 'postWindow', 1, 1 << 20);
  return { id, name, nodes, maxPayload, sysEndpoints, postWindow };
}
