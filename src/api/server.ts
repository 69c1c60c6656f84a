/**
 * The REST API and dashboard server of one node daemon (fastify + typebox), `/api/v1/...`.
 *
 * ```
 *   browser / curl ──HTTP(S)── ApiServer ──routes (routes.ts)──▶ ClusterOps ──AdminCaller──▶ this daemon's admin
 *                              │                                 └──`node.call` over the node link──▶ peers' admin
 *                              ├── /api/v1/events/stream (SSE) ◀── EventLog.subscribe
 *                              └── /  the dashboard build (dist/web) via @fastify/static
 * ```
 *
 * With {@link ApiOptions.tls} (the daemon's `apiTls`, on by default when the node has TLS credentials) it is
 * HTTPS only: TLS >= 1.2 (1.3 whenever the client has it), the node's own certificate followed by the cluster
 * CA's as its chain, no client certificate asked for, no plain-HTTP listener beside it. Clients verify the
 * chain against the cluster CA (client.ts says exactly what they check).
 *
 * Every `/api/` request needs `Authorization: Bearer <token>` (401 EAUTH otherwise), except
 * `/api/v1/openapi.json` and, on a node holding the CA, the network join (`/api/v1/join`, join.ts: a join
 * token authorises it). The explicit development mode `insecureLoopback` lets loopback clients in without
 * a token. Errors are `{"error":{"code","message"}}` (errors.ts).
 */
import { existsSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fastifyStatic from '@fastify/static';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, { type FastifyBaseLogger, type FastifyError, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { NodeEvent } from '../protocol/admin.js';
import { DvsError, dvsError } from '../protocol/errors.js';
import { parseHostPort } from '../transport/net.js';
import { bearerToken, isLoopback, tokenMatches } from './auth.js';
import type { ApiNodes } from './caller.js';
import { API_TLS_MIN_VERSION } from './client.js';
import { type ApiErrorBody, httpStatus } from './errors.js';
import { isJoinPath, JOIN_ROUTE_DOCS, type JoinRouteOptions, registerJoinRoutes } from './join.js';
import { ClusterOps } from './ops.js';
import { registerRoutes } from './routes.js';

/** What the API needs of the event log (src/node/events.ts implements it). */
export interface EventFeed {
  readonly last: number;
  list(opts: { since?: number; limit?: number }): NodeEvent[];
  subscribe(fn: (e: NodeEvent) => void): () => void;
}

export interface ApiOptions {
  /** The nodes the API answers for: this daemon's admin dispatcher and the peers it can reach. */
  nodes: ApiNodes;
  /** This daemon's event log (for the SSE stream). */
  events: EventFeed;
  /** The bearer token clients must present. Without one, only `insecureLoopback` mode can serve. */
  token?: string;
  /** Development mode, chosen explicitly: loopback clients need no token. */
  insecureLoopback?: boolean;
  logger: Logger;
  /** prom-client registry for `dvs_api_*` metrics (omitted: none). */
  registry?: Registry;
  /** Directory of the built dashboard (index.html); default: dist/web of this package, if built. */
  webRoot?: string;
  /** Timeout of one admin call to one node, ms (default 5000). */
  callTimeoutMs?: number;
  /** Period of SSE keep-alive comments, ms (default 15000). */
  keepAliveMs?: number;
  /** This node holds the cluster CA: serve the network join (`/api/v1/join`, join.ts) from it. */
  join?: JoinRouteOptions;
  /** Serve HTTPS with these PEM credentials (the node's link credentials); omitted: plain HTTP. */
  tls?: ApiTlsCredentials;
}

/** The credentials of an HTTPS API: the node's certificate and key, and the cluster CA sent along as chain. */
export interface ApiTlsCredentials {
  /** The cluster CA certificate, PEM (sent after the node's: a joining node pins it, client.ts). */
  ca: string;
  /** The node's certificate, PEM (CN node-<id>). */
  cert: string;
  /** The node's private key, PEM. */
  key: string;
}

/** Where the dashboard build is: dist/web next to dist/src (built) or under the repo (running from src/). */
export function defaultWebRoot(): string | undefined {
  const here = dirname(fileURLToPath(import.meta.url));
  for (const d of [join(here, '../../web'), join(here, '../../dist/web')]) {
    if (existsSync(join(d, 'index.html'))) return d;
  }
  return undefined;
}

/** Build the fastify app (not listening): what the daemon serves and what unit tests `inject()` into. */
export async function buildApi(opts: ApiOptions): Promise<FastifyInstance> {
  if (opts.token === undefined && opts.insecureLoopback !== true) {
    throw dvsError('EINVAL', 'the API needs a token (or the explicit insecure loopback mode)');
  }
  const log = opts.logger.child({ component: 'api' });
  const app = Fastify({
    ...(opts.tls ? { https: httpsOptions(opts.tls) } : {}),
    loggerInstance: log as FastifyBaseLogger,
    disableRequestLogging: true,
    bodyLimit: 1 << 20,
    // SSE streams are long-lived: close() must not wait for them (we also end them in preClose).
    forceCloseConnections: true,
    ajv: {
      customOptions: { removeAdditional: false, coerceTypes: true, useDefaults: true, allErrors: false },
    },
  }).withTypeProvider<TypeBoxTypeProvider>();

  const requests = opts.registry
    ? new Counter({
        name: 'dvs_api_requests_total',
        help: 'REST API requests by route and HTTP status',
        labelNames: ['method', 'route', 'status'],
        registers: [opts.registry],
      })
    : undefined;
  const streams = opts.registry
    ? new Gauge({ name: 'dvs_api_streams', help: 'Open SSE streams', registers: [opts.registry] })
    : undefined;

  app.addHook('onRequest', async (req) => {
    const path = req.url.split('?')[0] ?? '';
    if (!path.startsWith('/api/') || path === '/api/v1/openapi.json') return;
    // The network join is authorised by its one-time join token, not the API token (join.ts).
    if (opts.join !== undefined && isJoinPath(path)) return;
    if (opts.insecureLoopback && isLoopback(req.socket.remoteAddress)) return;
    const presented = bearerToken(req.headers.authorization);
    if (opts.token === undefined || !tokenMatches(presented, opts.token)) {
      throw dvsError('EAUTH', presented === undefined ? 'missing bearer token' : 'wrong bearer token');
    }
  });
  app.addHook('onResponse', async (req, reply) => {
    requests?.inc({
      method: req.method,
      route: req.routeOptions.url ?? 'unknown',
      status: String(reply.statusCode),
    });
  });

  app.setErrorHandler((err: FastifyError | DvsError, req, reply) => {
    const { status, body } = errorAnswer(err);
    if (status >= 500) log.error({ err, url: req.url, method: req.method }, 'request failed');
    else log.debug({ url: req.url, code: body.error.code, msg: body.error.message }, 'request refused');
    return reply.code(status).send(body);
  });
  app.setNotFoundHandler((req, reply) => {
    const path = req.url.split('?')[0] ?? '';
    const body: ApiErrorBody = {
      error: { code: 'ENOENT', message: `no such resource: ${req.method} ${path}` },
    };
    return reply.code(404).send(body);
  });

  const ops = new ClusterOps(opts.nodes, opts.callTimeoutMs);
  const open = new Set<() => void>();
  app.addHook('preClose', async () => {
    for (const end of [...open]) end();
  });
  registerRoutes(app, {
    ops,
    events: opts.events,
    keepAliveMs: opts.keepAliveMs ?? 15_000,
    openStreams: open,
    streamsGauge: streams,
    ...(opts.join !== undefined ? { extraDocs: JOIN_ROUTE_DOCS } : {}),
  });
  if (opts.join !== undefined) {
    try {
      await registerJoinRoutes(app, {
        ...opts.join,
        logger: log,
        ...(opts.registry ? { registry: opts.registry } : {}),
      });
    } catch (e) {
      await app.close();
      throw e;
    }
  }

  const webRoot = opts.webRoot ?? defaultWebRoot();
  if (webRoot !== undefined && existsSync(join(webRoot, 'index.html'))) {
    await app.register(fastifyStatic, { root: webRoot, prefix: '/', index: ['index.html'] });
  } else {
    app.get('/', async (_req, reply) =>
      reply
        .type('text/html')
        .send(
          '<!doctype html><title>dvs</title><p>The dvs dashboard is not built. Run <code>npm run build</code>.</p>',
        ),
    );
  }
  return app;
}

/** node:https server options of an HTTPS API. */
function httpsOptions(c: ApiTlsCredentials) {
  return {
    // The chain is leaf + CA: a verifying client needs only the CA (it has it), a joining node finds in it
    // the CA its token pins (client.ts fetchPinnedCa).
    cert: `${c.cert.trimEnd()}\n${c.ca.trimEnd()}\n`,
    key: c.key,
    minVersion: API_TLS_MIN_VERSION,
    // Bearer tokens authenticate API clients (browsers included): no client certificate is requested.
    requestCert: false,
  } as const;
}

/** The status and JSON body for anything a handler or fastify threw. Never a stack trace. */
export function errorAnswer(err: unknown): { status: number; body: ApiErrorBody } {
  const fe = err as Partial<FastifyError> & { validationContext?: string };
  if (Array.isArray(fe.validation) && fe.validation.length > 0) {
    const v = fe.validation[0]!;
    const params = (v.params ?? {}) as Record<string, unknown>;
    const path = (v.instancePath ?? '').replace(/^\//, '').replace(/\//g, '.');
    const extra =
      typeof params.missingProperty === 'string'
        ? params.missingProperty
        : typeof params.additionalProperty === 'string'
          ? params.additionalProperty
          : undefined;
    const field = (
      [path, extra].filter((s) => s !== undefined && s !== '').join('.') ||
      (fe.validationContext ?? 'body')
    ).replace(/^\*$/, 'key');
    let reason = v.message ?? 'is invalid';
    if (typeof params.additionalProperty === 'string') reason = 'is not a known field';
    if (typeof params.missingProperty === 'string') reason = 'is required';
    return {
      status: 400,
      body: {
        error: {
          code: 'EINVAL',
          message: `${fe.validationContext ?? 'request'} field '${field}' ${reason}`,
          field,
          reason,
        },
      },
    };
  }
  if (err instanceof DvsError) {
    const status = httpStatus(err.code);
    // A check made by the API itself (limits, LAN prefix) names the field like a schema failure does.
    const { field, reason, ...rest } = (err.details ?? {}) as Record<string, unknown>;
    const named =
      status === 400 && typeof field === 'string' && typeof reason === 'string'
        ? { field, reason }
        : undefined;
    const details = named ? rest : err.details;
    return {
      status,
      body: {
        error: {
          code: err.code,
          // Internal errors keep their detail in the log only.
          message: status === 500 ? 'internal error (see the daemon log)' : err.message,
          ...(named ?? {}),
          ...(details !== undefined && Object.keys(details).length > 0 && status !== 500 ? { details } : {}),
        },
      },
    };
  }
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    const code = fe.statusCode === 401 ? 'EAUTH' : fe.statusCode === 404 ? 'ENOENT' : 'EINVAL';
    return { status: fe.statusCode, body: { error: { code, message: fe.message ?? 'bad request' } } };
  }
  return {
    status: 500,
    body: { error: { code: 'EINTERNAL', message: 'internal error (see the daemon log)' } },
  };
}

/** A listening API server with start()/stop(). */
export class ApiServer {
  private app: FastifyInstance | undefined;
  private bound: string | undefined;

  constructor(
    /** host:port to listen on (port 0: any free one). */
    private readonly listen: string,
    private readonly opts: ApiOptions,
  ) {}

  /** host:port actually bound (after start). */
  get address(): string {
    if (this.bound === undefined) throw dvsError('EINVAL', 'the API server is not started');
    return this.bound;
  }

  /** `https://host:port` with TLS, else `http://host:port`. */
  get url(): string {
    return `${this.opts.tls ? 'https' : 'http'}://${this.address}`;
  }

  /** True if the API serves HTTPS. */
  get secure(): boolean {
    return this.opts.tls !== undefined;
  }

  async start(signal?: AbortSignal): Promise<void> {
    const { host, port } = parseHostPort(this.listen);
    const app = await buildApi(this.opts);
    this.app = app;
    try {
      signal?.throwIfAborted();
      await app.listen({ host, port });
    } catch (e) {
      await app.close().catch(() => {});
      this.app = undefined;
      const err = e as NodeJS.ErrnoException;
      if (err.code === 'EADDRINUSE') throw dvsError('EEXIST', `API address ${this.listen} is in use`);
      throw DvsError.from(e);
    }
    const a = app.server.address() as AddressInfo;
    this.bound = `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
  }

  async stop(): Promise<void> {
    const app = this.app;
    this.app = undefined;
    await app?.close();
  }
}
