/**
 * Resource limits of a DC on one node: parsing, validation and formatting. Pure (no I/O), so the CLI, the
 * REST API and the daemon refuse bad input with the same message before anything is created.
 *
 * Units, as a user types them (case-insensitive suffixes, no suffix = the base unit):
 * | limit     | example | unit                                   | suffixes                         |
 * |-----------|---------|----------------------------------------|----------------------------------|
 * | `memory`  | `256M`  | bytes                                  | K, M, G, T = 1024^n (KiB, MiB ok)|
 * | `cpus`    | `0.5`   | CPUs (1 = one full core)               | none; `50%` = 0.5                |
 * | `pids`    | `128`   | tasks (threads count: Node needs ~11)  | none                             |
 * | `io-bps`  | `10M`   | bytes per second, per block device     | K, M, G = 1024^n                 |
 * | `net-bps` | `50M`   | bits per second, each direction        | k, M, G = 1000^n (like tc `mbit`)|
 *
 * `0`, `max` or `none` removes a limit (`setLimits` then writes the "unlimited" value).
 */
import { dvsError } from '../protocol/errors.js';

/** Limits of one DC on one node. An absent field is "unchanged" in an update; `null` is "no limit". */
export interface DcLimits {
  /** Memory in bytes (RAM; swap is held to the same value where the kernel allows). */
  memoryBytes?: number | null;
  /** CPU time as a number of CPUs (0.25 = a quarter of one core). */
  cpus?: number | null;
  /** Maximum number of tasks (processes and threads). */
  pids?: number | null;
  /** Block I/O, bytes per second for reads and for writes, on every disk of the node. */
  ioBps?: number | null;
  /** Network, bits per second into and out of the DC's container (its LAN veth). */
  netBps?: number | null;
}

/** The names a user types (CLI flags, REST fields, `key=value` lists). */
export const LIMIT_KEYS = ['memory', 'cpus', 'pids', 'io-bps', 'net-bps'] as const;
export type LimitKey = (typeof LIMIT_KEYS)[number];

/** What the node can offer; limits beyond it are refused. */
export interface NodeCapacity {
  /** Online CPUs of the node (`os.availableParallelism()`). */
  cpus: number;
  /** Physical memory in bytes (`os.totalmem()`), if known. */
  memoryBytes?: number;
}

/** Smallest accepted memory limit: below this even `sh` cannot start. */
export const MIN_MEMORY_BYTES = 4 * 1024 * 1024;
/** CFS cannot enforce less than 1 ms of quota per 100 ms period. */
export const MIN_CPUS = 0.01;
/** tc cannot shape meaningfully below this. */
export const MIN_NET_BPS = 8_000;
/** Smallest block I/O limit worth setting (the kernel accepts less, but nothing then works). */
export const MIN_IO_BPS = 4096;

const BINARY: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };
const DECIMAL: Record<string, number> = { '': 1, k: 1e3, m: 1e6, g: 1e9, t: 1e12 };
const UNLIMITED = new Set(['0', 'max', 'none', 'unlimited']);

const SIZE_RE = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)$/i;

function parseScaled(key: LimitKey, text: string, units: Record<string, number>, bits: boolean): number {
  const m = SIZE_RE.exec(text);
  const suffix = m?.[2]?.toLowerCase() ?? '';
  const tail = m?.[3]?.toLowerCase() ?? '';
  // "iB" only after a suffix (KiB), a bare "b" means bytes for sizes and bits for net-bps.
  if (m === null || (tail.startsWith('i') && suffix === '') || (bits && tail.startsWith('i'))) {
    throw dvsError(
      'EINVAL',
      `${key}: cannot parse "${text}" (expected a number with an optional ${bits ? 'k/M/G' : 'K/M/G'} suffix, e.g. ${
        bits ? '50M' : '256M'
      })`,
      { key, value: text },
    );
  }
  const n = Number(m[1]) * (units[suffix] ?? 1);
  return Math.round(n);
}

/**
 * Parses one limit as typed. Returns `null` for "no limit" (`0`, `max`, `none`). Throws EINVAL with a
 * message naming the key and the accepted form.
 */
export function parseLimit(key: string, value: string | number): number | null {
  if (!(LIMIT_KEYS as readonly string[]).includes(key)) {
    throw dvsError('EINVAL', `unknown limit "${key}" (known: ${LIMIT_KEYS.join(', ')})`, { key });
  }
  const k = key as LimitKey;
  const text = String(value).trim();
  if (UNLIMITED.has(text.toLowerCase())) return null;
  switch (k) {
    case 'memory':
      return parseScaled(k, text, BINARY, false);
    case 'io-bps':
      return parseScaled(k, text, BINARY, false);
    case 'net-bps':
      return parseScaled(k, text, DECIMAL, true);
    case 'pids': {
      if (!/^\d+$/.test(text))
        throw dvsError('EINVAL', `pids: "${text}" is not a whole number`, { key, value });
      return Number(text);
    }
    case 'cpus': {
      const pct = /^(\d+(?:\.\d+)?)%$/.exec(text);
      if (pct) return Number(pct[1]) / 100;
      if (!/^\d+(?:\.\d+)?$/.test(text)) {
        throw dvsError('EINVAL', `cpus: "${text}" is not a number of CPUs (e.g. 0.5 or 50%)`, { key, value });
      }
      return Number(text);
    }
  }
}

/** Field of {@link DcLimits} for each user-facing key. */
const FIELD: Record<LimitKey, keyof DcLimits> = {
  memory: 'memoryBytes',
  cpus: 'cpus',
  pids: 'pids',
  'io-bps': 'ioBps',
  'net-bps': 'netBps',
};

/**
 * Parses a set of limits (`{memory: '256M', cpus: '0.5'}`, or a `memory=256M,cpus=0.5` string) and
 * validates them against the node. Throws EINVAL on the first bad one.
 * @example parseLimits('memory=256M,cpus=0.5,pids=128', { cpus: 2 }) // {memoryBytes: 268435456, cpus: 0.5, pids: 128}
 */
export function parseLimits(spec: string | Record<string, string | number>, node: NodeCapacity): DcLimits {
  const entries: [string, string | number][] = [];
  if (typeof spec === 'string') {
    for (const part of spec.split(',')) {
      const p = part.trim();
      if (p === '') continue;
      const eq = p.indexOf('=');
      if (eq <= 0) throw dvsError('EINVAL', `limit "${p}" is not key=value`, { value: p });
      entries.push([p.slice(0, eq).trim(), p.slice(eq + 1).trim()]);
    }
  } else {
    entries.push(...Object.entries(spec));
  }
  const out: DcLimits = {};
  for (const [key, value] of entries) {
    const field = FIELD[key as LimitKey];
    const v = parseLimit(key, value);
    if (field === undefined) continue; // parseLimit already refused unknown keys
    out[field] = v;
  }
  validateLimits(out, node);
  return out;
}

/**
 * Checks limits that are already numbers (from the cluster store, the REST API) against the node:
 * finite, positive, within range, a CPU quota no higher than the node's cores. Throws EINVAL.
 */
export function validateLimits(limits: DcLimits, node: NodeCapacity): void {
  const check = (name: LimitKey, v: number | null | undefined, min: number, integer: boolean) => {
    if (v === undefined || v === null) return;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
      throw dvsError('EINVAL', `${name}: ${String(v)} is not a positive number`, { key: name });
    }
    if (integer && !Number.isSafeInteger(v)) {
      throw dvsError('EINVAL', `${name}: ${v} is not a whole number`, { key: name });
    }
    if (v < min) throw dvsError('EINVAL', `${name}: ${v} is below the minimum ${min}`, { key: name, min });
  };
  check('memory', limits.memoryBytes, MIN_MEMORY_BYTES, true);
  check('cpus', limits.cpus, MIN_CPUS, false);
  check('pids', limits.pids, 1, true);
  check('io-bps', limits.ioBps, MIN_IO_BPS, true);
  check('net-bps', limits.netBps, MIN_NET_BPS, true);
  if (limits.cpus != null && limits.cpus > node.cpus) {
    throw dvsError('EINVAL', `cpus: ${limits.cpus} is more than the node's ${node.cpus} CPUs`, {
      key: 'cpus',
      max: node.cpus,
    });
  }
  if (limits.memoryBytes != null && node.memoryBytes !== undefined && limits.memoryBytes > node.memoryBytes) {
    throw dvsError(
      'EINVAL',
      `memory: ${formatBytes(limits.memoryBytes)} is more than the node's ${formatBytes(node.memoryBytes)}`,
      { key: 'memory', max: node.memoryBytes },
    );
  }
}

/** `limits` with `update` applied: absent fields keep their value, `null` removes the limit. */
export function mergeLimits(limits: DcLimits, update: DcLimits): DcLimits {
  const out: DcLimits = { ...limits };
  for (const k of Object.keys(update) as (keyof DcLimits)[]) {
    const v = update[k];
    if (v !== undefined) out[k] = v;
  }
  return out;
}

/** Bytes as the shortest exact binary form (`268435456` -> `256M`). */
export function formatBytes(n: number): string {
  for (const [s, f] of [
    ['T', 1024 ** 4],
    ['G', 1024 ** 3],
    ['M', 1024 ** 2],
    ['K', 1024],
  ] as const) {
    if (n >= f && n % f === 0) return `${n / f}${s}`;
  }
  return String(n);
}

/** Bits per second in decimal units (`50000000` -> `50M`). */
export function formatBits(n: number): string {
  for (const [s, f] of [
    ['G', 1e9],
    ['M', 1e6],
    ['k', 1e3],
  ] as const) {
    if (n >= f && n % f === 0) return `${n / f}${s}`;
  }
  return String(n);
}

/**
 * Limits as the user-facing `key=value` list, parseable again by {@link parseLimits}; set limits only,
 * `key=max` for removed ones.
 */
export function formatLimits(limits: DcLimits): string {
  const parts: string[] = [];
  const put = (key: LimitKey, v: number | null | undefined, fmt: (n: number) => string) => {
    if (v === undefined) return;
    parts.push(`${key}=${v === null ? 'max' : fmt(v)}`);
  };
  put('memory', limits.memoryBytes, formatBytes);
  put('cpus', limits.cpus, (n) => String(n));
  put('pids', limits.pids, (n) => String(n));
  put('io-bps', limits.ioBps, formatBytes);
  put('net-bps', limits.netBps, formatBits);
  return parts.join(',');
}
