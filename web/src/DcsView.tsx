/**
 * The DCs page: the list, a create form, and for the selected DC its nodes, endpoint table (state flags and
 * counters, like the prototype's procs table), processes, run form, kill and remove actions. The selected
 * DC's tables reload on every overview the stream delivers (once a second).
 */
import { useEffect, useState } from 'react';
import { api } from './api';
import type { ConfirmRequest } from './Confirm';
import { peer, splitCommand, time } from './format';
import type { ClusterView, DcRow, EndpointInfo, ProcessInfo } from './types';

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
          <thead>
            <tr>
              <th>id</th>
              <th>name</th>
              <th>nodes</th>
              <th>endpoints</th>
              <th>max payload</th>
              <th>sys eps</th>
              <th>post window</th>
              <th />
            </tr>
          </thead>
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
    ask({
      title: `Create DC '${name}'?`,
      body: `On nodes ${(list ?? all).join(', ')}.`,
      action: 'Create',
      run: async () => {
        try {
          await api(token, 'POST', '/dcs', { name, ...(list ? { nodes: list } : {}) });
          onCreated(name);
          setName('');
        } catch (e) {
          setError(e instanceof Error ? e.message : String(e));
          throw e;
        }
      },
    });
  };
  return (
    <form
      className="inline"
      onSubmit={(e) => {
        e.preventDefault();
        submit();
      }}
    >
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
      <button type="submit" disabled={name.trim() === ''} data-testid="create-dc">
        Create DC
      </button>
      {error && (
        <span className="error" data-testid="create-dc-error">
          {error}
        </span>
      )}
    </form>
  );
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
  const [error, setError] = useState<string | null>(null);
  const path = `/dcs/${encodeURIComponent(dc.name)}`;

  // Reload on every overview tick (the stream drives it); the tick value itself is the trigger.
  useEffect(() => {
    let gone = false;
    void tick;
    Promise.all([
      api<{ endpoints: EndpointInfo[] }>(token, 'GET', `${path}/endpoints`),
      api<{ processes: ProcessInfo[] }>(token, 'GET', `${path}/processes`),
    ])
      .then(([e, p]) => {
        if (gone) return;
        setEps(e.endpoints);
        setProcs(p.processes);
        setError(null);
      })
      .catch((e: unknown) => {
        if (!gone) setError(e instanceof Error ? e.message : String(e));
      });
    return () => {
      gone = true;
    };
  }, [token, path, tick]);

  return (
    <div className="detail-box" data-testid="dc-detail">
      <h3>
        DC {dc.name} (id {dc.id}) · nodes {dc.nodes.join(', ')}
      </h3>
      {error && <p className="error">{error}</p>}
      <RunForm token={token} dc={dc} ask={ask} />
      <h4>Endpoints</h4>
      {eps === null ? (
        <p className="muted">loading…</p>
      ) : eps.length === 0 ? (
        <p className="muted">no endpoints bound</p>
      ) : (
        <table data-testid="endpoints-table">
          <thead>
            <tr>
              <th>ep</th>
              <th>name</th>
              <th>node</th>
              <th>pid</th>
              <th>kind</th>
              <th>flags</th>
              <th>sendto</th>
              <th>getfrom</th>
              <th>queued</th>
              <th>ntfy</th>
              <th>lsent</th>
              <th>rsent</th>
              <th>recv</th>
              <th>notifies</th>
              <th>copy</th>
            </tr>
          </thead>
          <tbody>
            {eps.map((e) => (
              <tr key={`${e.ep}-${e.node}`} data-testid={`ep-row-${e.ep}`}>
                <td>{e.ep}</td>
                <td>{e.name}</td>
                <td>{e.node}</td>
                <td>{e.pid}</td>
                <td>{e.kind}</td>
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
      )}
      <h4>Processes</h4>
      {procs.length === 0 ? (
        <p className="muted">none started</p>
      ) : (
        <table data-testid="processes-table">
          <thead>
            <tr>
              <th>ep</th>
              <th>name</th>
              <th>node</th>
              <th>pid</th>
              <th>command</th>
              <th>started</th>
              <th>state</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {procs.map((p) => (
              <tr key={`${p.node}-${p.pid}`} data-testid={`proc-row-${p.ep}`}>
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
                    <span className="pill down">{p.exit.signal ?? `exit ${p.exit.code}`}</span>
                  )}
                </td>
                <td>
                  {p.exit === null && (
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
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
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
      run: async () => {
        try {
          await api(token, 'POST', `/dcs/${encodeURIComponent(dc.name)}/processes`, {
            ep: Number(ep),
            node: Number(node),
            cmd: argv,
            ...(name.trim() ? { name: name.trim() } : {}),
          });
          setCmd('');
        } catch (e) {
          setError(e instanceof Error ? e.message : String(e));
          throw e;
        }
      },
    });
  };
  return (
    <form
      className="inline"
      onSubmit={(e) => {
        e.preventDefault();
        submit();
      }}
    >
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
      {error && (
        <span className="error" data-testid="run-error">
          {error}
        </span>
      )}
    </form>
  );
}
