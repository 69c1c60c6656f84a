/**
 * Shapes of the API answers the dashboard reads. They are the server's own types (type-only imports: nothing
 * of src/ is bundled), so a change to an answer is a type error here rather than a blank cell in the browser.
 */
import type { AdminMethods } from '../../src/protocol/admin.js';

export type {
  ClusterView,
  DcRow,
  GroupRowView as GroupRow,
  NodeRow,
  PerNodeView,
} from '../../src/node/views.js';
export type {
  DcIsolationInfo,
  DcStatsInfo,
  LinkInfo,
  MigrationResult,
  NodeEvent,
  NodeLoad,
  ProcessInfo,
} from '../../src/protocol/admin.js';

/** A row of a DC's endpoint table (`ep.list`): replicated endpoints carry their role. */
export type EndpointInfo = AdminMethods['ep.list']['result'][number];
