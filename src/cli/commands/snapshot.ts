/**
 * `dvs snapshot create|ls|show|rm|restore|fork`: consistent cuts of a whole DC (Chandy–Lamport) and DCs
 * started again from them (src/node/snapshots.ts, docs/snapshots.md). create and restore go to a node of the
 * DC (it drives the run); the others to any node that answers, which finds the snapshot wherever it is kept.
 */
import type { ClusterNode } from '../../node/options.js';
import type { RestoreResult, SnapshotInfo, SnapshotRecord } from '../../node/snapshots.js';
import { dvsError } from '../../protocol/errors.js';
import { type ClusterFileOnDisk, connectNode, firstAnswering, requireCluster } from '../cluster.js';
import type { Ctx } from '../context.js';
import { findDc } from './dc.js';

/** How long a snapshot operation may take as seen from the CLI (the daemon has its own timeouts). */
const OP_TIMEOUT_MS = 120_000;

async function callOn(
  node: ClusterNode,
  method: string,
  params: Record<string, unknown>,
  timeoutMs = OP_TIMEOUT_MS,
): Promise<unknown> {
  const c = await connectNode(node);
  try {
    return await c.service(method, params, { timeout: timeoutMs });
  } finally {
    await c.close().catch(() => {});
  }
}

/** Call on the first node that answers (a node that does not moves on to the next; any error is the answer). */
function callAny(cluster: ClusterFileOnDisk, method: string, params: Record<string, unknown>) {
  return firstAnswering(cluster, (node) => callOn(node, method, params));
}

/** A node of DC `ref` that this host runs (it drives create and restore). */
async function dcNode(cluster: ClusterFileOnDisk, ref: string | number) {
  const dc = await findDc(cluster, ref);
  const node = cluster.nodes.find((n) => dc.nodes.includes(n.id));
  if (node === undefined) throw dvsError('ENOENT', `no node of DC '${dc.name}' runs on this host`);
  return { dc, node };
}

/** `dvs snapshot create --dc D [--name S]`. */
export async function snapshotCreate(
  ctx: Ctx,
  opts: { dc: string | number; name?: string; timeoutMs?: number; json: boolean },
): Promise<number> {
  const cluster = await requireCluster(ctx.dir());
  const { dc, node } = await dcNode(cluster, opts.dc);
  const info = (await callOn(node, 'snapshot.create', {
    dc: dc.id,
    ...(opts.name !== undefined ? { name: opts.name } : {}),
    ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
  })) as SnapshotInfo;
  if (opts.json) ctx.out.json(info);
  else
    ctx.out.line(
      `snapshot '${info.name}' of DC '${info.dcName}': ${info.processes} processes (${info.stateful} with state), ${info.messages} messages in flight, ${info.bytes} bytes, ${info.durationMs} ms; kept on node ${info.node}`,
    );
  return 0;
}

/** `dvs snapshot ls [--dc D]`. */
export async function snapshotList(ctx: Ctx, opts: { dc?: string | number; json: boolean }): Promise<number> {
  const cluster = await requireCluster(ctx.dir());
  const list = (await callAny(
    cluster,
    'snapshot.ls',
    opts.dc !== undefined ? { dc: opts.dc } : {},
  )) as SnapshotInfo[];
  if (opts.json) {
    ctx.out.json(list);
    return 0;
  }
  if (list.length === 0) {
    ctx.out.line('no snapshots');
    return 0;
  }
  ctx.out.table(
    ['NAME', 'DC', 'CREATED', 'PROCS', 'STATEFUL', 'IN FLIGHT', 'BYTES', 'NODE'],
    list.map((i) => [
      i.name,
      i.dcName,
      new Date(i.createdAt).toISOString(),
      i.processes,
      i.stateful,
      i.messages,
      i.bytes,
      i.node,
    ]),
  );
  return 0;
}

/** `dvs snapshot show S`: processes and channels of the cut (`--json`: states and payloads in base64). */
export async function snapshotShow(ctx: Ctx, name: string, opts: { json: boolean }): Promise<number> {
  const cluster = await requireCluster(ctx.dir());
  const rec = (await callAny(cluster, 'snapshot.show', { name })) as SnapshotRecord;
  const b64 = (b: Uint8Array | null) => (b === null ? null : Buffer.from(b).toString('base64'));
  if (opts.json) {
    ctx.out.json({
      info: rec.info,
      config: rec.config,
      procs: rec.procs.map((p) => ({ ...p, state: b64(p.state) })),
      channels: rec.channels.map((c) => ({
        ...c,
        msgs: c.msgs.map((m) => ({ ...m, payload: b64(m.payload) })),
      })),
    });
    return 0;
  }
  const i = rec.info;
  ctx.out.line(
    `snapshot '${i.name}' of DC '${i.dcName}' (id ${i.dc}), ${new Date(i.createdAt).toISOString()}`,
  );
  ctx.out.line('');
  ctx.out.table(
    ['EP', 'NODE', 'STATE', 'COMMAND'],
    rec.procs.map((p) => [
      p.ep,
      p.node,
      p.hooked ? `${p.state?.length ?? 0} bytes` : 'stateless',
      p.proc === null ? '(not started by dvs run: not restartable)' : p.proc.cmd.join(' '),
    ]),
  );
  if (rec.channels.length > 0) {
    ctx.out.line('');
    ctx.out.table(
      ['CHANNEL', 'IN FLIGHT'],
      rec.channels.map((c) => [`${c.src} -> ${c.dst}`, c.msgs.length]),
    );
  } else ctx.out.line('no messages in flight');
  return 0;
}

/** `dvs snapshot rm S`. */
export async function snapshotRemove(ctx: Ctx, name: string, opts: { json: boolean }): Promise<number> {
  const cluster = await requireCluster(ctx.dir());
  const r = await callAny(cluster, 'snapshot.rm', { name });
  if (opts.json) ctx.out.json(r);
  else ctx.out.line(`snapshot '${name}' removed`);
  return 0;
}

function restored(ctx: Ctx, verb: string, r: RestoreResult, json: boolean): number {
  if (json) {
    ctx.out.json(r);
    return 0;
  }
  ctx.out.line(
    `DC '${r.dc.name}' ${verb} from snapshot '${r.snapshot}': ${r.started.length} processes started, ${r.messages} in-flight messages handed back`,
  );
  if (r.skipped.length > 0)
    ctx.out.line(`not restartable (not started by dvs run): endpoints ${r.skipped.join(', ')}`);
  return 0;
}

/** `dvs snapshot restore --dc D --snapshot S`: the DC's processes are stopped and started again from the cut. */
export async function snapshotRestore(
  ctx: Ctx,
  opts: { dc: string | number; snapshot: string; json: boolean },
): Promise<number> {
  const cluster = await requireCluster(ctx.dir());
  const { dc, node } = await dcNode(cluster, opts.dc);
  const r = (await callOn(node, 'snapshot.restore', { dc: dc.id, snapshot: opts.snapshot })) as RestoreResult;
  return restored(ctx, 'restored', r, opts.json);
}

/** `dvs snapshot fork --snapshot S --as NEWDC`: a new DC started from the cut. */
export async function snapshotFork(
  ctx: Ctx,
  opts: { snapshot: string; as: string; json: boolean },
): Promise<number> {
  const cluster = await requireCluster(ctx.dir());
  const r = (await callAny(cluster, 'snapshot.fork', {
    snapshot: opts.snapshot,
    as: opts.as,
  })) as RestoreResult;
  return restored(ctx, 'forked', r, opts.json);
}
