/**
 * How a node certificate names its node: the subject CN is `node-<id>` (decimal, no leading zeros, 0..65535).
 * The link layer compares it with the node id of the peer's HELLO, so a certificate issued to node 2 cannot
 * be used to speak as node 3. Pure: no I/O, no crypto.
 */
import type { NodeId } from '../kernel/types.js';
import { DvsError } from '../protocol/errors.js';

/** The subject CN of node `id`'s certificate. Throws EINVAL for a bad id. */
export function nodeCommonName(id: NodeId): string {
  if (!Number.isInteger(id) || id < 0 || id > 0xffff) throw new DvsError('EINVAL', `bad node id ${id}`);
  return `node-${id}`;
}

/** The node id named by a certificate CN, or null if `cn` is not exactly `node-<id>` with 0 <= id <= 65535. */
export function parseNodeCommonName(cn: string | undefined): NodeId | null {
  if (cn === undefined) return null;
  const m = /^node-(0|[1-9][0-9]{0,4})$/.exec(cn);
  if (!m) return null;
  const id = Number(m[1]);
  return id <= 0xffff ? id : null;
}

/**
 * The CN of a subject in node:crypto's text form (`X509Certificate.subject`: `CN=node-1\nO=dvs`), or
 * undefined. A subject with several CNs is rejected (undefined): which one counts would be ambiguous.
 */
export function commonNameOf(subject: string): string | undefined {
  const cns = subject
    .split('\n')
    .filter((l) => l.startsWith('CN='))
    .map((l) => l.slice(3));
  return cns.length === 1 ? cns[0] : undefined;
}
