/**
 * How errors leave the API: always `{"error": {"code", "message", ...}}` with a stable DvsError code and an
 * HTTP status chosen from it. Never a stack trace; a 5xx only for what is really the server's fault (or a
 * node it depends on being unreachable).
 *
 * ```
 * 400 {"error":{"code":"EINVAL","message":"body/ep must be integer","field":"ep","reason":"must be integer"}}
 * 401 {"error":{"code":"EAUTH","message":"missing bearer token"}}
 * ```
 */
import type { ErrorCode } from '../protocol/errors.js';

/** The JSON body of every error answer. */
export interface ApiErrorBody {
  error: {
    code: ErrorCode;
    message: string;
    /** For validation errors: the offending field (dotted path, `body` or `query` prefix omitted). */
    field?: string;
    /** For validation errors: what is wrong with it. */
    reason?: string;
    details?: Record<string, unknown>;
  };
}

/** HTTP status for a DvsError code. */
export function httpStatus(code: ErrorCode): number {
  switch (code) {
    case 'EINVAL':
    case 'EMSGSIZE':
    case 'EPROTO':
      return 400;
    case 'EAUTH':
      return 401;
    case 'EPERM':
      return 403;
    case 'ENOENT':
    case 'ENOTBOUND':
      return 404;
    case 'EEXIST':
    case 'EBUSY':
    case 'EBOUND':
    case 'ESTALE':
    case 'ENOTOWNER':
      return 409;
    case 'ENOSPC':
      return 507;
    case 'ENOTSUP':
      return 501;
    case 'ETIMEDOUT':
      return 504;
    case 'ENOTCONN':
    case 'EUNAVAIL':
    case 'EABORTED':
      return 503;
    default:
      return 500;
  }
}
