/** Distributed shared memory (docs/dsm.md): the per-node protocol engine and its limits. */
export { abortError, Mutex } from './mutex.js';
export {
  type AccessOptions,
  checkRange,
  DSM_MAX_ACCESS_BYTES,
  DSM_MAX_LOCK_WAIT_MS,
  DSM_MAX_SEGMENT_BYTES,
  DSM_MAX_SEGMENTS,
  DSM_PAGE_SIZE,
  DsmNode,
  type DsmNodeOptions,
  type DsmTransport,
  homeOf,
  type SegmentInfo,
  type SegmentStat,
  validateSegmentName,
} from './node.js';
