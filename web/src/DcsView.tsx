/**
 * The DCs page: the list, a create form (with limits and the DC LAN), and for the selected DC: its nodes
 * and containers with limits and usage against them (memory, CPU, pids, OOM kills), pause / resume, a
 * limits form, the endpoint table (state flags and counters, like the prototype's procs table), processes
 * with kill and migrate, a run form, and its process groups. The selected DC's tables reload on every
 * overview the stream delivers (once a second); containers and groups every 5 s.
 */
import { type ReactNode, useEffect, useRef, useState } from 'react';
import { ApiError, api } from './api';
import type { ConfirmRequest } from './Confirm';
import { bytes, peer, splitCommand, time } from './format';
import { Head } from './Table';
import type {
  ClusterView,
  DcIsolationInfo,
  DcRow,
  DcStatsInfo,
  EndpointInfo,
  GroupRow,
  MigrationResult,
  PerNodeView,
  ProcessInfo,
} from './types';

const message = (e: unknown) => (e instanceof Error ? e.message : String(e));

export function DcsView({
  token,
  view,
  ask,
}: {
  token: string;
  view: ClusterView | null;
  ask: (req: ConfirmRequest) => void;
}) {
  const [selected, setSelected] = useState<string | null>(null);
  const dcs = view?.dcs ?? [];
  const dc = dcs.find((d) => d.name === selected) ?? null;
  useEffect(() => {
    if (selected === null && dcs.length > 0) setSelected(dcs[0]?.name ?? null);
  }, [selected, dcs]);

  return (
    <section className="dcs">
      <h2>Distributed containers</h2>
      <CreateDc token={token} view={view} ask={ask} onCreated={setSelected} />
      {dcs.length === 0 ? (
        <p className="muted">no DCs yet</p>
      ) : (
        <table data-testid="dcs-table">
          <Head cols={['id', 'name', 'nodes', 'endpoints', 'max payload', 'sys eps', 'post window', '']} />
          <tbody>
            {dcs.map((d) => (
              <tr
                key={d.id}
                className={d.name === selected ? 'selected' : ''}
                data-testid={`dc-row-${d.name}`}
              >
                <td>{d.id}</td>
                <td>
                  <button type="button" className="link" onClick={() => setSelected(d.name)}>
                    {d.name}
                  </button>
                </td>
                <td>{d.nodes.join(', ')}</td>
                <td>{d.endpoints}</td>
                <td>{d.maxPayload}</td>
                <td>{d.sysEndpoints}</td>
                <td>{d.postWindow}</td>
                <td>
                  <button
                    type="button"
                    className="danger small"
                    data-testid={`remove-dc-${d.name}`}
                    onClick={() =>
                      ask({
                        title: `Remove DC '${d.name}'?`,
                        body: `Its processes on nodes ${d.nodes.join(', ')} are stopped.`,
                        action: 'Remove',
                        run: async () => {
                          await api(token, 'DELETE', `/dcs/${encodeURIComponent(d.name)}`);
                          if (selected === d.name) setSelected(null);
                        },
                      })
                    }
                  >
                    remove
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {dc && <DcDetail key={dc.id} token={token} dc={dc} tick={view?.time ?? 0} ask={ask} />}
    </section>
  );
}

/**
 * A form on one line whose submit asks for confirmation (no page load), with the last error after its
 * fields (`errorTestId` names it for the e2e tests).
 */
function InlineForm({
  onSubmit,
  error,
  errorTestId,
  children,
}: {
  onSubmit: () => void;
  error: string | null;
  errorTestId: string;
  children: ReactNode;
}) {
  return (
    <form
      className="inline"
      onSubmit={(e) => {
        e.preventDefault();
        onSubmit();
      }}
    >
      {children}
      {error && (
        <span className="error" data-testid={errorTestId}>
          {error}
        </span>
      )}
    </form>
  );
}

/**
 * A confirmed action whose failure is also shown in its form: the error goes to `setError` and is rethrown,
 * so the confirm dialog reports it too.
 */
function reportingTo(setError: (e: string) => void, run: () => Promise<void>): () => Promise<void> {
  return async () => {
    try {
      await run();
    } catch (e) {
      setError(message(e));
      throw e;
    }
  };
}

/** Limits as `memory=256M, cpus=0.5` for a confirmation. */
function limitsText(lim: Record<string, string>): string {
  return Object.entries(lim)
    .map(([k, v]) => `${k}=${v}`)
    .join(', ');
}

/** `{memory, cpus, pids}` from form fields, only those filled in. */
function limitsOf(f: { memory: string; cpus: string; pids: string }): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(f)) if (v.trim() !== '') out[k] = v.trim();
  return out;
}

function CreateDc({
  token,
  view,
  ask,
  onCreated,
}: {
  token: string;
  view: ClusterView | null;
  ask: (req: ConfirmRequest) => void;
  onCreated: (name: string) => void;
}) {
  const [name, setName] = useState('');
  const [nodes, setNodes] = useState('');
  const [limits, setLimits] = useState({ memory: '', cpus: '', pids: '' });
  const [lan, setLan] = useState('');
  const [error, setError] = useState<string | null>(null);
  const all = view?.nodes.map((n) => n.id) ?? [];
  const submit = () => {
    setError(null);
    const list =
      nodes.trim() === ''
        ? undefined
        : nodes
            .split(/[\s,]+/)
            .filter(Boolean)
            .map(Number);
    if (list?.some((n) => !Number.isInteger(n))) {
      setError('nodes: a comma-separated list of node ids');
      return;
    }
    const lim = limitsOf(limits);
    const extra = [
      Object.keys(lim).length > 0 ? `limits ${limitsText(lim)}` : 'no limits',
      lan.trim() ? `LAN ${lan.trim()}` : 'no LAN',
    ].join('; ');
    ask({
      title: `Create DC '${name}'?`,
      body: `On nodes ${(list ?? all).join(', ')}; ${extra}.`,
      action: 'Create',
      run: reportingTo(setError, async () => {
        await api(token, 'POST', '/dcs', {
          name,
          ...(list ? { nodes: list } : {}),
          ...(Object.keys(lim).length > 0 ? { limits: lim } : {}),
          ...(lan.trim() ? { lan: lan.trim() } : {}),
        });
        onCreated(name);
        setName('');
        setLimits({ memory: '', cpus: '', pids: '' });
        setLan('');
      }),
    });
  };
  return (
    <InlineForm onSubmit={submit} error={error} errorTestId="create-dc-error">
      <input
        value={name}
        onChange={(e) => setName(e.target.value)}
        placeholder="DC name"
        data-testid="dc-name"
      />
      <input
        value={nodes}
        onChange={(e) => setNodes(e.target.value)}
        placeholder={`nodes (default ${all.join(',') || 'all'})`}
        data-testid="dc-nodes"
      />
      <LimitFields value={limits} onChange={setLimits} prefix="dc" />
      <input
        className="narrow"
        style={{ width: '9rem' }}
        value={lan}
        onChange={(e) => setLan(e.target.value)}
        placeholder="LAN e.g. 172.31.5.0/24"
        data-testid="dc-lan"
      />
      <button type="submit" disabled={name.trim() === ''} data-testid="create-dc">
        Create DC
      </button>
    </InlineForm>
  );
}

function LimitFields({
  value,
  onChange,
  prefix,
}: {
  value: { memory: string; cpus: string; pids: string };
  onChange: (v: { memory: string; cpus: string; pids: string }) => void;
  prefix: string;
}) {
  const field = (k: 'memory' | 'cpus' | 'pids', placeholder: string) => (
    <input
      className="narrow"
      value={value[k]}
      onChange={(e) => onChange({ ...value, [k]: e.target.value })}
      placeholder={placeholder}
      data-testid={`${prefix}-${k}`}
    />
  );
  return (
    <fieldset>
      <legend>limits</legend>
      {field('memory', 'memory 256M')}
      {field('cpus', 'cpus 0.5')}
      {field('pids', 'pids 128')}
    </fieldset>
  );
}

/** What the DC detail shows of one node: its container and its usage. */
interface NodePlace {
  node: number;
  iso?: DcIsolationInfo;
  stats?: DcStatsInfo;
  /** CPU in cores since the previous sample. */
  cores?: number;
  error?: string;
}

function DcDetail({
  token,
  dc,
  tick,
  ask,
}: {
  token: string;
  dc: DcRow;
  tick: number;
  ask: (req: ConfirmRequest) => void;
}) {
  const [eps, setEps] = useState<EndpointInfo[] | null>(null);
  const [procs, setProcs] = useState<ProcessInfo[]>([]);
  const [iso, setIso] = useState<PerNodeView<DcIsolationInfo> | null>(null);
  const [stats, setStats] = useState<PerNodeView<DcStatsInfo> | null>(null);
  const [groups, setGroups] = useState<GroupRow[] | string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const cpuPrev = useRef(new Map<number, { ns: number; at: number; cores?: number }>());
  const path = `/dcs/${encodeURIComponent(dc.name)}`;
  const slow = Math.floor(tick / 5000);

  // Reload on every overview tick (the stream drives it); the tick value itself is the trigger.
  useEffect(() => {
    let gone = false;
    void tick;
    Promise.all([
      api<{ endpoints: EndpointInfo[] }>(token, 'GET', `${path}/endpoints`),
      api<{ processes: ProcessInfo[] }>(token, 'GET', `${path}/processes`),
      api<PerNodeView<DcStatsInfo>>(token, 'GET', `${path}/stats`),
    ])
      .then(([e, p, st]) => {
        if (gone) return;
        setEps(e.endpoints);
        setProcs(p.processes);
        const now = Date.now();
        for (const n of st.nodes) {
          if (!n.cpu) continue;
          const before = cpuPrev.current.get(n.node);
          const cores =
            before && now > before.at
              ? (n.cpu.usageNs - before.ns) / 1e9 / ((now - before.at) / 1000)
              : undefined;
          cpuPrev.current.set(n.node, {
            ns: n.cpu.usageNs,
            at: now,
            ...(cores !== undefined ? { cores } : {}),
          });
        }
        setStats(st);
        setError(null);
      })
      .catch((e: unknown) => {
        if (!gone) setError(message(e));
      });
    return () => {
      gone = true;
    };
  }, [token, path, tick]);

  // Containers and groups change rarely: every 5 s.
  useEffect(() => {
    let gone = false;
    void slow;
    api<PerNodeView<DcIsolationInfo>>(token, 'GET', `${path}/isolation`)
      .then((r) => {
        if (!gone) setIso(r);
      })
      .catch((e: unknown) => {
        if (!gone) setError(message(e));
      });
    api<{ groups: GroupRow[] }>(token, 'GET', `${path}/groups`)
      .then((r) => {
        if (!gone) setGroups(r.groups);
      })
      .catch((e: unknown) => {
        // Groups need the daemons' GCS wiring: say why they are missing rather than failing the page.
        if (!gone) setGroups(e instanceof ApiError ? `${e.code}: ${e.message}` : message(e));
      });
    return () => {
      gone = true;
    };
  }, [token, path, slow]);

  const places: NodePlace[] = dc.nodes.map((node) => {
    const i = iso?.nodes.find((x) => x.node === node);
    const s = stats?.nodes.find((x) => x.node === node);
    const miss =
      stats?.unreachable.find((x) => x.node === node) ?? iso?.unreachable.find((x) => x.node === node);
    const cores = cpuPrev.current.get(node)?.cores;
    return {
      node,
      ...(i ? { iso: i } : {}),
      ...(s ? { stats: s } : {}),
      ...(cores !== undefined ? { cores } : {}),
      ...(miss ? { error: miss.message } : {}),
    };
  });
  const paused = stats !== null && stats.nodes.length > 0 && stats.nodes.every((n) => n.frozen === true);

  const freeze = (what: 'pause' | 'resume') =>
    ask({
      title: `${what === 'pause' ? 'Pause' : 'Resume'} DC '${dc.name}'?`,
      body:
        what === 'pause'
          ? `Every process of the DC on nodes ${dc.nodes.join(', ')} is frozen until resumed.`
          : `Every process of the DC on nodes ${dc.nodes.join(', ')} runs again.`,
      action: what === 'pause' ? 'Pause' : 'Resume',
      run: async () => {
        await api(token, 'POST', `${path}/${what}`);
        setNotice(`DC ${dc.name} ${what === 'pause' ? 'paused' : 'resumed'}`);
      },
    });

  return (
    <div className="detail-box" data-testid="dc-detail">
      <div className="toolbar">
        <h3>
          DC {dc.name} (id {dc.id}) · nodes {dc.nodes.join(', ')}
          {iso?.nodes.find((n) => n.lan)?.lan ? ` · LAN ${iso.nodes.find((n) => n.lan)?.lan?.prefix}` : ''}
        </h3>
        <span className={`pill ${paused ? 'paused' : 'up'}`} data-testid="dc-state">
          {paused ? 'paused' : 'running'}
        </span>
        <button type="button" className="small" onClick={() => freeze('pause')} data-testid="pause-dc">
          pause
        </button>
        <button type="button" className="small" onClick={() => freeze('resume')} data-testid="resume-dc">
          resume
        </button>
      </div>
      {error && <p className="error">{error}</p>}
      {notice && (
        <p className="notice" data-testid="dc-notice">
          {notice}
        </p>
      )}
      <h4>Nodes and containers</h4>
      <PlacesTable places={places} />
      <SetLimits token={token} dc={dc} ask={ask} onDone={setNotice} />
      <h4>Run a process</h4>
      <RunForm token={token} dc={dc} ask={ask} />
      <h4>Endpoints</h4>
      {eps === null ? (
        <p className="muted">loading…</p>
      ) : eps.length === 0 ? (
        <p className="muted">no endpoints bound</p>
      ) : (
        <EndpointsTable eps={eps} />
      )}
      <h4>Processes</h4>
      {procs.length === 0 ? (
        <p className="muted">none started</p>
      ) : (
        <ProcessesTable token={token} dc={dc} procs={procs} ask={ask} onDone={setNotice} />
      )}
      <h4>Process groups</h4>
      <GroupsTable groups={groups} />
    </div>
  );
}

/** A usage bar: green, amber from 75 %, red from 90 % of the limit. */
function Meter({ used, limit }: { used: number; limit: number | null | undefined }) {
  if (limit == null || limit <= 0) return null;
  const f = Math.min(1, used / limit);
  return (
    <span className={`meter ${f >= 0.9 ? 'bad' : f >= 0.75 ? 'warn' : ''}`}>
      <span style={{ width: `${(f * 100).toFixed(0)}%` }} />
    </span>
  );
}

function PlacesTable({ places }: { places: NodePlace[] }) {
  return (
    <table data-testid="places-table">
      <Head
        cols={[
          'node',
          'isolation',
          'container',
          'LAN address',
          'limits',
          'memory',
          'CPU',
          'pids',
          'OOM kills',
        ]}
      />
      <tbody>
        {places.map(({ node, iso, stats: s, cores, error }) => {
          const state = !s
            ? (error ?? '…')
            : s.mode === 'off'
              ? 'plain processes'
              : !s.running
                ? 'stopped'
                : s.frozen
                  ? 'paused'
                  : 'running';
          return (
            <tr key={node} data-testid={`place-row-${node}`}>
              <td>{node}</td>
              <td>{iso?.mode ?? s?.mode ?? '-'}</td>
              <td>
                <span
                  className={`pill ${error ? 'down' : state === 'paused' ? 'paused' : state === 'running' ? 'up' : ''}`}
                >
                  {state}
                </span>
                {iso?.initPid !== undefined ? ` pid ${iso.initPid}` : ''}
              </td>
              <td>{iso?.lan?.address ?? '-'}</td>
              <td>{(s?.limits ?? iso?.limits) || 'none'}</td>
              <td>
                {s?.memory ? (
                  <>
                    <Meter used={s.memory.usageBytes} limit={s.memory.limitBytes} />
                    {bytes(s.memory.usageBytes)} /{' '}
                    {s.memory.limitBytes == null ? 'max' : bytes(s.memory.limitBytes)}
                  </>
                ) : (
                  '-'
                )}
              </td>
              <td>
                {s?.cpu ? (
                  <>
                    <Meter used={cores ?? 0} limit={s.cpu.limitCpus} />
                    {cores === undefined ? '…' : cores.toFixed(2)} / {s.cpu.limitCpus ?? 'max'} cpus
                    {s.cpu.nrThrottled > 0 ? ` (throttled ${s.cpu.nrThrottled}×)` : ''}
                  </>
                ) : (
                  '-'
                )}
              </td>
              <td>
                {s?.pids ? (
                  <>
                    <Meter used={s.pids.current} limit={s.pids.limit} />
                    {s.pids.current} / {s.pids.limit ?? 'max'}
                  </>
                ) : (
                  '-'
                )}
              </td>
              <td className={s?.memory && s.memory.oomKills > 0 ? 'error' : ''}>
                {s?.memory?.oomKills ?? '-'}
              </td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}

function SetLimits({
  token,
  dc,
  ask,
  onDone,
}: {
  token: string;
  dc: DcRow;
  ask: (req: ConfirmRequest) => void;
  onDone: (s: string) => void;
}) {
  const [limits, setLimits] = useState({ memory: '', cpus: '', pids: '' });
  const [error, setError] = useState<string | null>(null);
  const lim = limitsOf(limits);
  const submit = () => {
    setError(null);
    ask({
      title: `Change the limits of DC '${dc.name}'?`,
      body: `${limitsText(lim)} on nodes ${dc.nodes.join(', ')} (max removes a limit).`,
      action: 'Set limits',
      run: reportingTo(setError, async () => {
        await api(token, 'PUT', `/dcs/${encodeURIComponent(dc.name)}/limits`, lim);
        setLimits({ memory: '', cpus: '', pids: '' });
        onDone(`limits of DC ${dc.name} changed`);
      }),
    });
  };
  return (
    <InlineForm onSubmit={submit} error={error} errorTestId="set-limits-error">
      <LimitFields value={limits} onChange={setLimits} prefix="set" />
      <button type="submit" disabled={Object.keys(lim).length === 0} data-testid="set-limits">
        Set limits
      </button>
    </InlineForm>
  );
}

function EndpointsTable({ eps }: { eps: EndpointInfo[] }) {
  return (
    <table data-testid="endpoints-table">
      <Head
        cols={[
          'ep',
          'name',
          'node',
          'pid',
          'kind',
          'flags',
          'sendto',
          'getfrom',
          'queued',
          'ntfy',
          'lsent',
          'rsent',
          'recv',
          'notifies',
          'copy',
        ]}
      />
      <tbody>
        {eps.map((e) => (
          <tr key={`${e.ep}-${e.node}`} data-testid={`ep-row-${e.ep}`}>
            <td>{e.ep}</td>
            <td>{e.name}</td>
            <td>{e.node}</td>
            <td>{e.pid}</td>
            <td>{e.role ? `${e.kind} (${e.role})` : e.kind}</td>
            <td>{e.flags.length ? e.flags.join('|') : '-'}</td>
            <td>{peer(e.sendTo)}</td>
            <td>{peer(e.getFrom)}</td>
            <td>{e.queued}</td>
            <td>{e.pendingNotify}</td>
            <td>{e.counters.lclSent}</td>
            <td>{e.counters.rmtSent}</td>
            <td>{e.counters.received}</td>
            <td>{e.counters.notifies}</td>
            <td>{e.counters.copyBytes}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function ProcessesTable({
  token,
  dc,
  procs,
  ask,
  onDone,
}: {
  token: string;
  dc: DcRow;
  procs: ProcessInfo[];
  ask: (req: ConfirmRequest) => void;
  onDone: (s: string) => void;
}) {
  const path = `/dcs/${encodeURIComponent(dc.name)}`;
  const [dest, setDest] = useState<Record<number, string>>({});
  return (
    <table data-testid="processes-table">
      <Head cols={['ep', 'name', 'node', 'pid', 'command', 'started', 'state', '']} />
      <tbody>
        {procs.map((p) => {
          const others = dc.nodes.filter((n) => n !== p.node);
          const to = dest[p.ep] ?? String(others[0] ?? '');
          return (
            <tr
              key={`${p.node}-${p.pid}`}
              data-testid={p.exit === null ? `proc-row-${p.ep}` : `proc-old-${p.ep}`}
            >
              <td>{p.ep}</td>
              <td>{p.name}</td>
              <td>{p.node}</td>
              <td>{p.pid}</td>
              <td className="detail">{p.cmd.join(' ')}</td>
              <td>{time(p.startedAt)}</td>
              <td>
                {p.exit === null ? (
                  <span className="pill up">running</span>
                ) : (
                  <span className="pill down" title={p.exit.reason ?? ''}>
                    {p.exit.oomKilled ? 'OOM killed' : (p.exit.signal ?? `exit ${p.exit.code}`)}
                  </span>
                )}
              </td>
              <td>
                {p.exit === null && (
                  <span className="toolbar">
                    <button
                      type="button"
                      className="danger small"
                      data-testid={`kill-${p.ep}`}
                      onClick={() =>
                        ask({
                          title: `Kill endpoint ${p.ep} (${p.name})?`,
                          body: `SIGTERM to pid ${p.pid} on node ${p.node}, SIGKILL after 3 s.`,
                          action: 'Kill',
                          run: async () => {
                            await api(token, 'POST', `${path}/processes/${p.ep}/kill`, {});
                          },
                        })
                      }
                    >
                      kill
                    </button>
                    {others.length > 0 && (
                      <>
                        <select
                          value={to}
                          onChange={(e) => setDest({ ...dest, [p.ep]: e.target.value })}
                          data-testid={`migrate-to-${p.ep}`}
                          aria-label={`destination node of endpoint ${p.ep}`}
                        >
                          {others.map((n) => (
                            <option key={n} value={n}>
                              node {n}
                            </option>
                          ))}
                        </select>
                        <button
                          type="button"
                          className="small"
                          data-testid={`migrate-${p.ep}`}
                          onClick={() =>
                            ask({
                              title: `Migrate endpoint ${p.ep} (${p.name}) to node ${to}?`,
                              body: `It moves live from node ${p.node}: frozen briefly, its state and queued messages go with it.`,
                              action: 'Migrate',
                              run: async () => {
                                const r = await api<MigrationResult>(
                                  token,
                                  'POST',
                                  `${path}/processes/${p.ep}/migrate`,
                                  {
                                    to: Number(to),
                                  },
                                );
                                onDone(
                                  `endpoint ${r.ep} migrated from node ${r.from} to node ${r.to} in ${r.totalMs.toFixed(0)} ms (frozen ${r.freezeMs.toFixed(1)} ms, ${r.stateful ? `${r.stateBytes} bytes of state` : 'restarted without state'})`,
                                );
                              },
                            })
                          }
                        >
                          migrate
                        </button>
                      </>
                    )}
                  </span>
                )}
              </td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}

function GroupsTable({ groups }: { groups: GroupRow[] | string | null }) {
  if (groups === null) return <p className="muted">loading…</p>;
  if (typeof groups === 'string') return <p className="muted">groups not available ({groups})</p>;
  if (groups.length === 0) return <p className="muted">no process groups</p>;
  return (
    <table data-testid="groups-table">
      <Head cols={['group', 'view', 'members', 'sent', 'delivered', 'views', 'behind']} />
      <tbody>
        {groups.map((g) => (
          <tr key={g.name}>
            <td>{g.name}</td>
            <td>{g.view ? `${g.view.id.epoch}.${g.view.id.coord}.${g.view.id.seq}` : '-'}</td>
            <td>{g.view ? g.view.members.map((m) => `${m.ep}@${m.node}`).join(' ') : '-'}</td>
            <td>{g.sent}</td>
            <td>{g.delivered}</td>
            <td>{g.views}</td>
            <td>{g.behind.length > 0 ? g.behind.join(',') : '-'}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function RunForm({ token, dc, ask }: { token: string; dc: DcRow; ask: (req: ConfirmRequest) => void }) {
  const [ep, setEp] = useState('100');
  const [node, setNode] = useState(String(Math.min(...dc.nodes)));
  const [name, setName] = useState('');
  const [cmd, setCmd] = useState('');
  const [error, setError] = useState<string | null>(null);
  const submit = () => {
    setError(null);
    const argv = splitCommand(cmd);
    if (argv.length === 0) {
      setError('command: give a program and its arguments');
      return;
    }
    ask({
      title: `Run at endpoint ${ep} of ${dc.name}?`,
      body: `${argv.join(' ')} on node ${node}`,
      action: 'Run',
      run: reportingTo(setError, async () => {
        await api(token, 'POST', `/dcs/${encodeURIComponent(dc.name)}/processes`, {
          ep: Number(ep),
          node: Number(node),
          cmd: argv,
          ...(name.trim() ? { name: name.trim() } : {}),
        });
        setCmd('');
      }),
    });
  };
  return (
    <InlineForm onSubmit={submit} error={error} errorTestId="run-error">
      <label>
        ep{' '}
        <input className="narrow" value={ep} onChange={(e) => setEp(e.target.value)} data-testid="run-ep" />
      </label>
      <label>
        node{' '}
        <select value={node} onChange={(e) => setNode(e.target.value)} data-testid="run-node">
          {dc.nodes.map((n) => (
            <option key={n} value={n}>
              {n}
            </option>
          ))}
        </select>
      </label>
      <input
        value={name}
        onChange={(e) => setName(e.target.value)}
        placeholder="name (optional)"
        data-testid="run-name"
      />
      <input
        className="wide"
        value={cmd}
        onChange={(e) => setCmd(e.target.value)}
        placeholder="command, e.g. node server.js"
        data-testid="run-cmd"
      />
      <button type="submit" data-testid="run">
        Run
      </button>
    </InlineForm>
  );
}
