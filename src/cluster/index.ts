/**
 * The cluster services over the {@link ClusterStore}: membership, the DC registry, the endpoint directory and
 * queued locks with fencing tokens (docs/cluster.md has the key layout, the recipes, the liveness rule and how the daemon wires them).
 */
export { validateDcConfig, validateDcName } from './dc-config.js';
export { type DcChange, DcRegistry, type DcRegistryOptions, type DcSpec } from './dcs.js';
export {
  type BindInfo,
  type DirChange,
  type DirEntry,
  Directory,
  type DirectoryOptions,
} from './directory.js';
export * as keys from './keys.js';
export {
  type AcquireLockOptions,
  acquireLock,
  checkFence,
  LOCKS_PREFIX,
  type LockHandle,
  lockKey,
  lockPrefix,
} from './lock.js';
export {
  type LinkState,
  Membership,
  type MembershipHealth,
  type MembershipOptions,
  type NodeChange,
  type NodeInfo,
  type NodeState,
} from './membership.js';
export { type MirrorEntry, type MirrorEvent, PrefixMirror, type PrefixMirrorOptions } from './mirror.js';
export type {
  ClusterStore,
  Compare,
  KeyValue,
  StoreCallOptions,
  TxnOp,
  TxnResult,
  Watch,
  WatchEvent,
} from './store.js';
