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
