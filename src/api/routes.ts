/**
 * The routes of `/api/v1`. Each is declared once in {@link ROUTES}-style calls to `route()`, which both
 * registers it with fastify (schemas validate the request) and records it for the OpenAPI document
 * (`GET /api/v1/openapi.json`, openapi.ts).
 *
 * | method | path | does (CLI equivalent) |
 * |---|---|---|
 * | GET | /cluster | nodes, DCs, message totals (`dvs status`) |
 * | GET | /nodes, /nodes/{node} | nodes and their links |
 * | GET, POST | /dcs | list, create (`dvs dc ls`, `dvs dc create`) |
 * | GET, PATCH, DELETE | /dcs/{dc} | one DC; set its nodes; remove it (`dvs dc rm`) |
 * | POST, DELETE | /dcs/{dc}/nodes[/{node}] | `dvs dc add-node`, `dvs dc rm-node` |
 * | GET | /dcs/{dc}/endpoints | `dvs ep ls` |
 * | GET, POST | /dcs/{dc}/processes | processes of the DC; `dvs run` |
 * | POST | /dcs/{dc}/processes/{ep}/kill | `dvs kill` |
 * | POST | /dcs/{dc}/processes/{ep}/kill-replicas | `dvs kill --replicas` |
 * | POST | /dcs/{dc}/processes/{ep}/migrate | `dvs migrate` |
 * | GET | /dcs/{dc}/processes/{ep}/logs | `dvs logs` |
 * | GET | /processes | every process |
 * | GET | /events, /events/stream | `dvs events`, `dvs events --follow` (SSE) |
 *
 * DC isolation, exec and the DVK services (kv, locks, groups, snapshots) are in routes-more.ts.
 */
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type {
  FastifyBaseLogger,
  FastifyInstance,
  FastifyReply,
  FastifyRequest,
  RawServerDefault,
} from 'fastify';
import type { Gauge } from 'prom-client';
import { dvsError } from '../protocol/errors.js';
import { buildOpenApi, type RouteDoc } from './openapi.js';
import type { ClusterOps } from './ops.js';
import { registerMoreRoutes } from './routes-more.js';
import {
  AddNodeBody,
  CreateDcBody,
  DcEpParams,
  DcNodeParams,
  DcParams,
  EventsQuery,
  KillBody,
  LogsQuery,
  MigrateBody,
  NodeParams,
  ProcessesQuery,
  RunBody,
  StreamQuery,
  UpdateDcBody,
} from './schemas.js';
import type { EventFeed } from './server.js';

export type App = FastifyInstance<
  RawServerDefault,
  import('node:http').IncomingMessage,
  import('node:http').ServerResponse,
  FastifyBaseLogger,
  TypeBoxTypeProvider
>;

export interface RouteContext {
  ops: ClusterOps;
  events: EventFeed;
  keepAliveMs: number;
  /** Cleanups of open SSE streams (ended when the server closes). */
  openStreams: Set<() => void>;
  streamsGauge: Gauge | undefined;
  /** Routes registered elsewhere (the network join) that the OpenAPI document lists too. */
  extraDocs?: RouteDoc[];
}

/** Per request: an AbortSignal that fires when the client goes away, so admin calls on its behalf stop too. */
const SIGNALS = new WeakMap<FastifyRequest, AbortSignal>();

export function clientSignal(req: FastifyRequest): AbortSignal {
  return SIGNALS.get(req) ?? new AbortController().signal;
}

/** A DC path parameter: digits are an id, anything else a name. */
export function dcRef(s: string): string | number {
  return /^\d+$/.test(s) ? Number(s) : s;
}

export function registerRoutes(app: App, ctx: RouteContext): void {
  const { ops } = ctx;
  const docs: RouteDoc[] = [];
  const P = '/api/v1';
  const doc = (d: RouteDoc) => docs.push(d);
  app.addHook('onRequest', async (req, reply) => {
    const ac = new AbortController();
    // The response closing before it was finished means the client left (not the request body ending).
    reply.raw.once('close', () => {
      if (!reply.raw.writableFinished) ac.abort();
    });
    SIGNALS.set(req, ac.signal);
  });

  doc({
    method: 'GET',
    url: `${P}/cluster`,
    summary: 'Cluster overview: nodes, DCs, message totals',
    tag: 'cluster',
  });
  app.get(`${P}/cluster`, async (req) => ops.cluster(clientSignal(req)));

  doc({ method: 'GET', url: `${P}/nodes`, summary: 'Nodes with their state and links', tag: 'nodes' });
  app.get(`${P}/nodes`, async (req) => ({ nodes: await ops.nodeRows(clientSignal(req)) }));

  doc({ method: 'GET', url: `${P}/nodes/:node`, summary: 'One node', tag: 'nodes', params: NodeParams });
  app.get(`${P}/nodes/:node`, { schema: { params: NodeParams } }, async (req) => {
    const row = (await ops.nodeRows(clientSignal(req))).find((n) => n.id === req.params.node);
    if (row === undefined) throw dvsError('ENOENT', `no node ${req.params.node} in this cluster`);
    return row;
  });

  doc({ method: 'GET', url: `${P}/dcs`, summary: 'DCs of the cluster', tag: 'dcs' });
  app.get(`${P}/dcs`, async (req) => ({ dcs: await ops.dcs(clientSignal(req)) }));

  doc({ method: 'POST', url: `${P}/dcs`, summary: 'Create a DC (201)', tag: 'dcs', body: CreateDcBody });
  app.post(`${P}/dcs`, { schema: { body: CreateDcBody } }, async (req, reply) => {
    const cfg = await ops.createDc(req.body, clientSignal(req));
    return reply.code(201).send(cfg);
  });

  doc({ method: 'GET', url: `${P}/dcs/:dc`, summary: 'One DC', tag: 'dcs', params: DcParams });
  app.get(`${P}/dcs/:dc`, { schema: { params: DcParams } }, async (req) =>
    ops.dc(req.params.dc, clientSignal(req)),
  );

  doc({
    method: 'PATCH',
    url: `${P}/dcs/:dc`,
    summary: "Set a DC's nodes (needs a cluster store)",
    tag: 'dcs',
    params: DcParams,
    body: UpdateDcBody,
  });
  app.patch(`${P}/dcs/:dc`, { schema: { params: DcParams, body: UpdateDcBody } }, async (req) =>
    ops.setDcNodes(dcRef(req.params.dc), req.body.nodes, clientSignal(req)),
  );

  doc({
    method: 'DELETE',
    url: `${P}/dcs/:dc`,
    summary: 'Remove a DC (its processes are stopped)',
    tag: 'dcs',
    params: DcParams,
  });
  app.delete(`${P}/dcs/:dc`, { schema: { params: DcParams } }, async (req) =>
    ops.removeDc(dcRef(req.params.dc), clientSignal(req)),
  );

  doc({
    method: 'POST',
    url: `${P}/dcs/:dc/nodes`,
    summary: 'Add a node to a DC (needs a cluster store)',
    tag: 'dcs',
    params: DcParams,
    body: AddNodeBody,
  });
  app.post(`${P}/dcs/:dc/nodes`, { schema: { params: DcParams, body: AddNodeBody } }, async (req) =>
    ops.dcNode('add', dcRef(req.params.dc), req.body.node, clientSignal(req)),
  );

  doc({
    method: 'DELETE',
    url: `${P}/dcs/:dc/nodes/:node`,
    summary: 'Remove a node from a DC (needs a cluster store)',
    tag: 'dcs',
    params: DcNodeParams,
  });
  app.delete(`${P}/dcs/:dc/nodes/:node`, { schema: { params: DcNodeParams } }, async (req) =>
    ops.dcNode('rm', dcRef(req.params.dc), req.params.node, clientSignal(req)),
  );

  doc({
    method: 'GET',
    url: `${P}/dcs/:dc/endpoints`,
    summary: "The DC's endpoint table",
    tag: 'endpoints',
    params: DcParams,
  });
  app.get(`${P}/dcs/:dc/endpoints`, { schema: { params: DcParams } }, async (req) => {
    const signal = clientSignal(req);
    const dc = await ops.dc(req.params.dc, signal);
    return { dc: dc.name, dcId: dc.id, endpoints: await ops.endpoints(dc, signal) };
  });

  doc({
    method: 'GET',
    url: `${P}/dcs/:dc/processes`,
    summary: "The DC's processes",
    tag: 'processes',
    params: DcParams,
  });
  app.get(`${P}/dcs/:dc/processes`, { schema: { params: DcParams } }, async (req) => {
    const signal = clientSignal(req);
    return { processes: await ops.processes(await ops.dc(req.params.dc, signal), signal) };
  });

  doc({
    method: 'POST',
    url: `${P}/dcs/:dc/processes`,
    summary: 'Run a process bound to an endpoint (201)',
    tag: 'processes',
    params: DcParams,
    body: RunBody,
  });
  app.post(`${P}/dcs/:dc/processes`, { schema: { params: DcParams, body: RunBody } }, async (req, reply) => {
    const signal = clientSignal(req);
    const info = await ops.run(await ops.dc(req.params.dc, signal), req.body, signal);
    return reply.code(201).send(info);
  });

  doc({
    method: 'POST',
    url: `${P}/dcs/:dc/processes/:ep/kill`,
    summary: 'Signal the process of an endpoint (SIGKILL after graceMs)',
    tag: 'processes',
    params: DcEpParams,
    body: KillBody,
  });
  app.post(
    `${P}/dcs/:dc/processes/:ep/kill`,
    { schema: { params: DcEpParams, body: KillBody } },
    async (req) => {
      const signal = clientSignal(req);
      return ops.kill(await ops.dc(req.params.dc, signal), req.params.ep, req.body ?? {}, signal);
    },
  );

  doc({
    method: 'POST',
    url: `${P}/dcs/:dc/processes/:ep/kill-replicas`,
    summary: 'End a replicated endpoint: signal every replica, no failover (dvs kill --replicas)',
    tag: 'processes',
    params: DcEpParams,
    body: KillBody,
  });
  app.post(
    `${P}/dcs/:dc/processes/:ep/kill-replicas`,
    { schema: { params: DcEpParams, body: KillBody } },
    async (req) => {
      const signal = clientSignal(req);
      return ops.killGroup(await ops.dc(req.params.dc, signal), req.params.ep, req.body ?? {}, signal);
    },
  );

  doc({
    method: 'POST',
    url: `${P}/dcs/:dc/processes/:ep/migrate`,
    summary: 'Live-migrate an endpoint and its process to another node of the DC (freeze time in the result)',
    tag: 'processes',
    params: DcEpParams,
    body: MigrateBody,
  });
  app.post(
    `${P}/dcs/:dc/processes/:ep/migrate`,
    { schema: { params: DcEpParams, body: MigrateBody } },
    async (req) => {
      const signal = clientSignal(req);
      return ops.migrate(await ops.dc(req.params.dc, signal), req.params.ep, req.body.to, signal);
    },
  );

  doc({
    method: 'GET',
    url: `${P}/dcs/:dc/processes/:ep/logs`,
    summary: 'Output of a process from byte offset (UTF-8 text)',
    tag: 'processes',
    params: DcEpParams,
    query: LogsQuery,
  });
  app.get(
    `${P}/dcs/:dc/processes/:ep/logs`,
    { schema: { params: DcEpParams, querystring: LogsQuery } },
    async (req) => {
      const signal = clientSignal(req);
      const dc = await ops.dc(req.params.dc, signal);
      return ops.logs(
        dc,
        req.params.ep,
        { offset: req.query.offset ?? 0, ...(req.query.max !== undefined ? { max: req.query.max } : {}) },
        signal,
      );
    },
  );

  doc({
    method: 'GET',
    url: `${P}/processes`,
    summary: 'Processes on every reachable node',
    tag: 'processes',
    query: ProcessesQuery,
  });
  app.get(`${P}/processes`, { schema: { querystring: ProcessesQuery } }, async (req) => {
    const signal = clientSignal(req);
    const dc = req.query.dc === undefined ? undefined : await ops.dc(req.query.dc, signal);
    return { processes: await ops.processes(dc, signal) };
  });

  doc({
    method: 'GET',
    url: `${P}/events`,
    summary: "This node's (or node `node`'s) event log after `since`",
    tag: 'events',
    query: EventsQuery,
  });
  app.get(`${P}/events`, { schema: { querystring: EventsQuery } }, async (req) => {
    const q = {
      ...(req.query.since !== undefined ? { since: req.query.since } : {}),
      ...(req.query.limit !== undefined ? { limit: req.query.limit } : {}),
    };
    // Another node's log (each node logs what it saw: a failover on the backup's node, an OOM kill where
    // the process ran), relayed over the node link.
    const node = req.query.node ?? ops.self;
    const r =
      node === ops.self
        ? await ops.events(q, clientSignal(req))
        : await ops.nodeEvents(node, q, clientSignal(req));
    return { node, ...r };
  });

  doc({
    method: 'GET',
    url: `${P}/events/stream`,
    summary: 'Server-Sent Events: `event` per logged event (id = seq), `overview` every `overview` ms',
    tag: 'events',
    query: StreamQuery,
    stream: true,
  });
  app.get(`${P}/events/stream`, { schema: { querystring: StreamQuery } }, (req, reply) => {
    const lastId = Number(req.headers['last-event-id']);
    const since = req.query.since ?? (Number.isInteger(lastId) && lastId >= 0 ? lastId : undefined);
    stream(req, reply, ctx, since, req.query.overview);
  });

  registerMoreRoutes(app, ops, doc);

  const openapi = buildOpenApi([...docs, ...(ctx.extraDocs ?? [])]);
  app.get(`${P}/openapi.json`, async () => openapi);
}

/** One SSE stream: replay after `since`, then live events; optional periodic overviews. */
function stream(
  req: FastifyRequest,
  reply: FastifyReply,
  ctx: RouteContext,
  since: number | undefined,
  overviewMs: number | undefined,
): void {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });
  const send = (event: string, data: unknown, id?: number) => {
    if (res.writableEnded || res.destroyed) return;
    res.write(`${id === undefined ? '' : `id: ${id}\n`}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  };
  res.write('retry: 2000\n\n');
  send('hello', { node: ctx.ops.self, last: ctx.events.last });
  // Replay and subscribe in the same turn: emit() is synchronous, so nothing falls in between.
  if (since !== undefined) for (const e of ctx.events.list({ since })) send('event', e, e.seq);
  const unsubscribe = ctx.events.subscribe((e) => send('event', e, e.seq));
  const ac = new AbortController();
  const keepAlive = setInterval(() => {
    if (!res.writableEnded) res.write(': keep-alive\n\n');
  }, ctx.keepAliveMs);
  let overviewTimer: NodeJS.Timeout | undefined;
  if (overviewMs !== undefined) {
    const tick = async () => {
      try {
        send('overview', await ctx.ops.cluster(ac.signal));
      } catch (e) {
        if (!ac.signal.aborted)
          send('error', { error: { code: 'EINTERNAL', message: String((e as Error).message) } });
      }
      if (!ac.signal.aborted) overviewTimer = setTimeout(() => void tick(), overviewMs);
    };
    void tick();
  }
  ctx.streamsGauge?.inc();
  let ended = false;
  const end = () => {
    if (ended) return;
    ended = true;
    ac.abort();
    unsubscribe();
    clearInterval(keepAlive);
    clearTimeout(overviewTimer);
    ctx.openStreams.delete(end);
    ctx.streamsGauge?.dec();
    if (!res.writableEnded) res.end();
  };
  ctx.openStreams.add(end);
  req.raw.socket.once('close', end);
  res.once('close', end);
}
