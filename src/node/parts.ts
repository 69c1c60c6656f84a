/**
 * What the daemon's cluster-wide features (migration, replication, snapshots) share from the daemon: one
 * interface, built once by the daemon and handed to each of them.
 */
import type { Logger } from 'pino';
import type { Kernel } from '../kernel/kernel.js';
import type { NodeId } from '../kernel/types.js';
import type { ClusterWiring } from './cluster.js';
import type { EventLog } from './events.js';
import type { NodeRpc } from './node-rpc.js';
import type { ProcessManager } from './processes.js';

export interface DaemonParts {
  nodeId: NodeId;
  kernel: Kernel;
  /** Calls to other daemons over the node links. */
  nodeRpc: NodeRpc;
  processes: ProcessManager;
  /** The cluster store wiring, if the node runs with one. */
  cluster: () => ClusterWiring | undefined;
  events: EventLog;
  logger: Logger;
}
