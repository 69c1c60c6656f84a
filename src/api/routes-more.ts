/**
 * Routes of `/api/v1` for the features that came after the first API: DC isolation (limits, usage, pause,
 * exec), and the DVK services the CLI reaches as service methods (kv, locks, groups, snapshots). Each one
 * is a REST face over the same admin or service method the CLI calls (ops.ts), so both share one
 * implementation.
 *
 * | method | path | does (CLI equivalent) |
 * |---|---|---|
 * | GET | /dcs/{dc}/isolation | per node: container, limits, LAN place (`dvs dc show`) |
 * | GET | /dcs/{dc}/stats | per node: usage against limits (`dvs dc stats`) |
 * | PUT | /dcs/{dc}/limits | change limits live on every node (`dvs dc set`) |
 * | POST | /dcs/{dc}/pause, /dcs/{dc}/resume | freeze / thaw (`dvs dc pause|resume`) |
 * | POST | /dcs/{dc}/exec | a command in the DC's container (`dvs exec`) |
 * | GET | /dcs/{dc}/locks | `dvs lock ls` |
 * | GET | /dcs/{dc}/kv | `dvs kv ls` |
 * | GET, PUT, DELETE | /dcs/{dc}/kv/{key} | `dvs kv get|put|rm` |
 * | GET | /dcs/{dc}/groups | `dvs group ls` |
 * | GET, POST | /dcs/{dc}/snapshots | `dvs snapshot ls --dc`, `dvs snapshot create` |
 * | POST | /dcs/{dc}/restore | `dvs snapshot restore` |
 * | GET | /snapshots | `dvs snapshot ls` |
 * | GET, DELETE | /snapshots/{name} | `dvs snapshot show|rm` |
 * | POST | /snapshots/{name}/fork | `dvs snapshot fork` |
 * | POST | /dcs/{dc}/balance | `dvs balance [--apply]` |
 *
 * Adding a feature's route is one `doc()` + one `app.<method>()` here, over a ClusterOps method.
 */
import { dvsError } from '../protocol/errors.js';
import type { RouteDoc } from './openapi.js';
import type { ClusterOps } from './ops.js';
import { type App, clientSignal } from './routes.js';
import {
  BalanceBody,
  DcKeyParams,
  DcParams,
  ExecBody,
  ForkBody,
  KvListQuery,
  KvPutBody,
  RestoreBody,
  SetLimitsBody,
  SnapshotCreateBody,
  SnapshotParams,
  SnapshotsQuery,
} from './schemas.js';

const P = '/api/v1';

/** A kv body's bytes: `value` as UTF-8, or `base64`; exactly one (400 naming the field otherwise). */
function kvBytes(body: { value?: string; base64?: string }): Uint8Array {
  if ((body.value === undefined) === (body.base64 === undefined)) {
    throw dvsError('EINVAL', "body needs exactly one of 'value' (text) or 'base64' (bytes)", {
      field: body.value === undefined ? 'value' : 'base64',
      reason: 'give exactly one of value or base64',
    });
  }
  if (body.value !== undefined) return new TextEncoder().encode(body.value);
  return new Uint8Array(Buffer.from(body.base64 ?? '', 'base64'));
}

export function registerMoreRoutes(app: App, ops: ClusterOps, doc: (d: RouteDoc) => void): void {
  // ------------------------------------------------------------------------------------------ isolation

  doc({
    method: 'GET',
    url: `${P}/dcs/:dc/isolation`,
    summary: "Per node: the DC's container, limits and LAN place (`dvs dc show`)",
    tag: 'isolation',
    params: DcParams,
  });
  app.get(`${P}/dcs/:dc/isolation`, { schema: { params: DcParams } }, async (req) => {
    const signal = clientSignal(req);
    return ops.isolation(await ops.dc(req.params.dc, signal), signal);
  });

  doc({
    method: 'GET',
    url: `${P}/dcs/:dc/stats`,
    summary: 'Per node: memory, CPU, pids and IO against the limits (`dvs dc stats`)',
    tag: 'isolation',
    params: DcParams,
  });
  app.get(`${P}/dcs/:dc/stats`, { schema: { params: DcParams } }, async (req) => {
    const signal = clientSignal(req);
    return ops.stats(await ops.dc(req.params.dc, signal), signal);
  });

  doc({
    method: 'PUT',
    url: `${P}/dcs/:dc/limits`,
    summary: "Change a DC's limits live on all its nodes; absent keys unchanged, 'max' removes one",
    tag: 'isolation',
    params: DcParams,
    body: SetLimitsBody,
  });
  app.put(`${P}/dcs/:dc/limits`, { schema: { params: DcParams, body: SetLimitsBody } }, async (req) => {
    const signal = clientSignal(req);
    return ops.setLimits(await ops.dc(req.params.dc, signal), req.body, signal);
  });

  for (const what of ['pause', 'resume'] as const) {
    doc({
      method: 'POST',
      url: `${P}/dcs/:dc/${what}`,
      summary:
        what === 'pause'
          ? 'Freeze every process of the DC on all its nodes'
          : 'Thaw every process of the DC on all its nodes',
      tag: 'isolation',
      params: DcParams,
    });
    app.post(`${P}/dcs/:dc/${what}`, { schema: { params: DcParams } }, async (req) => {
      const signal = clientSignal(req);
      return ops.freeze(await ops.dc(req.params.dc, signal), what, signal);
    });
  }

  doc({
    method: 'POST',
    url: `${P}/dcs/:dc/exec`,
    summary: "Run a command in the DC's container on a node (default its lowest) and return its output",
    tag: 'isolation',
    params: DcParams,
    body: ExecBody,
  });
  app.post(`${P}/dcs/:dc/exec`, { schema: { params: DcParams, body: ExecBody } }, async (req) => {
    const signal = clientSignal(req);
    return ops.exec(await ops.dc(req.params.dc, signal), req.body, signal);
  });

  // ------------------------------------------------------------------------------------- locks and kv

  doc({
    method: 'GET',
    url: `${P}/dcs/:dc/locks`,
    summary: 'Held locks of the DC: holder, fencing token, waiters in queue order',
    tag: 'services',
    params: DcParams,
  });
  app.get(`${P}/dcs/:dc/locks`, { schema: { params: DcParams } }, async (req) => {
    const signal = clientSignal(req);
    return ops.locks(await ops.dc(req.params.dc, signal), signal);
  });

  doc({
    method: 'GET',
    url: `${P}/dcs/:dc/kv`,
    summary: "The DC's keys under `prefix`, sorted (values as text and base64)",
    tag: 'services',
    params: DcParams,
    query: KvListQuery,
  });
  app.get(`${P}/dcs/:dc/kv`, { schema: { params: DcParams, querystring: KvListQuery } }, async (req) => {
    const signal = clientSignal(req);
    return ops.kvList(await ops.dc(req.params.dc, signal), req.query, signal);
  });

  doc({
    method: 'GET',
    url: `${P}/dcs/:dc/kv/*`,
    summary: 'One key (404 ENOENT if absent)',
    tag: 'services',
    params: DcKeyParams,
  });
  app.get(`${P}/dcs/:dc/kv/*`, { schema: { params: DcKeyParams } }, async (req) => {
    const signal = clientSignal(req);
    return ops.kvGet(await ops.dc(req.params.dc, signal), req.params['*'], signal);
  });

  doc({
    method: 'PUT',
    url: `${P}/dcs/:dc/kv/*`,
    summary: 'Write a key: `{value}` (UTF-8 text) or `{base64}` (bytes)',
    tag: 'services',
    params: DcKeyParams,
    body: KvPutBody,
  });
  app.put(`${P}/dcs/:dc/kv/*`, { schema: { params: DcKeyParams, body: KvPutBody } }, async (req) => {
    const signal = clientSignal(req);
    const value = kvBytes(req.body);
    const key = req.params['*'];
    return { key, ...(await ops.kvPut(await ops.dc(req.params.dc, signal), key, value, signal)) };
  });

  doc({
    method: 'DELETE',
    url: `${P}/dcs/:dc/kv/*`,
    summary: 'Delete a key (`deleted: false` if it did not exist)',
    tag: 'services',
    params: DcKeyParams,
  });
  app.delete(`${P}/dcs/:dc/kv/*`, { schema: { params: DcKeyParams } }, async (req) => {
    const signal = clientSignal(req);
    const key = req.params['*'];
    return { key, ...(await ops.kvDelete(await ops.dc(req.params.dc, signal), key, signal)) };
  });

  // ------------------------------------------------------------------------------------------- groups

  doc({
    method: 'GET',
    url: `${P}/dcs/:dc/groups`,
    summary: "The DC's process groups: newest view, members, counters summed over the nodes",
    tag: 'services',
    params: DcParams,
  });
  app.get(`${P}/dcs/:dc/groups`, { schema: { params: DcParams } }, async (req) => {
    const signal = clientSignal(req);
    return ops.groups(await ops.dc(req.params.dc, signal), signal);
  });

  // ---------------------------------------------------------------------------------------- snapshots

  doc({
    method: 'GET',
    url: `${P}/dcs/:dc/snapshots`,
    summary: "The DC's snapshots",
    tag: 'snapshots',
    params: DcParams,
  });
  app.get(`${P}/dcs/:dc/snapshots`, { schema: { params: DcParams } }, async (req) => {
    const signal = clientSignal(req);
    const dc = await ops.dc(req.params.dc, signal);
    return { snapshots: await ops.snapshots(dc.name, signal) };
  });

  doc({
    method: 'POST',
    url: `${P}/dcs/:dc/snapshots`,
    summary: 'Take a consistent snapshot of the whole DC (201)',
    tag: 'snapshots',
    params: DcParams,
    body: SnapshotCreateBody,
    status: 201,
  });
  app.post(
    `${P}/dcs/:dc/snapshots`,
    { schema: { params: DcParams, body: SnapshotCreateBody } },
    async (req, reply) => {
      const signal = clientSignal(req);
      const info = await ops.snapshotCreate(await ops.dc(req.params.dc, signal), req.body ?? {}, signal);
      return reply.code(201).send(info);
    },
  );

  doc({
    method: 'POST',
    url: `${P}/dcs/:dc/restore`,
    summary: "Stop the DC's processes and start them again from a snapshot",
    tag: 'snapshots',
    params: DcParams,
    body: RestoreBody,
  });
  app.post(`${P}/dcs/:dc/restore`, { schema: { params: DcParams, body: RestoreBody } }, async (req) => {
    const signal = clientSignal(req);
    return ops.snapshotRestore(await ops.dc(req.params.dc, signal), req.body.snapshot, signal);
  });

  doc({
    method: 'GET',
    url: `${P}/snapshots`,
    summary: 'Snapshots of every DC (or of `dc`)',
    tag: 'snapshots',
    query: SnapshotsQuery,
  });
  app.get(`${P}/snapshots`, { schema: { querystring: SnapshotsQuery } }, async (req) => ({
    snapshots: await ops.snapshots(req.query.dc, clientSignal(req)),
  }));

  doc({
    method: 'GET',
    url: `${P}/snapshots/:name`,
    summary: 'One snapshot: processes and channels of the cut (states and payloads in base64)',
    tag: 'snapshots',
    params: SnapshotParams,
  });
  app.get(`${P}/snapshots/:name`, { schema: { params: SnapshotParams } }, async (req) =>
    ops.snapshot(req.params.name, clientSignal(req)),
  );

  doc({
    method: 'DELETE',
    url: `${P}/snapshots/:name`,
    summary: 'Remove a snapshot',
    tag: 'snapshots',
    params: SnapshotParams,
  });
  app.delete(`${P}/snapshots/:name`, { schema: { params: SnapshotParams } }, async (req) =>
    ops.snapshotRemove(req.params.name, clientSignal(req)),
  );

  doc({
    method: 'POST',
    url: `${P}/snapshots/:name/fork`,
    summary: 'Start a new DC from a snapshot (201)',
    tag: 'snapshots',
    params: SnapshotParams,
    body: ForkBody,
    status: 201,
  });
  app.post(
    `${P}/snapshots/:name/fork`,
    { schema: { params: SnapshotParams, body: ForkBody } },
    async (req, reply) => {
      const r = await ops.snapshotFork(req.params.name, req.body.as, clientSignal(req));
      return reply.code(201).send(r);
    },
  );

  // --------------------------------------------------------------------------------------- scheduling

  doc({
    method: 'POST',
    url: `${P}/dcs/:dc/balance`,
    summary: "Plan (and with `apply`, perform) the migrations that even out the load of the DC's nodes",
    tag: 'processes',
    params: DcParams,
    body: BalanceBody,
  });
  app.post(`${P}/dcs/:dc/balance`, { schema: { params: DcParams, body: BalanceBody } }, async (req) => {
    const signal = clientSignal(req);
    return ops.balance(await ops.dc(req.params.dc, signal), req.body ?? {}, signal);
  });
}
