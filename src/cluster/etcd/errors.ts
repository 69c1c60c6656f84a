/**
 * How the wrapper reads a failure of the `etcd3` client: whether the request can have reached etcd (and so
 * may have been applied), and which stable DvsError code a final failure becomes.
 *
 * The client turns gRPC errors into classes (GRPCUnavailableError, GRPCDeadlineExceededError, EtcdError...)
 * and keeps the server's text (`14 UNAVAILABLE: ...`, `etcdserver: ...`) in the message, so the
 * classification reads both. Anything not recognised is treated as "may have been applied": a write is then
 * reported ambiguous, never retried.
 */
import { DvsError, type ErrorCode } from '../../protocol/errors.js';

/**
 * - `notSent`: the request certainly did not take effect (no connection to that member, or etcd refused it
 *   before proposing it): safe to retry, on any member.
 * - `transient`: the connection or the leader was lost while the request was out; it may or may not have been
 *   applied. Reads and idempotent calls retry; writes are reported ambiguous.
 * - `timeout`: the gRPC deadline passed; same uncertainty as `transient`.
 * - `final`: etcd answered with an error that retrying will not change.
 */
export type FailureKind = 'notSent' | 'transient' | 'timeout' | 'final';

/** A classified client failure. `code` is meaningful for `final`. */
export interface Failure {
  kind: FailureKind;
  code: ErrorCode;
  message: string;
}

/** Server texts of errors that etcd returns before a request is proposed to raft. */
const NOT_SENT = [
  'etcdserver: too many requests',
  'etcdserver: not capable',
  'No connection established',
  'ECONNREFUSED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'Name resolution failed',
  'failed to connect',
];

/** Server texts of errors that mean "try again, the outcome is unknown" (leader loss, stopping member). */
const TRANSIENT = [
  'etcdserver: no leader',
  'etcdserver: request timed out',
  'etcdserver: leader changed',
  'etcdserver: server stopped',
  'etcdserver: request cancelled',
  'etcdserver: unhealthy cluster',
  'etcdserver: raft: stopped',
];

/** Server texts with a stable meaning of their own. */
const FINAL: [string, ErrorCode][] = [
  ['etcdserver: requested lease not found', 'ENOENT'],
  ['etcdserver: lease already exists', 'EEXIST'],
  ['etcdserver: duplicate key given in txn request', 'EINVAL'],
  ['etcdserver: too many operations in txn request', 'EINVAL'],
  ['etcdserver: key is not provided', 'EINVAL'],
  ['etcdserver: request is too large', 'EMSGSIZE'],
  ['etcdserver: mvcc: database space exceeded', 'ENOSPC'],
  ['etcdserver: permission denied', 'EPERM'],
  ['etcdserver: user name is empty', 'EPERM'],
  ['etcdserver: invalid auth token', 'EPERM'],
  ['etcdserver: authentication failed', 'EPERM'],
  ['etcdserver: mvcc: required revision has been compacted', 'ENOENT'],
  ['etcdserver: mvcc: required revision is a future revision', 'EINVAL'],
];

/** Classify an error thrown by the etcd3 client. */
export function classify(err: unknown): Failure {
  const e = err instanceof Error ? err : new Error(String(err));
  const name = e.constructor.name;
  const message = e.message;
  for (const [text, code] of FINAL) {
    if (message.includes(text)) return { kind: 'final', code, message };
  }
  if (NOT_SENT.some((t) => message.includes(t))) return { kind: 'notSent', code: 'ENOTCONN', message };
  if (TRANSIENT.some((t) => message.includes(t))) return { kind: 'transient', code: 'ENOTCONN', message };
  switch (name) {
    case 'GRPCDeadlineExceededError':
      return { kind: 'timeout', code: 'ETIMEDOUT', message };
    case 'GRPCResourceExhastedError':
      // etcd's "too many requests" comes with this status; a resource limit of the channel as well.
      return { kind: 'notSent', code: 'ENOSPC', message };
    case 'GRPCUnavailableError':
    case 'GRPCCancelledError':
    case 'GRPCAbortedError':
    case 'GRPCInternalError':
    case 'GRPCUnknownError':
      return { kind: 'transient', code: 'ENOTCONN', message };
    case 'ClientClosedError':
      return { kind: 'final', code: 'ENOTCONN', message };
    case 'GRPCInvalidArgumentError':
    case 'GRPCOutOfRangeError':
    case 'GRPCFailedPreconditionError':
      return { kind: 'final', code: 'EINVAL', message };
    case 'EtcdPermissionDeniedError':
    case 'GRPCUnauthenticatedError':
    case 'EtcdAuthenticationFailedError':
    case 'EtcdInvalidAuthTokenError':
      return { kind: 'final', code: 'EPERM', message };
    case 'EtcdLeaseInvalidError':
      return { kind: 'final', code: 'ENOENT', message };
    case 'GRPCNotImplementedError':
      return { kind: 'final', code: 'ENOTSUP', message };
    default:
      // Unknown: assume it may have been applied (the safe reading for writes).
      return { kind: 'transient', code: 'EINTERNAL', message };
  }
}

/** The DvsError a final failure becomes; `cause` keeps the client's error for logs. */
export function toDvsError(
  op: string,
  f: Failure,
  cause: unknown,
  details?: Record<string, unknown>,
): DvsError {
  return new DvsError(f.code, `etcd ${op}: ${f.message}`, { op, ...details }, { cause });
}
