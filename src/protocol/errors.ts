/**
 * Typed, serializable errors with stable codes.
 *
 * Every failure that crosses a process or node boundary is a {@link DvsError}. Its `code` is a stable string
 * (part of the public contract: scripts and SDK users switch on it); on the binary wire it travels as the
 * small integer from {@link ERROR_NUMBERS}, so the SDK rethrows exactly the code the daemon produced.
 * Numbers are append-only: never renumber or reuse one.
 */

/** Stable error codes. Each has a one-line meaning. */
export const ERROR_CODES = {
  /** The call did not complete before its timeout. */
  ETIMEDOUT: 'timed out',
  /** The destination endpoint died (its process exited or was unbound) before taking the message. */
  EDSTDIED: 'destination died',
  /** The source endpoint we were receiving from (or waiting on for a reply) died. */
  ESRCDIED: 'source died',
  /** No endpoint is bound at that number in this DC. */
  ENOTBOUND: 'endpoint not bound',
  /** The node holding the peer is unreachable (link down and declared dead), or the daemon is gone. */
  ENOTCONN: 'not connected',
  /** Not allowed: another DC's endpoint, a privileged call from a user endpoint, a frame failing checks. */
  EPERM: 'permission denied',
  /** The message payload is larger than the DC's limit. */
  EMSGSIZE: 'message too big',
  /** The send would close a cycle of blocked senders. */
  EDEADLK: 'deadlock: send cycle',
  /** The endpoint is busy (migrating, already blocked in a call, copy in progress). */
  EBUSY: 'busy',
  /** The call was cancelled by its AbortSignal. */
  EABORTED: 'aborted',
  /** receive(ANY) was woken by wakeup(). */
  EWOKENUP: 'woken up',
  /** The endpoint number is already bound in this DC. */
  EBOUND: 'endpoint already bound',
  /** reply() to an endpoint that is not waiting for a reply from the caller. */
  ENOTWAITING: 'peer is not waiting for a reply',
  /** An argument is out of range or malformed. */
  EINVAL: 'invalid argument',
  /** No such DC, node, grant or other named object. */
  ENOENT: 'no such object',
  /** The object already exists (DC name or id taken). */
  EEXIST: 'already exists',
  /** A grant does not allow the access, or the range is outside it. */
  EFAULT: 'bad grant access or range',
  /** A malformed frame or an out-of-order protocol step. */
  EPROTO: 'protocol error',
  /** A resource limit was reached (queues, grants, endpoints). */
  ENOSPC: 'no space',
  /** The endpoint moved to another node; the frame carries the new location. */
  EMOVED: 'endpoint moved',
  /** The operation is not supported by this build or configuration. */
  ENOTSUP: 'not supported',
  /** The daemon failed internally; this is a bug. */
  EINTERNAL: 'internal error',
  /** A fencing token, revision or view id is older than the current one. */
  ESTALE: 'stale token or revision',
  /** Releasing or using something (a lock, a lease) the caller does not hold. */
  ENOTOWNER: 'not held by caller',
  /** The service cannot answer now (cluster store unreachable, minority side of a partition). */
  EUNAVAIL: 'service unavailable',
  /** The caller was expelled from a group (it stopped reading, or its view was left behind). */
  EEXPELLED: 'expelled from group',
  /** Missing, wrong or expired credentials (API token, node certificate). */
  EAUTH: 'authentication failed',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

/** Wire numbers of the error codes (u16 on the binary wire). 0 means success. Append-only. */
export const ERROR_NUMBERS: Readonly<Record<ErrorCode, number>> = {
  ETIMEDOUT: 1,
  EDSTDIED: 2,
  ESRCDIED: 3,
  ENOTBOUND: 4,
  ENOTCONN: 5,
  EPERM: 6,
  EMSGSIZE: 7,
  EDEADLK: 8,
  EBUSY: 9,
  EABORTED: 10,
  EWOKENUP: 11,
  EBOUND: 12,
  ENOTWAITING: 13,
  EINVAL: 14,
  ENOENT: 15,
  EEXIST: 16,
  EFAULT: 17,
  EPROTO: 18,
  ENOSPC: 19,
  EMOVED: 20,
  ENOTSUP: 21,
  EINTERNAL: 22,
  ESTALE: 23,
  ENOTOWNER: 24,
  EUNAVAIL: 25,
  EEXPELLED: 26,
  EAUTH: 27,
};

const CODE_BY_NUMBER: ReadonlyMap<number, ErrorCode> = new Map(
  (Object.entries(ERROR_NUMBERS) as [ErrorCode, number][]).map(([code, n]) => [n, code]),
);

/** Wire number of a code. */
export function errorNumber(code: ErrorCode): number {
  return ERROR_NUMBERS[code];
}

/** Code of a wire number; unknown numbers (a newer peer) map to EINTERNAL rather than throwing. */
export function errorCodeOf(n: number): ErrorCode {
  return CODE_BY_NUMBER.get(n) ?? 'EINTERNAL';
}

/** True if `s` is one of the stable codes. */
export function isErrorCode(s: unknown): s is ErrorCode {
  return typeof s === 'string' && Object.hasOwn(ERROR_CODES, s);
}

/** The serializable form of a {@link DvsError}, as it travels in control frames and REST bodies. */
export interface WireError {
  code: ErrorCode;
  message: string;
  details?: Record<string, unknown>;
}

/**
 * The one error class of dvs. `code` is stable; `message` is for humans; `details` carries structured
 * context (endpoint, node, limit) that scripts may read.
 *
 * @example
 * try { await dvk.sendrec(server, msg, { timeout: 1000 }) }
 * catch (e) { if (e instanceof DvsError && e.code === 'ETIMEDOUT') retry() }
 */
export class DvsError extends Error {
  override readonly name = 'DvsError';
  readonly code: ErrorCode;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message?: string, details?: Record<string, unknown>, options?: ErrorOptions) {
    super(message ?? ERROR_CODES[code], options);
    this.code = code;
    this.details = details;
  }

  /** The serializable form. */
  toWire(): WireError {
    return this.details === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, details: this.details };
  }

  /** Rebuild an error from its serializable form; unknown codes become EINTERNAL. */
  static fromWire(w: unknown): DvsError {
    if (typeof w !== 'object' || w === null) return new DvsError('EINTERNAL', 'malformed error from peer');
    const o = w as Record<string, unknown>;
    const code = isErrorCode(o.code) ? o.code : 'EINTERNAL';
    const message = typeof o.message === 'string' ? o.message : ERROR_CODES[code];
    const details =
      typeof o.details === 'object' && o.details !== null
        ? (o.details as Record<string, unknown>)
        : undefined;
    return new DvsError(code, message, details);
  }

  /** Wrap anything thrown into a DvsError (unknown errors become EINTERNAL, keeping the cause). */
  static from(e: unknown): DvsError {
    if (e instanceof DvsError) return e;
    const message = e instanceof Error ? e.message : String(e);
    return new DvsError('EINTERNAL', message, undefined, { cause: e });
  }
}

/** Shorthand used throughout: `throw dvsError('EINVAL', 'bad endpoint 7')`. */
export function dvsError(code: ErrorCode, message?: string, details?: Record<string, unknown>): DvsError {
  return new DvsError(code, message, details);
}
