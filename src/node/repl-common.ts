/**
 * What the two replication modes' daemon sides share (src/node/replication.ts, src/node/smr.ts): the group
 * map key, the `{dc, ep}` lookup of a node RPC's params, the DC peers a change is told to, and the `ep.list`
 * row of a replica this node only knows of.
 */
import type { DcId, Endpoint, EndpointInfo, NodeId } from '../kernel/types.js';
import { dvsError } from '../protocol/errors.js';
import type { ReplicationOptions } from './replication.js';

/** Key of a group in a daemon's map. */
export const groupKey = (dc: DcId, ep: Endpoint): string => `${dc}/${ep}`;

/** The group named by params `{dc, ep}` in `groups` (EINVAL for bad params, ENOENT if not recorded here). */
export function needGroup<T>(groups: ReadonlyMap<string, T>, p: unknown, what: string): T {
  const o = (p ?? {}) as { dc?: unknown; ep?: unknown };
  if (typeof o.dc !== 'number' || typeof o.ep !== 'number') throw dvsError('EINVAL', `${what}: dc, ep`);
  const l = groups.get(groupKey(o.dc, o.ep));
  if (l === undefined) throw dvsError('ENOENT', `endpoint ${o.ep} of DC ${o.dc} is not replicated here`);
  return l;
}

/** The other nodes of DC `dc` whose links are up. */
export function dcPeers(o: Pick<ReplicationOptions, 'kernel' | 'nodeId' | 'linkUp'>, dc: DcId): NodeId[] {
  const cfg = o.kernel.findDc(dc);
  return (cfg?.nodes ?? []).filter((x) => x !== o.nodeId && o.linkUp(x));
}

/** An `ep.list` row for a replica at `node` that this node knows only from the group (no kernel entry). */
export function replicaRow(
  g: { dc: DcId; ep: Endpoint; name: string },
  node: NodeId,
  kind: 'remote' | 'backup' | 'replica',
  flags: string[],
): EndpointInfo {
  return {
    dc: g.dc,
    ep: g.ep,
    name: g.name,
    node,
    pid: -1,
    kind,
    flags,
    sendTo: null,
    getFrom: null,
    queued: 0,
    pendingNotify: 0,
    counters: { lclSent: 0, rmtSent: 0, received: 0, notifies: 0, copyBytes: 0 },
  };
}

/** What every replica group carries, whatever its mode: where it is and how to start a replica. */
export interface GroupBase {
  dc: DcId;
  ep: Endpoint;
  dcName: string;
  name: string;
  cmd: string[];
  /** The user's environment (without DVS_*), given to every replica. */
  env: Record<string, string>;
  cwd?: string;
}

/**
 * The {@link GroupBase} fields of a group received from another daemon, checked (EINVAL `what` when
 * malformed), with `extra` (the mode's own checks) having to hold too.
 */
export function groupBaseParam(
  v: unknown,
  what: string,
  extra: (g: Record<string, unknown>) => boolean,
): GroupBase {
  const g = (v ?? {}) as Record<string, unknown>;
  if (
    typeof g.dc !== 'number' ||
    typeof g.ep !== 'number' ||
    typeof g.dcName !== 'string' ||
    typeof g.name !== 'string' ||
    !Array.isArray(g.cmd) ||
    !g.cmd.every((a) => typeof a === 'string') ||
    !extra(g)
  ) {
    throw dvsError('EINVAL', `malformed ${what}`);
  }
  return {
    dc: g.dc,
    ep: g.ep,
    dcName: g.dcName,
    name: g.name,
    cmd: g.cmd as string[],
    env: typeof g.env === 'object' && g.env !== null ? (g.env as Record<string, string>) : {},
    ...(typeof g.cwd === 'string' ? { cwd: g.cwd } : {}),
  };
}

/** A list of node ids. */
export const isNodeList = (xs: unknown): xs is NodeId[] =>
  Array.isArray(xs) && xs.every((x) => Number.isInteger(x));
