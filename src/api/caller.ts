/**
 * What the REST API is built on: the admin methods of src/protocol/admin.ts, called through
 * {@link AdminCaller}. The daemon hands the API its own admin dispatcher (the very code the CLI reaches over
 * the Unix socket), so the API and the CLI share one implementation of every operation.
 *
 * Cluster-wide views (every node's DCs, endpoints and processes) need the other nodes too. The API reaches
 * them through {@link ApiNodes.peer}: in a daemon, the admin method `node.call`, which relays the call to
 * the peer's daemon over the node link (src/node/node-rpc.ts), so any node's API answers for the cluster.
 */
import type { NodeId } from '../kernel/types.js';
import type { AdminMethod, AdminMethods } from '../protocol/admin.js';

/** Calls one node's admin methods. Errors are DvsError with the daemon's code. */
export interface AdminCaller {
  call<M extends AdminMethod>(
    method: M,
    params: AdminMethods[M]['params'],
    signal: AbortSignal,
  ): Promise<AdminMethods[M]['result']>;
}

/** The nodes an API server can ask: itself, and the peers it knows how to reach. */
export interface ApiNodes {
  /** This node's id. */
  readonly self: NodeId;
  /** This node's admin dispatcher. */
  readonly local: AdminCaller;
  /** A caller for node `id` (the local one for `self`); undefined if this node cannot reach its admin. */
  peer(id: NodeId): AdminCaller | undefined;
  /** Ids of the peers {@link peer} can reach (without self). */
  peerIds(): NodeId[];
}

/** ApiNodes over a fixed map of peer callers. */
export function apiNodes(
  self: NodeId,
  local: AdminCaller,
  peers: ReadonlyMap<NodeId, AdminCaller> = new Map(),
) {
  return {
    self,
    local,
    peer: (id: NodeId) => (id === self ? local : peers.get(id)),
    peerIds: () => [...peers.keys()].filter((id) => id !== self).sort((a, b) => a - b),
  } satisfies ApiNodes;
}
