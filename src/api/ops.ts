/**
 * Cluster-wide operations of the REST API, over the admin methods of every node the API can reach. They
 * follow the CLI (src/cli/commands/): a DC is created on every node of it (or written once to the cluster
 * store, when the nodes run with one), lists are merged across nodes, a process is run on the DC's lowest
 * node unless told otherwise, and killed on the node that runs it.
 */

import { nextFreeAddress, validateLanPrefix } from '../isolation/addr.js';
import { parseLimit } from '../isolation/limits.js';
import {
  type DcConfig,
  DEFAULT_MAX_PAYLOAD,
  DEFAULT_POST_WINDOW,
  DEFAULT_SYS_ENDPOINTS,
  type EndpointInfo,
  type NodeId,
} from '../kernel/types.js';
import { jsonSafe, kvRow } from '../node/json.js';
import { type BalancePlan, planBalance } from '../node/scheduler.js';
import {
  type ClusterView,
  type DcRow,
  type GroupListAnswer,
  type GroupRowView,
  type KvRow,
  mergeGroups,
  type NodeRow,
  type PerNodeView,
} from '../node/views.js';
import type {
  AdminMethod,
  AdminMethods,
  DcIsolationInfo,
  DcIsolationSpec,
  DcLimitsText,
  DcStatsInfo,
  ExecInfo,
  MigrationResult,
  NodeEvent,
  NodeStatus,
  ProcessInfo,
} from '../protocol/admin.js';
import { DvsError, dvsError, type ErrorCode } from '../protocol/errors.js';
import type { AdminCaller, ApiNodes } from './caller.js';

/** How long a snapshot create / restore / fork may take as seen from the API (the daemon has its own). */
const SNAPSHOT_TIMEOUT_MS = 120_000;

type Answer<T> = { node: NodeId; ok: true; value: T } | { node: NodeId; ok: false; error: DvsError };

/**
 * Check limits as the daemons will (parseLimit is pure), so a bad one is a 400 naming its field before
 * anything is created or changed. Node capacity checks stay with the daemons.
 */
export function checkLimits(limits: DcLimitsText, prefix = 'limits'): void {
  for (const [k, v] of Object.entries(limits)) {
    if (v === undefined) continue;
    try {
      parseLimit(k, v);
    } catch (e) {
      const err = DvsError.from(e);
      throw dvsError('EINVAL', `body field '${prefix}.${k}' ${err.message}`, {
        field: `${prefix}.${k}`,
        reason: err.message,
      });
    }
  }
}

/** The row of a node the API could not ask: what is known of it from links, members or a failed call. */
function unreachableRow(
  known: Pick<NodeRow, 'id' | 'name' | 'state' | 'address' | 'self'> & { error?: string },
): NodeRow {
  return {
    ...known,
    reachable: false,
    pid: null,
    uptimeMs: null,
    version: null,
    dcs: null,
    endpoints: null,
    links: [],
    messages: null,
  };
}

export class ClusterOps {
  constructor(
    private readonly nodes: ApiNodes,
    /** Per-node timeout of one admin call, ms. */
    private readonly timeoutMs = 5000,
  ) {}

  get self(): NodeId {
    return this.nodes.self;
  }

  /** Ids of every node this API can ask (self first). */
  reachableIds(): NodeId[] {
    return [this.nodes.self, ...this.nodes.peerIds()];
  }

  /** One admin call on node `node` (ENOENT if the API cannot reach that node). */
  async callOn<M extends AdminMethod>(
    node: NodeId,
    method: M,
    params: AdminMethods[M]['params'],
    signal: AbortSignal,
    timeoutMs = this.timeoutMs,
  ): Promise<AdminMethods[M]['result']> {
    const caller: AdminCaller | undefined = this.nodes.peer(node);
    if (caller === undefined) {
      throw dvsError(
        'ENOENT',
        `node ${node} is not known to this API (known: ${this.reachableIds().join(',')})`,
        {
          node,
        },
      );
    }
    const s = AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]);
    try {
      return await caller.call(method, params, s);
    } catch (e) {
      const err = DvsError.from(e);
      if (err.code === 'EABORTED' && !signal.aborted) {
        throw dvsError('ETIMEDOUT', `node ${node} did not answer ${method} within ${timeoutMs} ms`, { node });
      }
      throw err;
    }
  }

  /** `method` on each of `ids` in parallel; never throws (failures are per node). */
  async each<M extends AdminMethod>(
    ids: NodeId[],
    method: M,
    params: AdminMethods[M]['params'],
    signal: AbortSignal,
  ): Promise<Answer<AdminMethods[M]['result']>[]> {
    return Promise.all(
      ids.map(async (node): Promise<Answer<AdminMethods[M]['result']>> => {
        try {
          return { node, ok: true, value: await this.callOn(node, method, params, signal) };
        } catch (e) {
          return { node, ok: false, error: DvsError.from(e) };
        }
      }),
    );
  }

  /** This node's status (it knows whether a store is in use and who its peers are). */
  localStatus(signal: AbortSignal): Promise<NodeStatus> {
    return this.callOn(this.nodes.self, 'status', {}, signal);
  }

  /** Every node: the reachable ones with their own status, the others as this node's links see them. */
  async nodeRows(signal: AbortSignal, withMessages = true): Promise<NodeRow[]> {
    const ids = this.reachableIds();
    const answers = await this.each(ids, 'status', {}, signal);
    const rows = new Map<NodeId, NodeRow>();
    const statuses: NodeStatus[] = [];
    for (const a of answers) {
      if (a.ok) {
        statuses.push(a.value);
        rows.set(a.node, {
          id: a.value.id,
          name: a.value.name,
          state: 'up',
          address: a.value.address,
          reachable: true,
          self: a.node === this.nodes.self,
          pid: a.value.pid,
          uptimeMs: a.value.uptimeMs,
          version: a.value.version,
          dcs: a.value.dcs,
          endpoints: a.value.endpoints,
          links: a.value.links,
          messages: null,
          ...(a.value.load !== undefined ? { load: a.value.load } : {}),
        });
      }
    }
    // Nodes known only through links or the store membership: state from what the reachable nodes see.
    const seen = new Map<NodeId, { name: string; address: string; up: boolean }>();
    for (const s of statuses) {
      for (const l of s.links) {
        const prev = seen.get(l.node);
        seen.set(l.node, { name: l.name, address: l.address, up: (prev?.up ?? false) || l.state === 'up' });
      }
      for (const m of s.cluster?.members ?? []) {
        const prev = seen.get(m.id);
        seen.set(m.id, { name: m.name, address: m.address, up: (prev?.up ?? false) || m.state === 'up' });
      }
    }
    for (const [id, v] of seen) {
      if (rows.has(id)) continue;
      const failed = answers.find((a) => a.node === id && !a.ok);
      rows.set(
        id,
        unreachableRow({
          id,
          name: v.name,
          // A peer whose API did not answer is down even if a link still looks up (its daemon may be wedged).
          state: v.up && failed === undefined ? 'up' : 'down',
          address: v.address,
          self: false,
          ...(failed && !failed.ok ? { error: failed.error.message } : {}),
        }),
      );
    }
    for (const a of answers) {
      if (!a.ok && !rows.has(a.node)) {
        rows.set(
          a.node,
          unreachableRow({
            id: a.node,
            name: `node${a.node}`,
            state: 'down',
            address: '',
            self: a.node === this.nodes.self,
            error: a.error.message,
          }),
        );
      }
    }
    if (withMessages) {
      await Promise.all(
        [...rows.values()]
          .filter((r) => r.reachable)
          .map(async (r) => {
            r.messages = await this.messagesOf(r.id, signal).catch(() => null);
          }),
      );
    }
    return [...rows.values()].sort((a, b) => a.id - b.id);
  }

  /** Message counters of node `id`'s local endpoints, summed over its DCs. */
  private async messagesOf(id: NodeId, signal: AbortSignal): Promise<{ sent: number; received: number }> {
    const dcs = await this.callOn(id, 'dc.list', {}, signal);
    const sum = { sent: 0, received: 0 };
    for (const dc of dcs) {
      for (const e of await this.callOn(id, 'ep.list', { dc: dc.id }, signal)) {
        if (e.kind === 'remote' || e.node !== id) continue;
        sum.sent += e.counters.lclSent + e.counters.rmtSent;
        sum.received += e.counters.received;
      }
    }
    return sum;
  }

  /** `GET /cluster`: nodes, DCs and totals. */
  async cluster(signal: AbortSignal): Promise<ClusterView> {
    const [nodes, st, dcs] = await Promise.all([
      this.nodeRows(signal),
      this.localStatus(signal),
      this.dcs(signal),
    ]);
    const messages = { sent: 0, received: 0 };
    for (const n of nodes) {
      messages.sent += n.messages?.sent ?? 0;
      messages.received += n.messages?.received ?? 0;
    }
    return {
      self: this.nodes.self,
      time: Date.now(),
      store: st.cluster
        ? {
            name: st.cluster.store,
            degraded: st.cluster.degraded,
            ...(st.cluster.reason !== undefined ? { reason: st.cluster.reason } : {}),
          }
        : null,
      nodes,
      dcs,
      messages,
    };
  }

  /** DCs known by the reachable nodes, merged by id, with their bound endpoint count. */
  async dcs(signal: AbortSignal): Promise<DcRow[]> {
    const answers = await this.each(this.reachableIds(), 'dc.list', {}, signal);
    const dcs = new Map<number, DcRow>();
    for (const a of answers) {
      if (!a.ok) continue;
      for (const cfg of a.value) {
        const row = dcs.get(cfg.id) ?? { ...cfg, on: [], endpoints: 0 };
        row.on.push(a.node);
        dcs.set(cfg.id, row);
      }
    }
    const rows = [...dcs.values()].sort((a, b) => a.id - b.id);
    await Promise.all(
      rows.map(async (r) => {
        r.endpoints = (await this.endpoints(r, signal)).length;
      }),
    );
    return rows;
  }

  /** The DC named or numbered `ref`; ENOENT if no reachable node has it. */
  async dc(ref: string | number, signal: AbortSignal): Promise<DcRow> {
    const want = typeof ref === 'string' && /^\d+$/.test(ref) ? Number(ref) : ref;
    const hit = (await this.dcs(signal)).find((d) => d.name === want || d.id === want);
    if (hit === undefined) throw dvsError('ENOENT', `no DC '${ref}' in this cluster`, { dc: ref });
    return hit;
  }

  /** Create a DC: once in the store, or on every node of it (undone if one fails), like `dvs dc create`. */
  async createDc(
    req: {
      name: string;
      nodes?: NodeId[];
      id?: number;
      maxPayload?: number;
      sysEndpoints?: number;
      postWindow?: number;
      limits?: DcLimitsText;
      lan?: string;
    },
    signal: AbortSignal,
  ): Promise<DcConfig> {
    if (req.limits !== undefined) checkLimits(req.limits);
    const limits = req.limits !== undefined && Object.keys(req.limits).length > 0 ? req.limits : undefined;
    const st = await this.localStatus(signal);
    const known = new Set<NodeId>([
      st.id,
      ...st.links.map((l) => l.node),
      ...(st.cluster?.members.map((m) => m.id) ?? []),
    ]);
    const nodes = req.nodes ?? [...known].sort((a, b) => a - b);
    for (const n of nodes) {
      if (!known.has(n))
        throw dvsError('EINVAL', `node ${n} is not in this cluster (nodes: ${[...known].join(',')})`);
    }
    const base = {
      name: req.name,
      nodes,
      maxPayload: req.maxPayload ?? DEFAULT_MAX_PAYLOAD,
      sysEndpoints: req.sysEndpoints ?? DEFAULT_SYS_ENDPOINTS,
      postWindow: req.postWindow ?? DEFAULT_POST_WINDOW,
    };
    if (st.cluster) {
      // The nodes keep limits and the LAN prefix in the store and claim their LAN addresses there.
      const isolation: DcIsolationSpec | undefined =
        limits !== undefined || req.lan !== undefined
          ? { ...(limits ? { limits } : {}), ...(req.lan !== undefined ? { lan: { prefix: req.lan } } : {}) }
          : undefined;
      return this.callOn(
        st.id,
        'dc.create',
        { config: { id: req.id ?? 0, ...base }, ...(isolation ? { isolation } : {}) },
        signal,
        30_000,
      );
    }
    const existing = await this.dcs(signal);
    for (const d of existing) {
      if (d.name === req.name)
        throw dvsError('EEXIST', `a DC named '${req.name}' already exists (id ${d.id})`);
      if (req.id !== undefined && d.id === req.id)
        throw dvsError('EEXIST', `DC id ${req.id} is taken by '${d.name}'`);
    }
    const unreachable = nodes.filter((n) => this.nodes.peer(n) === undefined);
    if (unreachable.length > 0) {
      throw dvsError(
        'ENOTCONN',
        `without a cluster store this API can create a DC only on nodes it reaches (not ${unreachable.join(',')})`,
      );
    }
    const config: DcConfig = { id: req.id ?? Math.max(0, ...existing.map((d) => d.id)) + 1, ...base };
    // The LAN: refused before anything exists if it overlaps another DC's; one address per node.
    const addresses = new Map<NodeId, string>();
    if (req.lan !== undefined) {
      const others: Record<string, string> = {};
      for (const d of existing) {
        const holder = d.on.find((n) => this.nodes.peer(n) !== undefined);
        if (holder === undefined) continue;
        const info = await this.callOn(holder, 'dc.isolation', { dc: d.id }, signal).catch(() => undefined);
        if (info?.lan) others[d.name] = info.lan.prefix;
      }
      try {
        validateLanPrefix(req.lan, others);
      } catch (e) {
        const err = DvsError.from(e);
        throw dvsError(err.code, err.message, { field: 'lan', reason: err.message });
      }
      for (const id of [...nodes].sort((a, b) => a - b))
        addresses.set(id, nextFreeAddress(req.lan, addresses.values()));
    }
    const results = await Promise.all(
      nodes.map(async (node): Promise<Answer<DcConfig>> => {
        const address = addresses.get(node);
        const isolation: DcIsolationSpec | undefined =
          limits !== undefined || req.lan !== undefined
            ? {
                ...(limits ? { limits } : {}),
                ...(req.lan !== undefined && address !== undefined
                  ? { lan: { prefix: req.lan, address } }
                  : {}),
              }
            : undefined;
        try {
          // dc.create may build a container and a LAN on the node: allow it more than a plain call.
          const value = await this.callOn(
            node,
            'dc.create',
            { config, ...(isolation ? { isolation } : {}) },
            signal,
            30_000,
          );
          return { node, ok: true, value };
        } catch (e) {
          return { node, ok: false, error: DvsError.from(e) };
        }
      }),
    );
    const failed = results.find((r) => !r.ok);
    if (failed && !failed.ok) {
      const created = results.filter((r) => r.ok).map((r) => r.node);
      await this.each(created, 'dc.remove', { dc: config.id }, signal);
      throw new DvsError(
        failed.error.code,
        `creating DC '${req.name}' failed on node ${failed.node}: ${failed.error.message}`,
        {
          node: failed.node,
        },
      );
    }
    if (req.lan !== undefined) {
      // Every node learns where the other containers are (static forwarding: no learning, no flooding).
      const infos = await this.each(nodes, 'dc.isolation', { dc: config.id }, signal);
      const members = infos.flatMap((i) => (i.ok && i.value.lan ? [i.value.lan] : []));
      const pushed = await this.each(nodes, 'dc.lanPeers', { dc: config.id, members }, signal);
      const bad = [...infos, ...pushed].find((r) => !r.ok);
      if (bad && !bad.ok) {
        await this.each(nodes, 'dc.remove', { dc: config.id }, signal);
        throw new DvsError(
          bad.error.code,
          `setting up the LAN of DC '${req.name}' failed on node ${bad.node}: ${bad.error.message}`,
          { node: bad.node },
        );
      }
    }
    return config;
  }

  /** Remove a DC everywhere; returns the pids that were stopped. */
  async removeDc(
    ref: string | number,
    signal: AbortSignal,
  ): Promise<{ dc: number; name: string; killed: number[] }> {
    const dc = await this.dc(ref, signal);
    const st = await this.localStatus(signal);
    if (st.cluster) {
      const r = await this.callOn(st.id, 'dc.remove', { dc: dc.id }, signal);
      return { dc: dc.id, name: dc.name, killed: r.killed };
    }
    const results = await this.each(dc.on, 'dc.remove', { dc: dc.id }, signal);
    const failed = results.find((r) => !r.ok);
    if (failed && !failed.ok) {
      throw new DvsError(
        failed.error.code,
        `removing DC on node ${failed.node} failed: ${failed.error.message}`,
      );
    }
    return { dc: dc.id, name: dc.name, killed: results.flatMap((r) => (r.ok ? r.value.killed : [])) };
  }

  /** Add or remove a node of a DC (needs a cluster store, as `dvs dc add-node|rm-node`). */
  async dcNode(
    what: 'add' | 'rm',
    ref: string | number,
    node: NodeId,
    signal: AbortSignal,
  ): Promise<DcConfig> {
    return this.callOn(
      this.nodes.self,
      what === 'add' ? 'dc.addNode' : 'dc.rmNode',
      { dc: ref, node },
      signal,
    );
  }

  /** Set a DC's nodes to `nodes` (adds, then removes; needs a cluster store). */
  async setDcNodes(ref: string | number, nodes: NodeId[], signal: AbortSignal): Promise<DcConfig> {
    const dc = await this.dc(ref, signal);
    let cfg: DcConfig = dc;
    for (const n of nodes) if (!cfg.nodes.includes(n)) cfg = await this.dcNode('add', dc.id, n, signal);
    for (const n of dc.nodes) if (!nodes.includes(n)) cfg = await this.dcNode('rm', dc.id, n, signal);
    const { on: _on, endpoints: _e, ...plain } = cfg as DcRow;
    return plain;
  }

  /** The DC's endpoint table merged across its nodes (each node's own rows, as `dvs ep ls`). */
  async endpoints(dc: DcRow, signal: AbortSignal): Promise<EndpointInfo[]> {
    const holders = dc.on.filter((n) => this.nodes.peer(n) !== undefined);
    const answers = await this.each(holders, 'ep.list', { dc: dc.id }, signal);
    const rows: EndpointInfo[] = [];
    const remote = new Map<number, EndpointInfo>();
    for (const a of answers) {
      if (!a.ok) continue;
      for (const r of a.value) {
        if (r.kind !== 'remote' && r.node === a.node) rows.push(r);
        else if (!holders.includes(r.node)) remote.set(r.ep, r);
      }
    }
    // Endpoints on nodes this API cannot ask are still listed, as the reachable nodes know them.
    for (const r of remote.values()) if (!rows.some((x) => x.ep === r.ep)) rows.push(r);
    return rows.sort((a, b) => a.ep - b.ep || a.node - b.node);
  }

  /** Processes started by `dvs run` (or the API) on the reachable nodes, optionally of one DC. */
  async processes(dc: DcRow | undefined, signal: AbortSignal): Promise<ProcessInfo[]> {
    const ids = dc ? dc.on.filter((n) => this.nodes.peer(n) !== undefined) : this.reachableIds();
    const answers = await this.each(ids, 'proc.list', dc ? { dc: dc.id } : {}, signal);
    return answers
      .flatMap((a) => (a.ok ? a.value : []))
      .sort((a, b) => a.dc - b.dc || a.ep - b.ep || a.startedAt - b.startedAt);
  }

  /** The node that runs (or last ran) endpoint `ep` of `dc`. */
  async findProcess(dc: DcRow, ep: number, signal: AbortSignal): Promise<ProcessInfo> {
    let best: ProcessInfo | undefined;
    for (const p of await this.processes(dc, signal)) {
      if (p.ep !== ep) continue;
      const better =
        best === undefined ||
        (best.exit !== null && p.exit === null) ||
        ((best.exit === null) === (p.exit === null) && p.startedAt > best.startedAt);
      if (better) best = p;
    }
    if (best === undefined) {
      throw dvsError('ENOENT', `no process was started at endpoint ${ep} of DC '${dc.name}'`, {
        dc: dc.id,
        ep,
      });
    }
    return best;
  }

  /** Run a process (on `node`, default the DC's lowest node). */
  async run(
    dc: DcRow,
    req: {
      ep: number;
      cmd: string[];
      node?: NodeId;
      name?: string;
      env?: Record<string, string>;
      cwd?: string;
    },
    signal: AbortSignal,
  ): Promise<ProcessInfo> {
    const node = req.node ?? Math.min(...dc.nodes);
    if (!dc.nodes.includes(node)) {
      throw dvsError(
        'EINVAL',
        `DC '${dc.name}' does not span node ${node} (its nodes: ${dc.nodes.join(',')})`,
      );
    }
    return this.callOn(
      node,
      'proc.run',
      {
        dc: dc.id,
        ep: req.ep,
        cmd: req.cmd,
        ...(req.name !== undefined ? { name: req.name } : {}),
        ...(req.env !== undefined ? { env: req.env } : {}),
        ...(req.cwd !== undefined ? { cwd: req.cwd } : {}),
      },
      signal,
      20_000,
    );
  }

  /** Signal the process of `ep` where it runs. */
  async kill(
    dc: DcRow,
    ep: number,
    req: { signal?: string; graceMs?: number },
    signal: AbortSignal,
  ): Promise<ProcessInfo> {
    const p = await this.findProcess(dc, ep, signal);
    if (p.exit !== null) {
      throw dvsError('ENOENT', `the process at endpoint ${ep} of DC '${dc.name}' already exited`, {
        dc: dc.id,
        ep,
      });
    }
    const graceMs = req.graceMs ?? 3000;
    return this.callOn(
      p.node,
      'proc.kill',
      { dc: dc.id, ep, graceMs, ...(req.signal !== undefined ? { signal: req.signal } : {}) },
      signal,
      graceMs + 10_000,
    );
  }

  /** End replicated endpoint `ep` everywhere, through a node that runs one of its replicas. */
  async killGroup(
    dc: DcRow,
    ep: number,
    req: { signal?: string; graceMs?: number },
    signal: AbortSignal,
  ): Promise<AdminMethods['proc.killGroup']['result']> {
    const p = await this.findProcess(dc, ep, signal);
    const graceMs = req.graceMs ?? 3000;
    return this.callOn(
      p.node,
      'proc.killGroup',
      { dc: dc.id, ep, graceMs, ...(req.signal !== undefined ? { signal: req.signal } : {}) },
      signal,
      graceMs + 15_000,
    );
  }

  /** Live-migrate the endpoint `ep` (and its process) to node `to` (src/node/migration.ts). */
  async migrate(dc: DcRow, ep: number, to: NodeId, signal: AbortSignal): Promise<MigrationResult> {
    const p = await this.findProcess(dc, ep, signal);
    if (p.exit !== null) {
      throw dvsError('ENOENT', `the process at endpoint ${ep} of DC '${dc.name}' already exited`, {
        dc: dc.id,
        ep,
      });
    }
    return this.callOn(p.node, 'proc.migrate', { dc: dc.id, ep, to }, signal, 60_000);
  }

  /** Read a process's output log where it runs. */
  async logs(
    dc: DcRow,
    ep: number,
    req: { offset: number; max?: number },
    signal: AbortSignal,
  ): Promise<{ node: NodeId; data: string; offset: number; running: boolean }> {
    const p = await this.findProcess(dc, ep, signal);
    const r = await this.callOn(
      p.node,
      'logs.read',
      { dc: dc.id, ep, offset: req.offset, ...(req.max !== undefined ? { max: req.max } : {}) },
      signal,
    );
    return { node: p.node, data: Buffer.from(r.data).toString('utf8'), offset: r.offset, running: r.running };
  }

  /** This node's event log. */
  events(
    req: { since?: number; limit?: number },
    signal: AbortSignal,
  ): Promise<{ events: NodeEvent[]; last: number }> {
    return this.callOn(this.nodes.self, 'events.list', req, signal);
  }

  // ------------------------------------------------------------------------------- isolation (dvs dc ...)

  /** The DC's nodes this API can ask (those that reported having it), and the others as unreachable. */
  private dcNodes(dc: DcRow): { ask: NodeId[]; missing: PerNodeView<never>['unreachable'] } {
    const ask = dc.on.filter((n) => this.nodes.peer(n) !== undefined).sort((a, b) => a - b);
    const missing = dc.nodes
      .filter((n) => !ask.includes(n))
      .map((node) => ({
        node,
        code: 'ENOTCONN',
        message: `node ${node} does not answer for DC '${dc.name}'`,
      }));
    return { ask, missing };
  }

  /** `method` on every node of the DC; failures are listed per node (reads: `dvs dc stats|show`). */
  private async perNode<T>(dc: DcRow, call: (node: NodeId) => Promise<T>): Promise<PerNodeView<T>> {
    const { ask, missing } = this.dcNodes(dc);
    const answers = await Promise.all(
      ask.map(async (node): Promise<Answer<T>> => {
        try {
          return { node, ok: true, value: await call(node) };
        } catch (e) {
          return { node, ok: false, error: DvsError.from(e) };
        }
      }),
    );
    return {
      dc: dc.name,
      dcId: dc.id,
      nodes: answers.flatMap((a) => (a.ok ? [a.value] : [])),
      unreachable: [
        ...missing,
        ...answers.flatMap((a) =>
          a.ok ? [] : [{ node: a.node, code: a.error.code, message: a.error.message }],
        ),
      ].sort((a, b) => a.node - b.node),
    };
  }

  /** The first failure of a change made on every node of a DC, thrown with the node named. */
  private static throwFirst<T>(v: PerNodeView<T>, what: string): PerNodeView<T> {
    const f = v.unreachable[0];
    if (f !== undefined) {
      const code = (f.code as ErrorCode | undefined) ?? 'EINTERNAL';
      throw dvsError(code, `${what} on node ${f.node}: ${f.message}`, { node: f.node });
    }
    return v;
  }

  /** `dvs dc show`: per node the container, limits and LAN place. */
  isolation(dc: DcRow, signal: AbortSignal): Promise<PerNodeView<DcIsolationInfo>> {
    return this.perNode(dc, (n) => this.callOn(n, 'dc.isolation', { dc: dc.id }, signal));
  }

  /** `dvs dc stats`: per node usage against limits. */
  stats(dc: DcRow, signal: AbortSignal): Promise<PerNodeView<DcStatsInfo>> {
    return this.perNode(dc, (n) => this.callOn(n, 'dc.stats', { dc: dc.id }, signal));
  }

  /** `dvs dc set`: change limits live on every node of the DC (all must answer). */
  async setLimits(
    dc: DcRow,
    limits: DcLimitsText,
    signal: AbortSignal,
  ): Promise<PerNodeView<DcIsolationInfo>> {
    if (Object.keys(limits).length === 0) {
      throw dvsError('EINVAL', 'nothing to set: give memory, cpus, pids, io-bps or net-bps', {
        field: 'body',
        reason: 'needs at least one limit',
      });
    }
    checkLimits(limits, 'limits');
    const v = await this.perNode(dc, (n) => this.callOn(n, 'dc.set', { dc: dc.id, limits }, signal, 15_000));
    return ClusterOps.throwFirst(v, `setting limits of DC '${dc.name}'`);
  }

  /** `dvs dc pause|resume`: freeze or thaw every process of the DC on all its nodes. */
  async freeze(
    dc: DcRow,
    what: 'pause' | 'resume',
    signal: AbortSignal,
  ): Promise<{ dc: string; dcId: number; nodes: NodeId[]; state: 'paused' | 'running' }> {
    const v = await this.perNode(dc, async (n) => {
      await this.callOn(n, what === 'pause' ? 'dc.pause' : 'dc.resume', { dc: dc.id }, signal, 15_000);
      return n;
    });
    ClusterOps.throwFirst(v, `${what} of DC '${dc.name}'`);
    return { dc: dc.name, dcId: dc.id, nodes: v.nodes, state: what === 'pause' ? 'paused' : 'running' };
  }

  /** `dvs exec`: a command in the DC's container on `node` (default its lowest node), with its output. */
  async exec(
    dc: DcRow,
    req: {
      cmd: string[];
      node?: NodeId;
      env?: Record<string, string>;
      cwd?: string;
      input?: string;
      timeoutMs?: number;
    },
    signal: AbortSignal,
  ): Promise<ExecInfo & { dc: string; dcId: number; node: NodeId }> {
    const node = req.node ?? Math.min(...dc.nodes);
    if (!dc.nodes.includes(node)) {
      throw dvsError(
        'EINVAL',
        `DC '${dc.name}' does not span node ${node} (its nodes: ${dc.nodes.join(',')})`,
        {
          field: 'node',
          reason: 'not a node of the DC',
        },
      );
    }
    const timeoutMs = req.timeoutMs ?? 30_000;
    const r = await this.callOn(
      node,
      'proc.exec',
      {
        dc: dc.id,
        cmd: req.cmd,
        timeoutMs,
        cwd: req.cwd ?? '/',
        ...(req.env !== undefined ? { env: req.env } : {}),
        ...(req.input !== undefined ? { input: req.input } : {}),
      },
      signal,
      timeoutMs + 5000,
    );
    return { dc: dc.name, dcId: dc.id, node, ...r };
  }

  // --------------------------------------------------------------- DVK services (kv, locks, groups, ...)

  /**
   * A service method (src/node/services.ts) on `node`: the daemon's admin dispatcher falls through to its
   * service table for names it does not serve itself, and `node.call` relays them the same way.
   */
  async service<T>(
    node: NodeId,
    method: string,
    params: Record<string, unknown>,
    signal: AbortSignal,
    timeoutMs = this.timeoutMs,
  ): Promise<T> {
    return (await this.callOn(node, method as AdminMethod, params as never, signal, timeoutMs)) as T;
  }

  /** A node of the DC this API can ask (itself first): DC services are resolved where the DC is known. */
  holder(dc: DcRow): NodeId {
    if (dc.on.includes(this.nodes.self)) return this.nodes.self;
    const n = dc.on.find((id) => this.nodes.peer(id) !== undefined);
    if (n === undefined) throw dvsError('ENOTCONN', `no node of DC '${dc.name}' is reachable from this API`);
    return n;
  }

  /** `dvs lock ls`: held locks, holders, fencing tokens and waiters. */
  async locks(dc: DcRow, signal: AbortSignal): Promise<{ dc: string; dcId: number; locks: unknown[] }> {
    const locks = await this.service<unknown[]>(this.holder(dc), 'lock.ls', { dc: dc.id }, signal);
    return { dc: dc.name, dcId: dc.id, locks };
  }

  /** `dvs kv get`. */
  async kvGet(dc: DcRow, key: string, signal: AbortSignal): Promise<KvRow> {
    return kvRow(await this.service(this.holder(dc), 'kv.get', { dc: dc.id, key }, signal));
  }

  /** `dvs kv put`. */
  kvPut(dc: DcRow, key: string, value: Uint8Array, signal: AbortSignal): Promise<{ revision: number }> {
    return this.service(this.holder(dc), 'kv.put', { dc: dc.id, key, value }, signal);
  }

  /** `dvs kv rm`: a key that does not exist is `deleted: false`, not an error. */
  kvDelete(dc: DcRow, key: string, signal: AbortSignal): Promise<{ deleted: boolean; revision: number }> {
    return this.service(this.holder(dc), 'kv.delete', { dc: dc.id, key }, signal);
  }

  /** `dvs kv ls`. */
  async kvList(
    dc: DcRow,
    req: { prefix?: string; limit?: number },
    signal: AbortSignal,
  ): Promise<{ dc: string; dcId: number; revision: number; entries: KvRow[] }> {
    const r = await this.service<{ entries: Parameters<typeof kvRow>[0][]; revision: number }>(
      this.holder(dc),
      'kv.list',
      { dc: dc.id, prefix: req.prefix ?? '', ...(req.limit !== undefined ? { limit: req.limit } : {}) },
      signal,
    );
    return { dc: dc.name, dcId: dc.id, revision: r.revision, entries: r.entries.map(kvRow) };
  }

  /** `dvs group ls`: every node of the DC asked for its groups, merged. */
  async groups(
    dc: DcRow,
    signal: AbortSignal,
  ): Promise<{
    dc: string;
    dcId: number;
    nodes: Omit<GroupListAnswer, 'groups'>[];
    groups: GroupRowView[];
    unreachable: PerNodeView<never>['unreachable'];
  }> {
    const v = await this.perNode(dc, (n) =>
      this.service<GroupListAnswer>(n, 'group.ls', { dc: dc.id }, signal),
    );
    if (v.nodes.length === 0 && v.unreachable[0] !== undefined) {
      const f = v.unreachable[0];
      throw dvsError(
        (f.code as ErrorCode) ?? 'ENOTCONN',
        `groups of DC '${dc.name}': node ${f.node}: ${f.message}`,
      );
    }
    const lists = v.nodes.sort((a, b) => a.node - b.node);
    return {
      dc: dc.name,
      dcId: dc.id,
      nodes: lists.map(({ groups: _g, ...rest }) => rest),
      groups: mergeGroups(lists),
      unreachable: v.unreachable,
    };
  }

  /** `dvs snapshot create`: driven by a node of the DC. */
  async snapshotCreate(
    dc: DcRow,
    req: { name?: string; timeoutMs?: number },
    signal: AbortSignal,
  ): Promise<unknown> {
    return jsonSafe(
      await this.service(
        this.holder(dc),
        'snapshot.create',
        { dc: dc.id, ...req },
        signal,
        SNAPSHOT_TIMEOUT_MS,
      ),
    );
  }

  /** `dvs snapshot ls`: any node finds the snapshots wherever they are kept. */
  async snapshots(dc: string | undefined, signal: AbortSignal): Promise<unknown[]> {
    return jsonSafe(
      await this.service(this.nodes.self, 'snapshot.ls', dc !== undefined ? { dc } : {}, signal, 30_000),
    ) as unknown[];
  }

  /** `dvs snapshot show`: the cut, states and in-flight payloads in base64. */
  async snapshot(name: string, signal: AbortSignal): Promise<unknown> {
    return jsonSafe(await this.service(this.nodes.self, 'snapshot.show', { name }, signal, 30_000));
  }

  /** `dvs snapshot rm`. */
  async snapshotRemove(name: string, signal: AbortSignal): Promise<unknown> {
    return jsonSafe(await this.service(this.nodes.self, 'snapshot.rm', { name }, signal, 30_000));
  }

  /** `dvs snapshot restore`: the DC's processes stopped and started again from the cut. */
  async snapshotRestore(dc: DcRow, snapshot: string, signal: AbortSignal): Promise<unknown> {
    return jsonSafe(
      await this.service(
        this.holder(dc),
        'snapshot.restore',
        { dc: dc.id, snapshot },
        signal,
        SNAPSHOT_TIMEOUT_MS,
      ),
    );
  }

  /** `dvs snapshot fork`: a new DC started from the cut. */
  async snapshotFork(name: string, as: string, signal: AbortSignal): Promise<unknown> {
    return jsonSafe(
      await this.service(
        this.nodes.self,
        'snapshot.fork',
        { snapshot: name, as },
        signal,
        SNAPSHOT_TIMEOUT_MS,
      ),
    );
  }

  /** Node `node`'s event log (any node this API reaches). */
  nodeEvents(
    node: NodeId,
    req: { since?: number; limit?: number },
    signal: AbortSignal,
  ): Promise<{ events: NodeEvent[]; last: number }> {
    return this.callOn(node, 'events.list', req, signal);
  }

  // ------------------------------------------------------------------------------------ scheduling

  /**
   * `dvs balance`: the migrations that even out the load of the DC's nodes (the pure policy of
   * src/node/scheduler.ts over the load each node reports in its status); with `apply`, performed one by
   * one through `proc.migrate`. A node that does not answer is left out of the plan and listed.
   */
  async balance(
    dc: DcRow,
    req: { apply?: boolean; maxMoves?: number },
    signal: AbortSignal,
  ): Promise<
    BalancePlan & {
      dc: string;
      dcId: number;
      unreachable: NodeId[];
      applied?: {
        ep: number;
        from: NodeId;
        to: NodeId;
        ok: boolean;
        error?: string;
        result?: MigrationResult;
      }[];
    }
  > {
    const answers = await this.each(
      dc.nodes.filter((n) => this.nodes.peer(n) !== undefined),
      'status',
      {},
      signal,
    );
    const unreachable = dc.nodes.filter((n) => !answers.some((a) => a.node === n && a.ok));
    const nodes = dc.nodes.map((node) => {
      const a = answers.find((x) => x.node === node);
      return { node, up: a?.ok === true, load: a?.ok ? a.value.load : undefined };
    });
    const movable = nodes.flatMap((n) =>
      (n.load?.procs ?? [])
        .filter((p) => p.dc === dc.id)
        .map((p) => ({ ep: p.ep, node: n.node, cpu: p.cpu, rssBytes: p.rssBytes })),
    );
    const plan = planBalance({
      dc: dc.id,
      nodes,
      movable,
      ...(req.maxMoves !== undefined ? { maxMoves: req.maxMoves } : {}),
    });
    if (req.apply !== true) return { dc: dc.name, dcId: dc.id, ...plan, unreachable };
    const applied = [];
    for (const mv of plan.moves) {
      try {
        const result = await this.callOn(
          mv.from,
          'proc.migrate',
          { dc: dc.id, ep: mv.ep, to: mv.to },
          signal,
          60_000,
        );
        applied.push({ ep: mv.ep, from: mv.from, to: mv.to, ok: true, result });
      } catch (e) {
        applied.push({ ep: mv.ep, from: mv.from, to: mv.to, ok: false, error: DvsError.from(e).message });
      }
    }
    return { dc: dc.name, dcId: dc.id, ...plan, unreachable, applied };
  }
}
