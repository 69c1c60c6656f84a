/**
 * Pure helpers of the `dvs` CLI: argument parsers (they throw commander's InvalidArgumentError, which the
 * CLI reports as a usage error), the cluster directory lookup and exit-code mapping. No I/O here, so every
 * rule is unit tested.
 */
import { constants as osConstants } from 'node:os';
import { join } from 'node:path';
import { InvalidArgumentError } from '@commander-js/extra-typings';
import type { NodeId } from '../kernel/types.js';
import { parseStoreSpec } from '../node/store-spec.js';
import type { PeerConfig } from '../protocol/admin.js';
import { DvsError } from '../protocol/errors.js';

/** A parser for an integer option within [min, max]. */
export function intArg(min: number, max: number): (value: string) => number {
  return (value: string) => {
    const s = value.trim();
    if (!/^-?\d+$/.test(s)) throw new InvalidArgumentError(`expected an integer, got '${value}'.`);
    const n = Number(s);
    if (!Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`expected an integer from ${min} to ${max}, got ${s}.`);
    }
    return n;
  };
}

/** `--store`: embedded, embedded:<node id> or etcd://host:port[,...]; returned as given. */
export function storeArg(value: string): string {
  try {
    parseStoreSpec(value);
  } catch (e) {
    throw new InvalidArgumentError(e instanceof DvsError ? `${e.message}.` : String(e));
  }
  return value;
}

/** Node ids: 0..65535. */
export const nodeIdArg = intArg(0, 65535);
/** DC ids: 1..65535 (0 is never a DC). */
export const dcIdArg = intArg(1, 65535);
/** TCP ports, 1..65535 (0 = any is not useful on a command line). */
export const portArg = intArg(1, 65535);

/**
 * A node list: `0,1,2`, ranges `0-2`, or a mix `0-2,5`. Returns sorted unique ids.
 * @example parseNodeList('2,0-1') // [0, 1, 2]
 */
export function parseNodeList(value: string): NodeId[] {
  const ids = new Set<NodeId>();
  for (const part of value.split(',')) {
    const p = part.trim();
    if (p === '') throw new InvalidArgumentError(`empty item in node list '${value}'.`);
    const range = /^(\d+)\s*-\s*(\d+)$/.exec(p);
    if (range) {
      const a = nodeIdArg(range[1]!);
      const b = nodeIdArg(range[2]!);
      if (a > b) throw new InvalidArgumentError(`bad range '${p}': ${a} > ${b}.`);
      for (let i = a; i <= b; i++) ids.add(i);
    } else {
      ids.add(nodeIdArg(p));
    }
  }
  return [...ids].sort((a, b) => a - b);
}

/** `host:port` (IPv6 as `[::1]:7000`). */
export interface HostPort {
  host: string;
  port: number;
}

/** Parses `host:port`; the port may be 0 (any) here because daemons accept it for --listen. */
export function parseHostPort(value: string): HostPort {
  const m = /^(?:\[([^\]]+)\]|([^:[\]\s]+)):(\d+)$/.exec(value.trim());
  if (!m) throw new InvalidArgumentError(`expected HOST:PORT, got '${value}'.`);
  const host = (m[1] ?? m[2])!;
  const port = Number(m[3]);
  if (port > 65535) throw new InvalidArgumentError(`port out of range in '${value}'.`);
  return { host, port };
}

/** Formats a {@link HostPort} back (brackets for IPv6). */
export function formatHostPort(hp: HostPort): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

/**
 * `--peers 0=127.0.0.1:7000,1=127.0.0.1:7001` (an optional name: `0=alpha@127.0.0.1:7000`).
 * Peer names default to `node<id>`. Duplicate ids are refused.
 */
export function parsePeers(value: string): PeerConfig[] {
  const peers: PeerConfig[] = [];
  const seen = new Set<NodeId>();
  if (value.trim() === '') return peers;
  for (const part of value.split(',')) {
    const m = /^\s*(\d+)\s*=\s*(?:([A-Za-z0-9_.-]+)@)?(\S+)\s*$/.exec(part);
    if (!m) throw new InvalidArgumentError(`expected ID=HOST:PORT, got '${part}'.`);
    const id = nodeIdArg(m[1]!);
    if (seen.has(id)) throw new InvalidArgumentError(`node ${id} listed twice in --peers.`);
    seen.add(id);
    const address = formatHostPort(parseHostPort(m[3]!));
    peers.push({ id, name: m[2] ?? `node${id}`, address });
  }
  return peers;
}

/** DC names: a letter, then letters, digits, `_`, `.` or `-`; at most 32 characters. */
export function dcNameArg(value: string): string {
  if (!/^[A-Za-z][A-Za-z0-9_.-]{0,31}$/.test(value)) {
    throw new InvalidArgumentError(
      `'${value}' is not a valid DC name (a letter, then up to 31 letters, digits, '_', '.' or '-').`,
    );
  }
  return value;
}

/** A DC on the command line: its name, or its numeric id. */
export function dcRefArg(value: string): string | number {
  if (/^\d+$/.test(value)) return dcIdArg(value);
  return dcNameArg(value);
}

/** Signal by name (`SIGTERM`, `TERM`, case-insensitive) or number (`9`). Returns the canonical name. */
export function signalArg(value: string): NodeJS.Signals {
  const v = value.trim().toUpperCase();
  const signals = osConstants.signals as Record<string, number>;
  if (/^\d+$/.test(v)) {
    const n = Number(v);
    const name = Object.keys(signals).find((k) => signals[k] === n);
    if (name === undefined) throw new InvalidArgumentError(`unknown signal number ${v}.`);
    return name as NodeJS.Signals;
  }
  const name = v.startsWith('SIG') ? v : `SIG${v}`;
  if (!Object.hasOwn(signals, name)) throw new InvalidArgumentError(`unknown signal '${value}'.`);
  return name as NodeJS.Signals;
}

/** pino levels accepted by `--log-level`. */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

export function logLevelArg(value: string): string {
  if (!(LOG_LEVELS as readonly string[]).includes(value)) {
    throw new InvalidArgumentError(`expected one of ${LOG_LEVELS.join(', ')}.`);
  }
  return value;
}

/**
 * The local cluster's state directory: `--dir`, else `$DVS_HOME`, else `${XDG_STATE_HOME:-$HOME/.local/state}/dvs`.
 */
export function resolveClusterDir(dir: string | undefined, env: NodeJS.ProcessEnv, cwd: string): string {
  const pick = (p: string) => (p.startsWith('/') ? p : join(cwd, p));
  if (dir !== undefined && dir !== '') return pick(dir);
  if (env.DVS_HOME) return pick(env.DVS_HOME);
  const state = env.XDG_STATE_HOME || join(env.HOME || '/tmp', '.local', 'state');
  return join(pick(state), 'dvs');
}

/** Shell-style exit code of a process: its code, or 128 + the signal number if killed. */
export function exitCodeOf(exit: { code: number | null; signal: string | null } | null): number {
  if (exit === null) return 1;
  if (exit.code !== null) return exit.code;
  const n = exit.signal === null ? undefined : (osConstants.signals as Record<string, number>)[exit.signal];
  return n === undefined ? 1 : 128 + n;
}

/** Human duration: `950ms`, `12.3s`, `4m05s`, `2h03m`, `3d04h`. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))}ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)}s`;
  const pad = (n: number) => String(n).padStart(2, '0');
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${pad(Math.floor(s % 60))}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h${pad(m % 60)}m`;
  return `${Math.floor(h / 24)}d${pad(h % 24)}h`;
}
