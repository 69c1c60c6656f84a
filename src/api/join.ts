/**
 * The network join routes (docs/security.md "Network join"), served only by a daemon started with the CA
 * directory (`dvs node start --ca-dir DIR --api ...`). They need no API bearer token: the CA certificate is
 * public, and a join is authorised by the proof of a one-time join token (src/security/join-token.ts).
 *
 * ```
 * GET  /api/v1/join/ca  → 200 {"ca": "<PEM>", "fingerprint": "AB:CD:..."}
 * POST /api/v1/join     {"version": 1, "tokenId": "<8 chars>", "nodeId": N, "csr": "<PEM>", "proof": "<64 hex>"}
 *                       → 200 {"cert": "<PEM>", "ca": "<PEM>"}
 *                       → 400 EINVAL (malformed), 401 EAUTH (token, proof, binding, CSR for another node),
 *                         429 EBUSY with Retry-After (too many failures from this address)
 * ```
 *
 * Every refusal is one warning in the log with the remote address, the node id, the token id (a handle,
 * not the secret) and the reason; the proof and the token's secret are never logged. Failures count per
 * remote address (FailureLimiter); over the limit the address is refused before any work is done.
 *
 * This module loads no certificate code until a daemon with a CA registers the routes: server.ts imports
 * it for {@link isJoinPath} in every daemon.
 */
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { Counter, type Registry } from 'prom-client';
import { DvsError } from '../protocol/errors.js';
import type { JoinAuthority, JoinRequest } from '../security/join-server.js';
import type { ApiErrorBody } from './errors.js';
import type { RouteDoc } from './openapi.js';
import type { App } from './routes.js';
import { JoinAnswer, JoinBody, JoinCaAnswer } from './schemas.js';
import { errorAnswer } from './server.js';

/** Path of the join request. */
export const JOIN_ROUTE = '/api/v1/join';
/** Path of the public CA certificate. */
export const JOIN_CA_ROUTE = '/api/v1/join/ca';
/** Largest join request body accepted, bytes (a P-256 CSR is under 1 KiB). */
export const JOIN_BODY_LIMIT = 16 * 1024;
const CSR_MAX = 8192;

/**
 * The join routes in the OpenAPI document: listed by the node that serves them only (an API without the
 * CA answers them 401/404, so listing them there would document routes that do not exist).
 */
export const JOIN_ROUTE_DOCS: RouteDoc[] = [
  {
    method: 'GET',
    url: JOIN_CA_ROUTE,
    summary: 'The cluster CA certificate and its fingerprint (public; check it against the join token)',
    tag: 'join',
    response: JoinCaAnswer,
    public: true,
    errors: {},
  },
  {
    method: 'POST',
    url: JOIN_ROUTE,
    summary: 'Network join: a node certificate for a CSR, authorised by a one-time join token (its proof)',
    tag: 'join',
    body: JoinBody,
    response: JoinAnswer,
    public: true,
    errors: {
      '400': 'malformed join request (EINVAL): `field` and `reason` say what',
      '401': 'token unknown, spent, expired or for another node; bad proof; CSR for another node (EAUTH)',
      '429': 'too many failed joins from this address (EBUSY); see Retry-After',
    },
  },
];

/** What the daemon tells the API about its CA (NodeOptions.caDir). */
export interface JoinRouteOptions {
  /** The cluster CA directory: ca.crt, ca.key (0600), tokens.json. */
  caDir: string;
  /** Lifetime of issued certificates, days (default 365). */
  validDays?: number;
  /** Failures per remote address per window before refusing it (default 10 per 60 s). */
  maxFailures?: number;
  windowMs?: number;
}

/** True for the paths of this module: server.ts lets them through without the bearer token. */
export function isJoinPath(path: string): boolean {
  return path === JOIN_ROUTE || path === JOIN_CA_ROUTE;
}

/** Register the join routes on `app`. Loads the CA (ENOENT if `caDir` has none, EAUTH if its key is not 0600). */
export async function registerJoinRoutes(
  app: App,
  opts: JoinRouteOptions & { logger: Logger; registry?: Registry },
): Promise<JoinAuthority> {
  const { JoinAuthority } = await import('../security/join-server.js');
  const authority = new JoinAuthority(opts);
  await authority.start();
  app.addHook('onClose', async () => authority.stop());
  const log = opts.logger;
  const requests = opts.registry ? joinCounter(opts.registry) : undefined;

  app.get(JOIN_CA_ROUTE, async () => ({ ca: authority.caCert, fingerprint: authority.caFingerprint }));

  const refuse = (req: FastifyRequest, reply: FastifyReply, err: unknown, what: Partial<JoinRequest>) => {
    const { status, body } = errorAnswer(err);
    if (status >= 500) {
      log.error({ err, remote: req.ip }, 'join failed');
      requests?.inc({ result: 'error' });
      return reply.code(status).send(body);
    }
    const remote = req.ip;
    authority.limiter.fail(remote);
    requests?.inc({ result: 'refused' });
    log.warn(
      {
        remote,
        ...(typeof what.nodeId === 'number' ? { nodeId: what.nodeId } : {}),
        ...(typeof what.tokenId === 'string' ? { tokenId: what.tokenId } : {}),
        code: body.error.code,
        reason: body.error.message,
        ...(authority.limiter.blockedFor(remote) > 0 ? { blocked: true } : {}),
      },
      'join refused',
    );
    return reply.code(status).send(body);
  };

  app.post(
    JOIN_ROUTE,
    {
      bodyLimit: JOIN_BODY_LIMIT,
      // Malformed JSON, wrong content type, body too big: refused like any bad join (counted, logged).
      errorHandler: (err: FastifyError, req, reply) => refuse(req, reply, err, {}),
    },
    async (req, reply) => {
      const wait = authority.limiter.blockedFor(req.ip);
      if (wait > 0) {
        requests?.inc({ result: 'limited' });
        log.debug({ remote: req.ip, retryAfterMs: wait }, 'join attempt while blocked');
        const body: ApiErrorBody = {
          error: {
            code: 'EBUSY',
            message: `too many failed join attempts from ${req.ip}; retry in ${Math.ceil(wait / 1000)} s`,
          },
        };
        return reply
          .code(429)
          .header('retry-after', String(Math.ceil(wait / 1000)))
          .send(body);
      }
      let jr: JoinRequest | undefined;
      try {
        jr = parseJoinRequest(req.body);
        const answer = await authority.join(jr);
        requests?.inc({ result: 'ok' });
        log.info(
          { remote: req.ip, nodeId: jr.nodeId, tokenId: jr.tokenId },
          'node certificate issued by join',
        );
        return answer;
      } catch (e) {
        return refuse(req, reply, e, jr ?? partialOf(req.body));
      }
    },
  );
  return authority;
}

/** Validate a join body: EINVAL naming the field at fault. Pure (exported for tests). */
export function parseJoinRequest(body: unknown): JoinRequest {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw bad('body', 'must be a JSON object');
  }
  const b = body as Record<string, unknown>;
  for (const k of Object.keys(b)) {
    if (!['version', 'tokenId', 'nodeId', 'csr', 'proof'].includes(k)) throw bad(k, 'is not a known field');
  }
  if (b.version !== 1) throw bad('version', 'must be 1');
  if (typeof b.tokenId !== 'string' || !/^[A-Za-z0-9_-]{8}$/.test(b.tokenId)) {
    throw bad('tokenId', 'must be the 8-character id of a join token');
  }
  if (typeof b.nodeId !== 'number' || !Number.isInteger(b.nodeId) || b.nodeId < 0 || b.nodeId > 0xffff) {
    throw bad('nodeId', 'must be an integer 0..65535');
  }
  if (
    typeof b.csr !== 'string' ||
    b.csr.length > CSR_MAX ||
    !b.csr.includes('-----BEGIN CERTIFICATE REQUEST-----')
  ) {
    throw bad('csr', `must be a PEM certificate request of at most ${CSR_MAX} characters`);
  }
  if (typeof b.proof !== 'string' || !/^[0-9a-f]{64}$/.test(b.proof)) {
    throw bad('proof', 'must be 64 lower-case hex digits');
  }
  return { tokenId: b.tokenId, nodeId: b.nodeId, csr: b.csr, proof: b.proof };
}

function bad(field: string, reason: string): DvsError {
  return new DvsError('EINVAL', `join request field '${field}' ${reason}`, { field, reason });
}

/** The loggable fields of a body that did not validate (the proof and CSR are never logged). */
function partialOf(body: unknown): Partial<JoinRequest> {
  if (typeof body !== 'object' || body === null) return {};
  const b = body as Record<string, unknown>;
  return {
    ...(typeof b.nodeId === 'number' ? { nodeId: b.nodeId } : {}),
    ...(typeof b.tokenId === 'string' && /^[A-Za-z0-9_-]{8}$/.test(b.tokenId) ? { tokenId: b.tokenId } : {}),
  };
}

function joinCounter(registry: Registry): Counter<'result'> {
  const name = 'dvs_join_requests_total';
  const existing = registry.getSingleMetric(name);
  if (existing) return existing as Counter<'result'>;
  return new Counter({
    name,
    help: 'Network join requests by result (ok, refused, limited, error)',
    labelNames: ['result'],
    registers: [registry],
  });
}
