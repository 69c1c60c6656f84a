/**
 * Cluster-wide views: the JSON shapes the REST API answers (src/api/ops.ts) and `dvs ... --json` prints
 * (src/cli/commands/), and the pure merges that build them from per-node admin answers, written once for
 * both. The dashboard (web/) imports these types too, so this module must stay free of Node-only APIs and of
 * runtime imports beyond pure helpers (web/tsconfig.json type-checks it without Node's types).
 */
import { compareViewIds, type Member, type ViewId } from '../gcs/types.js';
import type { DcConfig, NodeId } from '../kernel/types.js';
import type { LinkInfo, NodeLoad } from '../protocol/admin.js';

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
  /** Its live CPU and memory use, when its daemon samples them (docs/scheduling.md). */
  load?: NodeLoad;
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

/** A per-node answer for every node of a DC: the rows of the nodes that answered, and who did not. */
export interface PerNodeView<T> {
  dc: string;
  dcId: number;
  nodes: T[];
  /** Nodes of the DC that did not answer (or that this API cannot reach), with why. */
  unreachable: { node: NodeId; code: string; message: string }[];
}

/** A kv entry as JSON (`dvs kv get/ls --json`, `GET /dcs/{dc}/kv`). */
export interface KvRow {
  key: string;
  /** The value as UTF-8 text, or null if it is not valid UTF-8. */
  value: string | null;
  base64: string;
  revision: number;
  createRevision: number;
  version: number;
}

/**
 * One node's answer to the `group.ls` service, as far as the merge reads it (src/node/gcs-wiring.ts
 * GroupList is this shape and more).
 */
export interface GroupListAnswer {
  node: NodeId;
  cfg: [number, number, number];
  nodes: NodeId[];
  flushing: boolean;
  groups: {
    name: string;
    view: { id: ViewId; members: Member[] } | null;
    local: { ep: number; backlog: number }[];
    sent: number;
    delivered: number;
    views: number;
  }[];
}

/** A group as the cluster sees it (`dvs group ls --json`, `GET /dcs/{dc}/groups`). */
export interface GroupRowView {
  name: string;
  /** The newest view reported by any node (null: no node knows a member). */
  view: { id: ViewId; members: Member[] } | null;
  /** Nodes whose view is older than the newest. */
  behind: NodeId[];
  /** Local members and their unconsumed deliveries, per node. */
  local: { node: NodeId; ep: number; backlog: number }[];
  sent: number;
  delivered: number;
  views: number;
}

/**
 * Merge the per-node answers of `group.ls` into one row per group, sorted by name: the newest view any node
 * reports, the nodes whose view is older, every node's local members, and the counters summed over nodes.
 */
export function mergeGroups(lists: readonly GroupListAnswer[]): GroupRowView[] {
  type Row = GroupListAnswer['groups'][number] & { node: NodeId };
  const by = new Map<string, Row[]>();
  for (const l of lists)
    for (const g of l.groups) {
      const rows = by.get(g.name) ?? [];
      rows.push({ ...g, node: l.node });
      by.set(g.name, rows);
    }
  const out: GroupRowView[] = [];
  for (const [name, rows] of by) {
    let view: GroupRowView['view'] = null;
    for (const r of rows)
      if (r.view && (view === null || compareViewIds(r.view.id, view.id) > 0)) view = r.view;
    const behind = rows
      .filter((r) => view !== null && r.view !== null && compareViewIds(r.view.id, view.id) < 0)
      .map((r) => r.node);
    out.push({
      name,
      view,
      behind,
      local: rows.flatMap((r) => r.local.map((m) => ({ node: r.node, ...m }))),
      sent: rows.reduce((s, r) => s + r.sent, 0),
      delivered: rows.reduce((s, r) => s + r.delivered, 0),
      views: rows.reduce((s, r) => s + r.views, 0),
    });
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}
