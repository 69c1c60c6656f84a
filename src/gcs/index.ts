/**
 * Group communication (DESIGN.md §6, docs/gcs.md): groups per DC with membership views and fifo / causal /
 * agreed / safe delivery under extended virtual synchrony, as a pure state machine per node.
 * `new GcsNode({ nodeId, io })`, then feed it events through {@link GcsApi}.
 */
export { parseFrame } from './frames.js';
export { buildInstall } from './membership.js';
export {
  DEFAULT_GCS_MAX_PAYLOAD,
  DEFAULT_MAX_BACKLOG,
  DEFAULT_MAX_PENDING,
  GcsNode,
  type GcsNodeOptions,
  type GcsStats,
} from './node.js';
export * from './types.js';
