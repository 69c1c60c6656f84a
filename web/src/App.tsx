/**
 * The dvs dashboard: one page with tabs (overview, nodes, DCs, links, events). Everything live comes from
 * one SSE stream of the node serving the page: `event` messages (its event log) and an `overview` (the
 * cluster: nodes, DCs, counters, links) every second, from which the message rate, the link RTTs and the
 * link traffic over time are derived. The other nodes' event logs (a failover is logged by the backup's
 * node, an OOM kill where the process ran) are read every 2 s and merged by time. Actions go through the
 * REST API after an in-page confirmation; their errors are shown where the action was.
 */
import { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import { ApiError, api, saveToken, stream } from './api';
import { Confirm, type ConfirmRequest } from './Confirm';
import { DcsView } from './DcsView';
import { bytes, duration, time } from './format';
import { LineChart } from './LineChart';
import { RateChart, type RatePoint } from './RateChart';
import type { ClusterView, NodeEvent } from './types';

type Tab = 'overview' | 'nodes' | 'dcs' | 'links' | 'events';
const TABS: Tab[] = ['overview', 'nodes', 'dcs', 'links', 'events'];
const MAX_EVENTS = 500;
const MAX_POINTS = 300;
const PEER_EVENTS_MS = 2000;

/** Per node pair (`0→1`) values at one overview: RTT in ms and frames sent per second. */
interface LinkPoint {
  t: number;
  rtt: Record<string, number | null>;
  fps: Record<string, number | null>;
}

/** Event kinds shown as failures and as successes in the event tables. */
const BAD_KINDS = new Set(['node.down', 'failover', 'oom', 'migrate.failed', 'repl.ended']);
const GOOD_KINDS = new Set([
  'node.up',
  'migrate.done',
  'dc.resumed',
  'snapshot.created',
  'snapshot.restored',
]);

/** Event filters of the events page: a kind matches if it starts with one of the prefixes. */
const FILTERS: Record<string, string[]> = {
  all: [''],
  migrations: ['migrate.'],
  failures: ['node.down', 'failover', 'oom', 'migrate.failed', 'repl.'],
  processes: ['proc.', 'oom'],
  dcs: ['dc.', 'snapshot.'],
  nodes: ['node.', 'gcs.'],
};

const linkKey = (from: number, to: number) => `${from}→${to}`;

export function App({ initialToken }: { initialToken: string | null }) {
  const [token, setToken] = useState(initialToken);
  const [tab, setTab] = useState<Tab>('overview');
  const [view, setView] = useState<ClusterView | null>(null);
  const [events, setEvents] = useState<NodeEvent[]>([]);
  const [points, setPoints] = useState<RatePoint[]>([]);
  const [linkPoints, setLinkPoints] = useState<LinkPoint[]>([]);
  const [live, setLive] = useState<'connecting' | 'live' | 'retrying'>('connecting');
  const [streamError, setStreamError] = useState<string | null>(null);
  const [confirm, setConfirm] = useState<ConfirmRequest | null>(null);
  const [confirmBusy, setConfirmBusy] = useState(false);
  const [confirmError, setConfirmError] = useState<string | null>(null);
  const lastSeq = useRef(0);
  const prev = useRef<ClusterView | null>(null);
  const viewRef = useRef<ClusterView | null>(null);
  const peerSeq = useRef(new Map<number, number>());

  /** Merge events (from the stream or a peer's log) newest first, each once. */
  const addEvents = useCallback((more: NodeEvent[]) => {
    if (more.length === 0) return;
    setEvents((list) => {
      const seen = new Set(list.map((e) => `${e.node}-${e.seq}-${e.time}`));
      const fresh = more.filter((e) => !seen.has(`${e.node}-${e.seq}-${e.time}`));
      if (fresh.length === 0) return list;
      return [...fresh, ...list].sort((a, b) => b.time - a.time || b.seq - a.seq).slice(0, MAX_EVENTS);
    });
  }, []);

  useEffect(() => {
    if (token === null) return;
    const ac = new AbortController();
    let stopped = false;
    const run = async () => {
      while (!stopped) {
        try {
          setLive('connecting');
          await stream(token, `?since=${lastSeq.current}&overview=1000`, ac.signal, (m) => {
            setLive('live');
            setStreamError(null);
            if (m.event === 'event') {
              const e = m.data as NodeEvent;
              lastSeq.current = Math.max(lastSeq.current, e.seq);
              addEvents([e]);
            } else if (m.event === 'overview') {
              const v = m.data as ClusterView;
              const p = prev.current;
              if (p !== null && v.time > p.time) {
                const dt = (v.time - p.time) / 1000;
                const rate = (a: number, b: number) => Math.max(0, (a - b) / dt);
                const point = {
                  t: v.time / 1000,
                  sent: rate(v.messages.sent, p.messages.sent),
                  received: rate(v.messages.received, p.messages.received),
                };
                setPoints((pts) => [...pts, point].slice(-MAX_POINTS));
                const lp: LinkPoint = { t: v.time / 1000, rtt: {}, fps: {} };
                for (const n of v.nodes) {
                  const before = p.nodes.find((x) => x.id === n.id);
                  for (const l of n.links) {
                    const k = linkKey(n.id, l.node);
                    lp.rtt[k] = l.state === 'up' ? l.rttMs : null;
                    const b = before?.links.find((x) => x.node === l.node);
                    lp.fps[k] = b ? rate(l.framesSent, b.framesSent) : null;
                  }
                }
                setLinkPoints((pts) => [...pts, lp].slice(-MAX_POINTS));
              }
              prev.current = v;
              viewRef.current = v;
              setView(v);
            } else if (m.event === 'hello') {
              const h = m.data as { last: number };
              // A restarted daemon numbers its events from 1 again.
              if (h.last < lastSeq.current) lastSeq.current = 0;
            }
          });
        } catch (e) {
          if (stopped) return;
          if (e instanceof ApiError && e.code === 'EAUTH') {
            setStreamError(`${e.message}: enter a valid token`);
            saveToken(null);
            setToken(null);
            return;
          }
          setStreamError(e instanceof Error ? e.message : String(e));
        }
        if (stopped) return;
        setLive('retrying');
        await new Promise((r) => setTimeout(r, 2000));
      }
    };
    void run();
    return () => {
      stopped = true;
      ac.abort();
    };
  }, [token, addEvents]);

  // The other nodes' event logs, read through this node's API (relayed over the node links).
  useEffect(() => {
    if (token === null) return;
    let stopped = false;
    const poll = async () => {
      const v = viewRef.current;
      if (v === null) return;
      for (const n of v.nodes) {
        if (stopped || n.self || !n.reachable) continue;
        const since = peerSeq.current.get(n.id) ?? 0;
        try {
          const r = await api<{ events: NodeEvent[]; last: number }>(
            token,
            'GET',
            `/events?node=${n.id}&since=${since}&limit=500`,
          );
          // A restarted daemon numbers its events from 1 again.
          if (r.last < since) peerSeq.current.set(n.id, 0);
          else if (r.events.length > 0) {
            peerSeq.current.set(n.id, r.events.at(-1)?.seq ?? since);
            addEvents(r.events);
          }
        } catch {
          // That node is down or busy: its log is read again at the next poll.
        }
      }
    };
    const timer = setInterval(() => void poll(), PEER_EVENTS_MS);
    return () => {
      stopped = true;
      clearInterval(timer);
    };
  }, [token, addEvents]);

  const ask = useCallback((req: ConfirmRequest) => {
    setConfirmError(null);
    setConfirm(req);
  }, []);

  const doConfirm = async () => {
    if (!confirm) return;
    setConfirmBusy(true);
    setConfirmError(null);
    try {
      await confirm.run();
      setConfirm(null);
    } catch (e) {
      setConfirmError(e instanceof Error ? e.message : String(e));
    } finally {
      setConfirmBusy(false);
    }
  };

  if (token === null)
    return (
      <TokenForm
        error={streamError}
        onToken={(t) => {
          saveToken(t);
          setToken(t);
        }}
      />
    );

  const up = view?.nodes.filter((n) => n.state === 'up').length ?? 0;
  return (
    <div className="app">
      <header>
        <h1>dvs</h1>
        <nav>
          {TABS.map((t) => (
            <button
              type="button"
              key={t}
              className={t === tab ? 'tab active' : 'tab'}
              onClick={() => setTab(t)}
              data-testid={`tab-${t}`}
            >
              {t}
            </button>
          ))}
        </nav>
        <span className={`live ${live}`} data-testid="live">
          {live === 'live' ? `live · node ${view?.self ?? '?'}` : live}
        </span>
      </header>
      {streamError && <p className="error banner">{streamError}</p>}
      <main>
        {tab === 'overview' && (
          <section>
            <div className="cards">
              <Card
                label="nodes up"
                value={view ? `${up} / ${view.nodes.length}` : '…'}
                bad={view !== null && up < view.nodes.length}
              />
              <Card label="DCs" value={view ? String(view.dcs.length) : '…'} />
              <Card
                label="endpoints"
                value={view ? String(view.dcs.reduce((s, d) => s + d.endpoints, 0)) : '…'}
              />
              <Card label="messages/s" value={points.length ? (points.at(-1)?.sent ?? 0).toFixed(0) : '…'} />
              <Card
                label="store"
                value={view ? (view.store?.name ?? 'none') : '…'}
                bad={view?.store?.degraded === true}
              />
            </div>
            <h2>Message rate</h2>
            <RateChart points={points} />
            <h2>Link latency (RTT)</h2>
            <LinkChart points={linkPoints} what="rtt" />
            <h2>Nodes</h2>
            <NodesTable view={view} />
            <h2>Recent events</h2>
            <EventsTable events={events.slice(0, 10)} />
          </section>
        )}
        {tab === 'nodes' && (
          <section>
            <h2>Nodes</h2>
            <NodesTable view={view} />
          </section>
        )}
        {tab === 'dcs' && <DcsView token={token} view={view} ask={ask} />}
        {tab === 'links' && (
          <section>
            <h2>Links</h2>
            <LinksTable view={view} />
            <h2>RTT per link</h2>
            <LinkChart points={linkPoints} what="rtt" />
            <h2>Frames sent per second, per link</h2>
            <LinkChart points={linkPoints} what="fps" />
          </section>
        )}
        {tab === 'events' && (
          <section>
            <EventsPage events={events} />
          </section>
        )}
      </main>
      {confirm && (
        <Confirm
          req={confirm}
          busy={confirmBusy}
          error={confirmError}
          onCancel={() => setConfirm(null)}
          onConfirm={() => void doConfirm()}
        />
      )}
    </div>
  );
}

function Card({ label, value, bad }: { label: string; value: string; bad?: boolean }) {
  return (
    <div className={bad ? 'card bad' : 'card'} data-testid={`card-${label.replace(/\W+/g, '-')}`}>
      <div className="value">{value}</div>
      <div className="label">{label}</div>
    </div>
  );
}

function TokenForm({ error, onToken }: { error: string | null; onToken: (t: string) => void }) {
  const [t, setT] = useState('');
  return (
    <div className="login">
      <h1>dvs dashboard</h1>
      <p>
        Open the link that <code>dvs dashboard</code> prints, or paste the API token (<code>dvs api</code>).
      </p>
      {error && <p className="error">{error}</p>}
      <form
        onSubmit={(e) => {
          e.preventDefault();
          if (t.trim()) onToken(t.trim());
        }}
      >
        <input type="password" value={t} onChange={(e) => setT(e.target.value)} placeholder="API token" />
        <button type="submit">Open</button>
      </form>
    </div>
  );
}

function NodesTable({ view }: { view: ClusterView | null }) {
  if (!view) return <p className="muted">waiting for the first overview…</p>;
  return (
    <table data-testid="nodes-table">
      <thead>
        <tr>
          <th>node</th>
          <th>name</th>
          <th>state</th>
          <th>address</th>
          <th>pid</th>
          <th>uptime</th>
          <th>DCs</th>
          <th>endpoints</th>
          <th>links up</th>
          <th>sent</th>
          <th>received</th>
          <th>host CPU</th>
          <th>host memory</th>
        </tr>
      </thead>
      <tbody>
        {view.nodes.map((n) => (
          <tr key={n.id} data-testid={`node-row-${n.id}`}>
            <td>
              {n.id}
              {n.self ? ' (this)' : ''}
            </td>
            <td>{n.name}</td>
            <td>
              <span className={`pill ${n.state}`} data-testid={`node-state-${n.id}`}>
                {n.state}
              </span>
            </td>
            <td>{n.address}</td>
            <td>{n.pid ?? '-'}</td>
            <td>{duration(n.uptimeMs)}</td>
            <td>{n.dcs ?? '-'}</td>
            <td>{n.endpoints ?? '-'}</td>
            <td>
              {n.reachable ? `${n.links.filter((l) => l.state === 'up').length}/${n.links.length}` : '-'}
            </td>
            <td>{n.messages?.sent ?? '-'}</td>
            <td>{n.messages?.received ?? '-'}</td>
            <td>{n.load ? `${(n.load.cpuBusy * 100).toFixed(0)}% of ${n.load.cpus}` : '-'}</td>
            <td>
              {n.load
                ? `${bytes(n.load.memTotalBytes - n.load.memAvailableBytes)} / ${bytes(n.load.memTotalBytes)}`
                : '-'}
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function LinksTable({ view }: { view: ClusterView | null }) {
  if (!view) return <p className="muted">waiting for the first overview…</p>;
  const rows = view.nodes.flatMap((n) => n.links.map((l) => ({ from: n.id, l })));
  if (rows.length === 0) return <p className="muted">no links</p>;
  return (
    <table data-testid="links-table">
      <thead>
        <tr>
          <th>node</th>
          <th>peer</th>
          <th>state</th>
          <th>RTT</th>
          <th>frames sent</th>
          <th>frames recv</th>
          <th>bytes sent</th>
          <th>bytes recv</th>
          <th>unacked</th>
          <th>retransmits</th>
          <th>dups</th>
          <th>reconnects</th>
          <th>since</th>
        </tr>
      </thead>
      <tbody>
        {rows.map(({ from, l }) => (
          <tr key={`${from}-${l.node}`} data-testid={`link-row-${from}-${l.node}`}>
            <td>{from}</td>
            <td>
              {l.node} ({l.address})
            </td>
            <td>
              <span className={`pill ${l.state}`}>{l.state}</span>
            </td>
            <td>{l.rttMs === null ? '-' : `${l.rttMs.toFixed(2)} ms`}</td>
            <td>{l.framesSent}</td>
            <td>{l.framesReceived}</td>
            <td>{bytes(l.bytesSent)}</td>
            <td>{bytes(l.bytesReceived)}</td>
            <td>{l.unacked}</td>
            <td>{l.retransmits}</td>
            <td>{l.duplicates}</td>
            <td>{l.reconnects}</td>
            <td>{duration(l.sinceMs)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function EventsTable({ events }: { events: NodeEvent[] }) {
  if (events.length === 0) return <p className="muted">no events yet</p>;
  return (
    <table data-testid="events-table">
      <thead>
        <tr>
          <th>#</th>
          <th>time</th>
          <th>node</th>
          <th>kind</th>
          <th>subject</th>
          <th>detail</th>
        </tr>
      </thead>
      <tbody>
        {events.map((e) => (
          <tr
            key={`${e.node}-${e.seq}-${e.time}`}
            className={`ev ${BAD_KINDS.has(e.kind) || e.detail.oomKilled === true ? 'bad' : GOOD_KINDS.has(e.kind) ? 'good' : ''}`}
          >
            <td>{e.seq}</td>
            <td>{time(e.time)}</td>
            <td>{e.node}</td>
            <td>
              <code>{e.kind}</code>
            </td>
            <td>{e.subject}</td>
            <td className="detail">
              {Object.entries(e.detail)
                .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
                .join(' ')}
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

/** A live chart of one per-link quantity, one series per node pair seen so far. */
function LinkChart({ points, what }: { points: LinkPoint[]; what: 'rtt' | 'fps' }) {
  const { series, data } = useMemo(() => {
    const keys = [...new Set(points.flatMap((p) => Object.keys(p[what])))].sort();
    return {
      series: keys.map((label) => ({ label })),
      data: [points.map((p) => p.t), ...keys.map((k) => points.map((p) => p[what][k] ?? null))],
    };
  }, [points, what]);
  if (series.length === 0) return <p className="muted">no links yet</p>;
  return (
    <LineChart
      series={series}
      data={data}
      unit={what === 'rtt' ? 'ms' : 'frames/s'}
      testId={`link-chart-${what}`}
    />
  );
}

/** Every node's events merged by time, with a filter by kind. */
function EventsPage({ events }: { events: NodeEvent[] }) {
  const [filter, setFilter] = useState('all');
  const prefixes = FILTERS[filter] ?? [''];
  const shown = events.filter((e) => prefixes.some((p) => e.kind.startsWith(p)));
  return (
    <>
      <h2>Events of every node</h2>
      <p className="inline">
        <label>
          show{' '}
          <select value={filter} onChange={(e) => setFilter(e.target.value)} data-testid="events-filter">
            {Object.keys(FILTERS).map((f) => (
              <option key={f} value={f}>
                {f}
              </option>
            ))}
          </select>
        </label>{' '}
        <span className="muted">
          {shown.length} of {events.length}
        </span>
      </p>
      <EventsTable events={shown} />
    </>
  );
}
