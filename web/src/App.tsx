/**
 * The dvs dashboard: one page with tabs (overview, nodes, DCs, links, events). Everything live comes from
 * one SSE stream of the node serving the page: `event` messages (its event log) and an `overview` (the
 * cluster: nodes, DCs, counters) every second, from which the message rate is derived. Actions go through
 * the REST API after an in-page confirmation; their errors are shown where the action was.
 */
import { useCallback, useEffect, useRef, useState } from 'react';
import { ApiError, saveToken, stream } from './api';
import { Confirm, type ConfirmRequest } from './Confirm';
import { DcsView } from './DcsView';
import { bytes, duration, time } from './format';
import { RateChart, type RatePoint } from './RateChart';
import type { ClusterView, NodeEvent } from './types';

type Tab = 'overview' | 'nodes' | 'dcs' | 'links' | 'events';
const TABS: Tab[] = ['overview', 'nodes', 'dcs', 'links', 'events'];
const MAX_EVENTS = 500;
const MAX_POINTS = 300;

export function App({ initialToken }: { initialToken: string | null }) {
  const [token, setToken] = useState(initialToken);
  const [tab, setTab] = useState<Tab>('overview');
  const [view, setView] = useState<ClusterView | null>(null);
  const [events, setEvents] = useState<NodeEvent[]>([]);
  const [points, setPoints] = useState<RatePoint[]>([]);
  const [live, setLive] = useState<'connecting' | 'live' | 'retrying'>('connecting');
  const [streamError, setStreamError] = useState<string | null>(null);
  const [confirm, setConfirm] = useState<ConfirmRequest | null>(null);
  const [confirmBusy, setConfirmBusy] = useState(false);
  const [confirmError, setConfirmError] = useState<string | null>(null);
  const lastSeq = useRef(0);
  const prev = useRef<ClusterView | null>(null);

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
              setEvents((list) => [e, ...list].slice(0, MAX_EVENTS));
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
              }
              prev.current = v;
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
  }, [token]);

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
          </section>
        )}
        {tab === 'events' && (
          <section>
            <h2>Events of node {view?.self ?? ''}</h2>
            <EventsTable events={events} />
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
          <tr key={`${from}-${l.node}`}>
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
          <tr key={`${e.node}-${e.seq}`} className={`ev ${e.kind.split('.')[1] ?? ''}`}>
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
