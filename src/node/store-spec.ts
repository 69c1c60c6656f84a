/**
 * The `--store` option of a node daemon, parsed. Kept apart from ./cluster.ts so the CLI can validate the
 * option without loading the store backends.
 */
import { parseEtcdUrl } from '../cluster/etcd/url.js';
import type { NodeId } from '../kernel/types.js';
import { dvsError } from '../protocol/errors.js';

/** A parsed `--store` value. */
export type StoreSpec =
  | { kind: 'embedded' }
  | { kind: 'remote'; host: NodeId }
  | { kind: 'etcd'; endpoints: string[] };

/** Parse `embedded`, `embedded:<nodeId>` or `etcd://h1:2379,...` (EINVAL naming the value otherwise). */
export function parseStoreSpec(s: string): StoreSpec {
  if (s === 'embedded') return { kind: 'embedded' };
  const m = /^embedded:(\d{1,5})$/.exec(s);
  if (m) {
    const host = Number(m[1]);
    if (host > 0xffff) throw dvsError('EINVAL', `--store ${s}: node id above 65535`);
    return { kind: 'remote', host };
  }
  if (s.startsWith('etcd://')) return { kind: 'etcd', endpoints: parseEtcdUrl(s) };
  throw dvsError(
    'EINVAL',
    `--store must be embedded, embedded:<node id> or etcd://host:port[,...] (got '${s}')`,
  );
}

/** `host:port` with the host lower-cased and IPv6 brackets dropped, so equal addresses compare equal. */
function normalizeAddress(a: string): string {
  const s = a.trim();
  const i = s.lastIndexOf(':');
  if (i < 0) return s.toLowerCase();
  return `${s
    .slice(0, i)
    .replace(/^\[(.*)\]$/, '$1')
    .toLowerCase()}:${s.slice(i + 1)}`;
}

/**
 * The `--store` value for `--store embedded --seed HOST:PORT`: the seed is the node-link address of the
 * node hosting the embedded store, mapped to `embedded:<its id>` through the peer list (the store is
 * reached over that node's link, so it must be a peer anyway). EINVAL naming the known addresses if no
 * peer has it, or if it is this node's own address (then this node hosts the store: plain `embedded`).
 *
 * @example storeFromSeed('10.0.0.1:7000', [{ id: 0, address: '10.0.0.1:7000' }], 2) // 'embedded:0'
 */
export function storeFromSeed(
  seed: string,
  peers: readonly { id: NodeId; address: string }[],
  self: NodeId,
  listen?: string,
): string {
  const want = normalizeAddress(seed);
  const hosts = peers.filter((p) => normalizeAddress(p.address) === want);
  if (hosts.some((p) => p.id === self) || (listen !== undefined && normalizeAddress(listen) === want)) {
    throw dvsError(
      'EINVAL',
      `--seed ${seed} is this node's own address: this node hosts the store, use --store embedded without --seed`,
    );
  }
  const host = hosts[0];
  if (host === undefined) {
    const known = peers.map((p) => `${p.id}=${p.address}`).join(',') || 'none';
    throw dvsError('EINVAL', `--seed ${seed}: no peer has this address (--peers: ${known})`);
  }
  if (hosts.length > 1) {
    throw dvsError(
      'EINVAL',
      `--seed ${seed}: several peers have this address (${hosts.map((p) => p.id).join(',')})`,
    );
  }
  return `embedded:${host.id}`;
}
