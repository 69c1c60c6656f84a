/**
 * `dvs lock ls` and `dvs kv get|put|rm|ls`: the DVK services of a DC as an operator sees them. They need a
 * cluster store (`dvs up` starts one by default); any node answers for the whole cluster, so each command
 * goes to the first node whose socket answers, naming the DC (`--dc`).
 *
 * Values are bytes: `kv get` prints them raw, `--json` shows them as UTF-8 text (`value`, null if they are
 * not valid UTF-8) and base64 (`base64`).
 */

import { kvRow, utf8Text } from '../../node/json.js';
import type { AdminClient } from '../../sdk/admin.js';
import { KvClient, type ServiceCaller } from '../../sdk/services.js';
import type { LockInfo } from '../../services/lock.js';
import {
  CALL_TIMEOUT_MS,
  type ClusterFileOnDisk,
  connectNode,
  firstAnswering,
  requireCluster,
} from '../cluster.js';
import type { Ctx } from '../context.js';

/** Options every service command takes. */
export interface SvcOptions {
  dc: string | number;
  json: boolean;
}

/** `dvs lock ls --dc D`: every held lock of the DC, its holder, token and waiters in queue order. */
export async function lockList(ctx: Ctx, opts: SvcOptions): Promise<number> {
  const locks = (await withAnyNode(ctx, (c) => c.service('lock.ls', { dc: opts.dc }))) as LockInfo[];
  const { out } = ctx;
  if (opts.json) {
    out.json({ dc: opts.dc, locks });
    return 0;
  }
  if (locks.length === 0) {
    out.line(`no locks held in DC ${opts.dc}`);
    return 0;
  }
  out.table(
    ['LOCK', 'HOLDER', 'TOKEN', 'WAITERS'],
    locks.map((l) => [
      l.name,
      l.holder.owner,
      l.holder.token,
      l.waiters.map((w) => w.owner).join(' ') || '-',
    ]),
  );
  return 0;
}

/** `dvs kv get KEY --dc D`: the value (raw bytes), or the entry as JSON. */
export async function kvGet(ctx: Ctx, key: string, opts: SvcOptions): Promise<number> {
  const e = await withAnyNode(ctx, (c) => new KvClient(c, { dc: opts.dc }).get(key));
  if (opts.json) ctx.out.json(kvRow(e));
  else {
    ctx.out.raw(e.value);
    // A trailing newline for text, so the shell prompt starts on its own line; bytes are left as they are.
    if (utf8Text(e.value) !== null && !utf8Text(e.value)!.endsWith('\n')) ctx.out.line();
  }
  return 0;
}

/** `dvs kv put KEY VALUE --dc D`. */
export async function kvPut(ctx: Ctx, key: string, value: string, opts: SvcOptions): Promise<number> {
  const r = await withAnyNode(ctx, (c) => new KvClient(c, { dc: opts.dc }).put(key, value));
  if (opts.json) ctx.out.json({ key, revision: r.revision });
  else ctx.out.line(`put ${key} (revision ${r.revision})`);
  return 0;
}

/** `dvs kv rm KEY --dc D`: deleting a key that does not exist is not an error (`deleted: false`). */
export async function kvRemove(ctx: Ctx, key: string, opts: SvcOptions): Promise<number> {
  const r = await withAnyNode(ctx, (c) => new KvClient(c, { dc: opts.dc }).delete(key));
  if (opts.json) ctx.out.json({ key, deleted: r.deleted, revision: r.revision });
  else ctx.out.line(r.deleted ? `deleted ${key} (revision ${r.revision})` : `no key ${key}`);
  return 0;
}

/** `dvs kv ls [PREFIX] --dc D`. */
export async function kvList(
  ctx: Ctx,
  prefix: string | undefined,
  opts: SvcOptions & { limit?: number },
): Promise<number> {
  const r = await withAnyNode(ctx, (c) =>
    new KvClient(c, { dc: opts.dc }).list(
      prefix ?? '',
      opts.limit !== undefined ? { limit: opts.limit } : {},
    ),
  );
  const rows = r.entries.map(kvRow);
  if (opts.json) {
    ctx.out.json({ dc: opts.dc, revision: r.revision, entries: rows });
    return 0;
  }
  if (rows.length === 0) {
    ctx.out.line(`no keys${prefix ? ` under ${prefix}` : ''} in DC ${opts.dc}`);
    return 0;
  }
  ctx.out.table(
    ['KEY', 'VALUE', 'REVISION', 'VERSION'],
    rows.map((e) => [
      e.key,
      e.value === null ? `<${e.base64.length} base64>` : clip(e.value),
      e.revision,
      e.version,
    ]),
  );
  return 0;
}

// ------------------------------------------------------------------------------------------------ internals

function clip(s: string): string {
  const one = s.replace(/\n/g, '\\n');
  return one.length > 60 ? `${one.slice(0, 57)}...` : one;
}

/**
 * Run `fn` with an admin connection to the first node of the cluster that answers (with a store any node
 * answers for the cluster). Errors of a node that answered are final.
 */
async function withAnyNode<T>(ctx: Ctx, fn: (c: ServiceCaller) => Promise<T>): Promise<T> {
  const cluster: ClusterFileOnDisk = await requireCluster(ctx.dir());
  return firstAnswering(cluster, async (node) => {
    const c = await connectNode(node);
    try {
      return await fn(withTimeout(c));
    } finally {
      await c.close().catch(() => {});
    }
  });
}

/** The connection as the SDK wrappers use it, every call with the CLI's default timeout. */
function withTimeout(c: AdminClient): ServiceCaller {
  return {
    service: (method, params, opts = {}) => c.service(method, params, { timeout: CALL_TIMEOUT_MS, ...opts }),
    subscribe: (fn) => c.subscribe(fn),
    unsubscribe: (sub) => c.unsubscribe(sub),
  };
}
