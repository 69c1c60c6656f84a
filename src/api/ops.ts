/**
 * Cluster-wide operations of the REST API, over the admin methods of every node the API can reach. They
 * follow the CLI (src/cli/commands/): a DC is created on every node of it (or written once to the cluster
 * store, when the nodes run with one), lists are merged across nodes, a process is run on the DC's lowest
 * node unless told otherwise, and killed on the node that runs it.
 */
import {
  type DcConfig,
  DEFAULT_MAX_PAYLOAD,
  DEFAULT_POST_WINDOW,
  DEFAULT_SYS_ENDPOINTS,
  type EndpointInfo,
  type NodeId,
} from '../kernel/types.js';
import type {
  AdminMethod,
  AdminMethods,
  LinkInfo,
  MigrationResult,
  NodeEvent,
  NodeStatus,
  ProcessInfo,
} from '../protocol/admin.js';
import { DvsError, dvsError } from '../protocol/errors.js';
import type { AdminCaller, ApiNodes } from './caller.js';

/** A node as the API reports it. */
export interface NodeRow {
  id: NodeId;
  name: string;
  /** up: its admin answered (or, for a peer the API cannot ask, its link to this node is up). */
  state: 'up' | 'down';
  address: string;
  /** True if the API could ask this node directly (full details below); false: seen through links only. */
  reachable: boolean;
  self: boolean;
  pid: number | null;
  uptimeMs: number | null;
  version: string | null;
  dcs: number | null;
  endpoints: number | null;
  /** Its links, as it reports them (empty when not reachable). */
  links: LinkInfo[];
  /** Messages sent and received by its local endpoints since they were bound (null when not reachable). */
  messages: { sent: number; received: number } | null;
  /** Why it is down or not reachable, if known. */
  error?: string;
}

/** `GET /cluster`. */
export interface ClusterView {
  self: NodeId;
  time: number;
  /** The cluster store as this node sees it, or null without one. */
  store: { name: string; degraded: boolean; reason?: string } | null;
  nodes: NodeRow[];
  dcs: DcRow[];
  /** Sum of the reachable nodes' message counters. */
  messages: { sent: number; received: number };
}

/** A DC with the nodes that have it and how many endpoints are bound in it. */
export interface DcRow extends DcConfig {
  /** Nodes that reported having it. */
  on: NodeId[];
  endpoints: number;
}

type Answer<T> = { node: NodeId; ok: true; value: T } | { node: NodeId; ok: false; error: DvsError };

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
      rows.set(id, {
        id,
        name: v.name,
        // A peer whose API did not answer is down even if a link still looks up (its daemon may be wedged).
        state: v.up && failed === undefined ? 'up' : 'down',
        address: v.address,
        reachable: false,
        self: false,
        pid: null,
        uptimeMs: null,
        version: null,
        dcs: null,
        endpoints: null,
        links: [],
        messages: null,
        ...(failed && !failed.ok ? { error: failed.error.message } : {}),
      });
    }
    for (const a of answers) {
      if (!a.ok && !rows.has(a.node)) {
        rows.set(a.node, {
          id: a.node,
          name: `node${a.node}`,
          state: 'down',
          address: '',
          reachable: false,
          self: a.node === this.nodes.self,
          pid: null,
          uptimeMs: null,
          version: null,
          dcs: null,
          endpoints: null,
          links: [],
          messages: null,
          error: a.error.message,
        });
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
    },
    signal: AbortSignal,
  ): Promise<DcConfig> {
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
      return this.callOn(st.id, 'dc.create', { config: { id: req.id ?? 0, ...base } }, signal);
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
    const results = await this.each(nodes, 'dc.create', { config }, signal);
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
}
