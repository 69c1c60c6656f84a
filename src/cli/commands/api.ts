/**
 * `dvs api`, `dvs dashboard` and `dvs events`: the REST API's address and token for scripts, the
 * dashboard link, and the nodes' event logs (docs/api.md).
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { readTokenFile } from '../../api/auth.js';
import type { NodeEvent } from '../../protocol/admin.js';
import { dvsError } from '../../protocol/errors.js';
import { type ClusterFileOnDisk, callEach, nodeById, requireCluster, sleep } from '../cluster.js';
import { type Ctx, dirHint, interruptSignal } from '../context.js';
import { apiTokenPath } from './cluster.js';

/** Where a script finds a node's API: `ca` (the CA file to verify it with) only when it serves HTTPS. */
export interface ApiInfo {
  url: string;
  token: string;
  node: number;
  ca?: string;
}

/** URL and token of the local cluster's API on `node` (default: the first node that has one). */
export async function apiInfo(ctx: Ctx, node?: number): Promise<ApiInfo> {
  const cluster = await requireCluster(ctx.dir());
  const n = node === undefined ? cluster.nodes.find((x) => x.api !== undefined) : nodeById(cluster, node);
  if (n?.api === undefined) {
    throw dvsError(
      'ENOENT',
      `no node of the cluster in ${ctx.dir()} serves the API (start it with a newer dvs up)`,
    );
  }
  const token = await readTokenFile(apiTokenPath(ctx.dir()));
  return n.apiCa === undefined
    ? { url: `http://${n.api}`, token, node: n.id }
    : { url: `https://${n.api}`, token, node: n.id, ca: n.apiCa };
}

/** `dvs api [--json]`: `{url, token, node, ca?}`, or the same for people with a curl line to try. */
export async function api(ctx: Ctx, opts: { json: boolean; node?: number }): Promise<number> {
  const info = await apiInfo(ctx, opts.node);
  if (opts.json) ctx.out.json(info);
  else {
    ctx.out.line(`${info.url}/api/v1  (node ${info.node}${info.ca !== undefined ? ', HTTPS' : ''})`);
    ctx.out.line(`token: ${info.token}`);
    if (info.ca !== undefined) ctx.out.line(`CA:    ${info.ca}`);
    ctx.out.line(`try: ${curlLine(info, `$(dvs api${dirHint(ctx)} --json | jq -r .token)`)}`);
  }
  return 0;
}

/** The curl command that reads `/api/v1/cluster` (pure; exported for tests). */
export function curlLine(info: ApiInfo, token: string): string {
  const cacert = info.ca !== undefined ? `--cacert "${info.ca}" ` : '';
  return `curl ${cacert}-H "Authorization: Bearer ${token}" "${info.url}/api/v1/cluster"`;
}

/** The first `xdg-open` on PATH, if any. */
function findOnPath(name: string, env: NodeJS.ProcessEnv): string | undefined {
  for (const d of (env.PATH ?? '').split(delimiter)) {
    if (d && existsSync(join(d, name))) return join(d, name);
  }
  return undefined;
}

/** `dvs dashboard [--open]`: the dashboard URL with the token in the fragment (never sent to a server). */
export async function dashboard(ctx: Ctx, opts: { open: boolean; node?: number }): Promise<number> {
  const info = await apiInfo(ctx, opts.node);
  const url = `${info.url}/#token=${info.token}`;
  ctx.out.line(url);
  if (info.ca !== undefined) {
    // The browser does not know the cluster CA: it warns until the CA is imported (or the API is HTTP).
    ctx.out.note(
      `the dashboard is HTTPS with the cluster's own CA: import ${info.ca} into the browser as a trusted authority`,
    );
  }
  if (opts.open) {
    const opener = findOnPath('xdg-open', ctx.out.io.env);
    if (opener === undefined) {
      ctx.out.note('xdg-open is not installed; open the URL above in a browser');
      return 0;
    }
    const child = spawn(opener, [url], { detached: true, stdio: 'ignore' });
    child.once('error', () => ctx.out.note('xdg-open failed; open the URL above in a browser'));
    child.unref();
  }
  return 0;
}

function eventLine(e: NodeEvent): string[] {
  const detail = Object.entries(e.detail)
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(' ');
  return [new Date(e.time).toISOString(), String(e.node), e.kind, e.subject, detail];
}

/**
 * `dvs events [--follow] [--json]`: every reachable node's event log merged by time. With --follow, new
 * events as they come (polled), until Ctrl-C; --json then prints one JSON object per line.
 */
export async function events(
  ctx: Ctx,
  opts: { follow: boolean; json: boolean; node?: number; limit?: number },
): Promise<number> {
  const cluster: ClusterFileOnDisk = await requireCluster(ctx.dir());
  const nodes = opts.node === undefined ? cluster.nodes : [nodeById(cluster, opts.node)];
  const since = new Map<number, number>();
  const fetchNew = async (): Promise<NodeEvent[]> => {
    const answers = await Promise.all(
      nodes.map(async (n) => {
        const [a] = await callEach([n], 'events.list', { since: since.get(n.id) ?? 0 }, 2000);
        return a!;
      }),
    );
    const got: NodeEvent[] = [];
    for (const a of answers) {
      if (!a.ok) continue;
      // A restarted daemon numbers from 1 again: start over when its last seq went backwards.
      if (a.value.last < (since.get(a.node.id) ?? 0)) since.set(a.node.id, 0);
      if (a.value.events.length > 0) since.set(a.node.id, a.value.events.at(-1)!.seq);
      got.push(...a.value.events);
    }
    return got.sort((x, y) => x.time - y.time || x.node - y.node || x.seq - y.seq);
  };
  const first = await fetchNew();
  const shown = opts.limit === undefined ? first : first.slice(-opts.limit);
  const { out } = ctx;
  if (!opts.follow) {
    if (opts.json) out.json({ events: shown });
    else if (shown.length === 0) out.line('no events');
    else out.table(['TIME', 'NODE', 'KIND', 'SUBJECT', 'DETAIL'], shown.map(eventLine));
    return 0;
  }
  const print = (list: NodeEvent[]) => {
    for (const e of list) out.line(opts.json ? JSON.stringify(e) : eventLine(e).join('  '));
  };
  print(shown);
  const interrupt = interruptSignal();
  try {
    while (!interrupt.signal.aborted) {
      await sleep(500, interrupt.signal);
      if (interrupt.signal.aborted) break;
      print(await fetchNew());
    }
  } finally {
    interrupt.dispose();
  }
  return 0;
}
