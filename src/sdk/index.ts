/**
 * dvs SDK: what processes import (`import { connect, ANY, DvsError } from 'dvs'`).
 *
 * @example
 * const dvk = await connect();                        // DVS_SOCKET, DVS_DC, DVS_ENDPOINT from `dvs run`
 * const req = await dvk.receiveRequest();
 * await dvk.reply(req.source, { type: 0, payload: req.payload });
 */
export type { Endpoint, GrantAccess, GrantRef, Message, MsgKind, Received } from '../kernel/types.js';
export { ANY, DEFAULT_MAX_PAYLOAD, NOTIFY_TYPE } from '../kernel/types.js';
export type { AdminMethod, AdminMethods } from '../protocol/admin.js';
export type { ErrorCode, WireError } from '../protocol/errors.js';
export { DvsError, ERROR_CODES } from '../protocol/errors.js';
export { AdminClient } from './admin.js';
export type { CallOptions, ConnectOptions, Grant, OutMessage } from './client.js';
export { connect, Dvk, RECEIVE_AHEAD } from './client.js';
export type { ConnectTimeoutOptions } from './conn.js';
export type { ScalarType, SegmentInfo, SegmentLock, SegmentLockOptions, TypedArrayCtor } from './dsm.js';
export { openSegment, Segment } from './dsm.js';
export type { GroupEvent, GroupView, JoinOptions, Member, MulticastOptions, Order } from './groups.js';
export { Group, joinGroup } from './groups.js';
export type { CachedReply, ReplicaHooks, RequestId, ServeResult } from './replication.js';
export {
  decodeRequest,
  encodeRequest,
  onReplica,
  REQUEST_HEADER_BYTES,
  REQUEST_MAGIC,
  Replica,
  sendrecOnce,
} from './replication.js';
export type {
  CasResult,
  Decision,
  EndpointEvent,
  KvEntry,
  KvEvent,
  KvFence,
  KvWatch,
  KvWriteOptions,
  LeaderState,
  Leadership,
  Lock,
  NodeEvent,
  ServiceCaller,
  Stream,
  StreamOptions,
  WaitOptions,
} from './services.js';
export { KvClient } from './services.js';
export type { SmrRequest, SmrStatus, StateMachineHooks } from './smr.js';
export { onStateMachine, SMR_APPLY_ERROR_TYPE, StateMachine, smrGroupName } from './smr.js';
export type { RestoredState, SnapshotHooks } from './snapshot.js';
export { SNAPSHOT_MARKER_TYPE } from './snapshot.js';
