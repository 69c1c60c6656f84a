/**
 * Pure helpers for the DC LAN and for naming: IPv4 prefixes, overlap checks, address allocation,
 * deterministic MACs, and the short per-node names of every kernel object the isolation layer creates.
 *
 * Names carry a per-node prefix so a restarted daemon can list what its predecessor left (`sweep`/`adopt`)
 * and so several daemons on one machine (tests) never collide. Interface names are limited to 15
 * characters by the kernel (containers.md P6), hence the short forms:
 * ```
 *   <prefix>b<dc>   bridge of the DC LAN              (node netns)
 *   <prefix>x<dc>   VXLAN device, VNI = dc            (node netns)
 *   <prefix>v<dc>   host side of the container veth   (node netns; `eth0` inside the container)
 *   <prefix>i<dc>   IFB shaping the container's egress (node netns)
 *   <prefix>c<dc>   container network namespace       (/run/netns, global: hence the prefix)
 *   <prefix>c<dc>   cgroup (under the driver's parent `dvs`)
 * ```
 * A prefix is 2-5 characters `[a-z0-9]`, starting with a letter; DC ids up to 16777215 (the VNI range) fit.
 */
import { dvsError } from '../protocol/errors.js';

/** An IPv4 prefix: network address (as a 32-bit unsigned number) and length. */
export interface Ipv4Prefix {
  network: number;
  length: number;
}

/** Largest VNI, hence the largest DC id that can have a LAN. */
export const MAX_VNI = 16_777_215;

const PREFIX_RE = /^[a-z][a-z0-9]{1,4}$/;

/** Throws EINVAL unless `prefix` is a valid per-node name prefix. */
export function checkNamePrefix(prefix: string): void {
  if (!PREFIX_RE.test(prefix)) {
    throw dvsError(
      'EINVAL',
      `name prefix "${prefix}" must be 2-5 characters [a-z0-9] starting with a letter`,
      {
        prefix,
      },
    );
  }
}

function checkDc(dc: number): void {
  if (!Number.isSafeInteger(dc) || dc < 1 || dc > MAX_VNI) {
    throw dvsError('EINVAL', `DC id ${dc} is outside 1..${MAX_VNI}`, { dc });
  }
}

/** Names of the kernel objects of DC `dc` on the node with name prefix `prefix`. */
export interface DcNames {
  bridge: string;
  vxlan: string;
  veth: string;
  ifb: string;
  netns: string;
  cgroup: string;
}

/** The names of every object of one DC on one node. */
export function dcNames(prefix: string, dc: number): DcNames {
  checkNamePrefix(prefix);
  checkDc(dc);
  return {
    bridge: `${prefix}b${dc}`,
    vxlan: `${prefix}x${dc}`,
    veth: `${prefix}v${dc}`,
    ifb: `${prefix}i${dc}`,
    netns: `${prefix}c${dc}`,
    cgroup: `${prefix}c${dc}`,
  };
}

/**
 * The DC id a name of ours stands for, or undefined if the name is not ours (other prefix, other kind).
 * `kind` is the letter after the prefix (b, x, v, i, c).
 */
export function dcOfName(
  prefix: string,
  kind: 'b' | 'x' | 'v' | 'i' | 'c',
  name: string,
): number | undefined {
  const head = prefix + kind;
  if (!name.startsWith(head)) return undefined;
  const rest = name.slice(head.length);
  if (!/^[1-9]\d{0,7}$/.test(rest)) return undefined;
  const dc = Number(rest);
  return dc <= MAX_VNI ? dc : undefined;
}

/** Dotted quad of a 32-bit unsigned address. */
export function formatIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** Parses a dotted quad; EINVAL otherwise. */
export function parseIpv4(text: string): number {
  const parts = text.split('.');
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) {
    throw dvsError('EINVAL', `"${text}" is not an IPv4 address`, { value: text });
  }
  return parts.reduce((acc, p) => acc * 256 + Number(p), 0);
}

function mask(length: number): number {
  return length === 0 ? 0 : (0xffffffff << (32 - length)) >>> 0;
}

/**
 * Parses `a.b.c.d/len`. With `strict` (the default) host bits must be zero, so `172.31.5.1/24` is refused
 * as a DC LAN (a likely typo); with `strict: false` they are cleared (host interface addresses).
 */
export function parsePrefix(text: string, opts: { strict?: boolean } = {}): Ipv4Prefix {
  const m = /^([\d.]+)\/(\d{1,2})$/.exec(text.trim());
  const length = m ? Number(m[2]) : Number.NaN;
  if (m === null || length > 32) {
    throw dvsError('EINVAL', `"${text}" is not an IPv4 prefix like 172.31.5.0/24`, { value: text });
  }
  const addr = parseIpv4(m[1] ?? '');
  const network = (addr & mask(length)) >>> 0;
  if ((opts.strict ?? true) && network !== addr) {
    throw dvsError('EINVAL', `"${text}" has host bits set (did you mean ${formatIpv4(network)}/${length}?)`, {
      value: text,
    });
  }
  return { network, length };
}

/** `a.b.c.d/len`. */
export function formatPrefix(p: Ipv4Prefix): string {
  return `${formatIpv4(p.network)}/${p.length}`;
}

/** Whether two prefixes share any address. */
export function prefixesOverlap(a: Ipv4Prefix, b: Ipv4Prefix): boolean {
  const len = Math.min(a.length, b.length);
  return (a.network & mask(len)) >>> 0 === (b.network & mask(len)) >>> 0;
}

/** Whether `addr` lies in `p`. */
export function prefixContains(p: Ipv4Prefix, addr: number): boolean {
  return (addr & mask(p.length)) >>> 0 === p.network;
}

/**
 * Validates a DC LAN prefix before anything is created: well-formed, between /8 and /30 (room for at least
 * two containers), not overlapping another DC's LAN on this cluster nor a network of the host (the
 * underlay: a container must never shadow the node's own routes). Throws EINVAL naming the conflict.
 * @param others other DCs' prefixes, by DC name (for the message)
 * @param hostNets the node's interface prefixes (`lan.hostPrefixes()`), non-strict form allowed
 */
export function validateLanPrefix(
  text: string,
  others: Readonly<Record<string, string>> = {},
  hostNets: readonly string[] = [],
): Ipv4Prefix {
  const p = parsePrefix(text);
  if (p.length < 8 || p.length > 30) {
    throw dvsError('EINVAL', `LAN prefix ${text}: length must be between /8 and /30`, { value: text });
  }
  const first = p.network >>> 24;
  if (first === 0 || first === 127 || first >= 224) {
    throw dvsError('EINVAL', `LAN prefix ${text} is not a usable unicast range`, { value: text });
  }
  for (const [name, other] of Object.entries(others)) {
    if (prefixesOverlap(p, parsePrefix(other, { strict: false }))) {
      throw dvsError('EINVAL', `LAN prefix ${text} overlaps ${other} of DC ${name}`, {
        value: text,
        dc: name,
      });
    }
  }
  for (const net of hostNets) {
    if (prefixesOverlap(p, parsePrefix(net, { strict: false }))) {
      throw dvsError('EINVAL', `LAN prefix ${text} overlaps the host network ${net}`, {
        value: text,
        host: net,
      });
    }
  }
  return p;
}

/**
 * The lowest free host address of `prefix` (network and broadcast excluded), given the ones in use
 * (dotted quads; ones outside the prefix are ignored). Throws ENOSPC when the prefix is full.
 * @example nextFreeAddress('172.31.5.0/24', ['172.31.5.1']) // '172.31.5.2'
 */
export function nextFreeAddress(prefix: string, used: Iterable<string>): string {
  const p = parsePrefix(prefix);
  const taken = new Set<number>();
  for (const u of used) taken.add(parseIpv4(u));
  const size = 2 ** (32 - p.length);
  const [lo, hi] = size <= 2 ? [0, size - 1] : [1, size - 2];
  for (let i = lo; i <= hi; i++) {
    const a = p.network + i;
    if (!taken.has(a)) return formatIpv4(a);
  }
  throw dvsError('ENOSPC', `LAN prefix ${prefix} has no free address left`, { prefix });
}

/**
 * The MAC of DC `dc`'s container on node `node`: locally administered, unicast, unique per (dc, node), so
 * the daemon can push static FDB entries without learning (containers.md 4.3).
 * Layout: `02:<dc 24 bits>:<node 16 bits>`.
 */
export function containerMac(dc: number, node: number): string {
  checkDc(dc);
  if (!Number.isSafeInteger(node) || node < 0 || node > 0xffff) {
    throw dvsError('EINVAL', `node id ${node} is outside 0..65535`, { node });
  }
  const bytes = [0x02, (dc >>> 16) & 255, (dc >>> 8) & 255, dc & 255, node >>> 8, node & 255];
  return bytes.map((b) => b.toString(16).padStart(2, '0')).join(':');
}
