/**
 * The `dvs` command line. {@link main} parses argv, runs one command and returns the exit code; it never
 * calls process.exit, so it can be embedded and tested.
 *
 * Exit codes: 0 success; 1 the operation failed (one line `dvs: error: <message> (<CODE>)` on stderr);
 * 2 usage error (bad option or argument); `dvs run --wait` exits with the process's own code (128+signal
 * if it was killed); 130 when interrupted while following output.
 */
import { readFileSync, realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError, Option } from '@commander-js/extra-typings';
import { api, dashboard, events } from './commands/api.js';
import { balance } from './commands/balance.js';
import { caInit, caToken, durationArg, ipListArg, nameListArg, nodeJoin } from './commands/ca.js';
import { down, up } from './commands/cluster.js';
import { dcCreate, dcFreeze, dcList, dcNodes, dcRemove, dcSet, dcShow, dcStats } from './commands/dc.js';
import { groupList } from './commands/group.js';
import { migrate } from './commands/migrate.js';
import { nodeStart } from './commands/node.js';
import { epList, exec, kill, logs, nodeStatus, ps, run } from './commands/proc.js';
import {
  snapshotCreate,
  snapshotFork,
  snapshotList,
  snapshotRemove,
  snapshotRestore,
  snapshotShow,
} from './commands/snapshot.js';
import { status } from './commands/status.js';
import { kvGet, kvList, kvPut, kvRemove, lockList } from './commands/svc.js';
import { top } from './commands/top.js';
import type { Ctx } from './context.js';
import { errorLine, type Io, Output } from './output.js';
import {
  dcNameArg,
  dcRefArg,
  intArg,
  logLevelArg,
  nodeIdArg,
  parseHostPort,
  parseNodeList,
  parsePeers,
  portArg,
  resolveClusterDir,
  signalArg,
  storeArg,
} from './parse.js';

/** Absolute path of this module: `dvs up` starts daemons by running it again. */
export const MAIN_PATH = fileURLToPath(import.meta.url);

/**
 * The package version, read from the nearest package.json named dvs (src/cli under tsx and dist/src/cli
 * when built sit at different depths). Not imported from the daemon so that commands which only talk to
 * daemons do not load it.
 */
function packageVersion(): string {
  for (let d = dirname(MAIN_PATH); d !== dirname(d); d = dirname(d)) {
    try {
      const pkg = JSON.parse(readFileSync(join(d, 'package.json'), 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === 'dvs' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // not here; keep walking up
    }
  }
  return '0.0.0';
}

/** Exit code of usage errors. */
export const EXIT_USAGE = 2;

const hostPortArg = (v: string) => {
  parseHostPort(v);
  return v;
};
const msArg = intArg(0, 2 ** 31 - 1);
const epArg = intArg(0, 0x7ffffffe);

function examples(lines: string[]): string {
  return `\nExamples:\n${lines.map((l) => `  ${l}`).join('\n')}\n`;
}

/** Builds the command tree. `ctx` is filled in by the action of whichever command runs. */
export function buildProgram(io: Io, result: { code: number }): Command {
  const out = new Output(io);
  const program = new Command()
    .name('dvs')
    .description('Distributed Virtualization System: distributed containers with location-transparent IPC.')
    .version(packageVersion(), '-V, --version')
    .option('--dir <DIR>', 'cluster state directory (default: $DVS_HOME, else $XDG_STATE_HOME/dvs)')
    .showSuggestionAfterError(true)
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => io.stderr.write(s),
      // Errors are printed by main() as one line with a code.
      outputError: () => {},
    });
  program.addHelpText(
    'after',
    examples([
      'dvs up --nodes 3 --detach          # a local 3-node cluster in the background',
      'dvs dc create demo                 # a distributed container on every node',
      'dvs run --dc demo --ep 100 -- node server.js',
      'dvs ep ls --dc demo                # who is bound where, blocked on what',
      'dvs status                         # nodes and links',
      'dvs down                           # stop the cluster',
      '',
      'Every command finds its cluster via --dir, $DVS_HOME or $XDG_STATE_HOME/dvs (default ~/.local/state/dvs).',
      'Read commands take --json. Exit codes: 0 ok, 1 failure, 2 usage error.',
    ]),
  );

  const dirOpt = (): string | undefined => program.opts().dir;
  const ctx: Ctx = {
    out,
    dir: () => resolveClusterDir(dirOpt(), io.env, io.cwd),
    dirGiven: () => dirOpt() !== undefined,
    mainPath: MAIN_PATH,
  };
  const act = (p: Promise<number>) =>
    p.then((code) => {
      result.code = code;
    });

  program
    .command('up')
    .description('start a local cluster of node daemons on loopback')
    .addOption(new Option('--nodes <N>', 'number of nodes').default(3).argParser(intArg(1, 64)))
    .option('--detach', 'return once the cluster is up (default: stay in the foreground)', false)
    .option('--foreground', 'stay in the foreground and stop the cluster on Ctrl-C (the default)')
    .option('--base-port <P>', 'use ports P.. (links) and P+N.. (metrics) instead of free ones', portArg)
    .addOption(
      new Option('--timeout <MS>', 'how long to wait for nodes and links').default(20_000).argParser(msArg),
    )
    .addOption(new Option('--log-level <L>', 'daemon log level').argParser(logLevelArg))
    .option(
      '--store <S>',
      'cluster store: embedded (the default; node 0 hosts it) or etcd://H:P[,H:P...] (an etcd already running)',
      storeArg,
    )
    .option('--no-store', 'no cluster store (no kv, locks, election, consensus; DCs pushed by the CLI)')
    .option(
      '--tls',
      'mutual TLS on node links: cluster CA in DIR/ca (made if missing), a certificate per node',
      false,
    )
    .addOption(
      new Option('--api-tls <MODE>', 'HTTPS API: auto (with --tls; default), on (needs --tls), off').choices([
        'auto',
        'on',
        'off',
      ] as const),
    )
    .addHelpText(
      'after',
      examples([
        'dvs up                              # 3 nodes, foreground; Ctrl-C stops them',
        'dvs up --detach                     # node 0 hosts the cluster store (embedded), the others use it',
        'dvs up --no-store --detach          # no cluster store: IPC only, no DVK services',
        'dvs up --store etcd://127.0.0.1:2379 --detach',
        'dvs up --nodes 5 --detach           # 5 nodes in the background (stop with dvs down)',
        'dvs up --tls --detach               # node links with mutual TLS (cluster CA in DIR/ca)',
        'dvs up --dir /tmp/c1 --base-port 7000 --detach',
        '',
        'Each node is a separate process; its files are in DIR/node<N>/ (daemon.log, stderr.log, logs/).',
      ]),
    )
    .action((o) =>
      act(
        up(ctx, {
          nodes: o.nodes,
          detach: o.detach && o.foreground !== true,
          timeoutMs: o.timeout,
          ...(o.basePort !== undefined ? { basePort: o.basePort } : {}),
          ...(o.logLevel !== undefined ? { logLevel: o.logLevel } : {}),
          // The embedded store by default, so the DVK services work out of the box; --no-store opts out.
          ...(o.store === false ? {} : { store: o.store ?? 'embedded' }),
          ...(o.tls ? { tls: true } : {}),
          ...(o.apiTls !== undefined ? { apiTls: o.apiTls } : {}),
        }),
      ),
    );

  program
    .command('down')
    .description('stop the local cluster (logs are kept)')
    .addOption(
      new Option('--timeout <MS>', 'wait this long for each daemon before SIGKILL')
        .default(5000)
        .argParser(msArg),
    )
    .addHelpText('after', examples(['dvs down', 'dvs down --dir /tmp/c1']))
    .action((o) => act(down(ctx, { timeoutMs: o.timeout })));

  const node = program.command('node').description('run a node daemon');
  node
    .command('start')
    .description('run one node daemon in the foreground until SIGINT/SIGTERM')
    .requiredOption('--node-id <N>', 'node id (0..65535)', nodeIdArg)
    .requiredOption('--listen <HOST:PORT>', 'node-link listen address', hostPortArg)
    .requiredOption('--socket <PATH>', 'local Unix socket for processes and the CLI')
    .requiredOption('--data <DIR>', "this node's data directory")
    .option('--name <NAME>', 'node name (default node<N>)')
    .option(
      '--peers <LIST>',
      'other nodes: ID=HOST:PORT,... (this node may be listed; it is skipped)',
      parsePeers,
    )
    .option('--metrics <HOST:PORT>', 'serve Prometheus /metrics here', hostPortArg)
    .option('--heartbeat-ms <MS>', 'heartbeat period on every link', intArg(10, 600_000))
    .option('--dead-after-ms <MS>', 'declare a silent peer dead after this long', intArg(10, 3_600_000))
    .option('--log-level <L>', 'fatal|error|warn|info|debug|trace|silent', logLevelArg)
    .option('--log-file <F>', 'write the JSON log here (default stderr)')
    .option(
      '--store <S>',
      'cluster store: embedded (hosted here), embedded:<ID> (hosted by node ID), etcd://H:P[,H:P...]',
      storeArg,
    )
    .option(
      '--seed <HOST:PORT>',
      'with --store embedded: use the store hosted by the peer at this node-link address',
      hostPortArg,
    )
    .option('--tls-dir <DIR>', 'mutual TLS on node links with DIR/ca.crt, node.crt, node.key (dvs node join)')
    .option('--api <HOST:PORT>', 'serve the REST API and the dashboard here (default: off)', hostPortArg)
    .option('--api-token-file <F>', 'file holding the API bearer token (else $DVS_API_TOKEN)')
    .option('--api-insecure-loopback', 'development only: loopback clients of the API need no token')
    .addOption(
      new Option(
        '--api-tls <MODE>',
        'HTTPS API with the --tls-dir credentials: auto (when there are some; default), on, off',
      ).choices(['auto', 'on', 'off'] as const),
    )
    .option('--ca-dir <DIR>', 'this node holds the cluster CA: serve the network join on --api')
    .addOption(
      new Option(
        '--isolation <MODE>',
        'auto: DC processes in containers with cgroup limits when root (else off); off: plain processes',
      ).choices(['auto', 'off'] as const),
    )
    .addHelpText(
      'after',
      examples([
        'dvs node start --node-id 0 --listen 127.0.0.1:7000 --socket /tmp/n0/dvk.sock --data /tmp/n0 \\',
        '    --peers 0=127.0.0.1:7000,1=127.0.0.1:7001',
        'dvs node start --node-id 1 --listen 10.0.0.2:7000 --socket /run/dvs/dvk.sock --data /var/lib/dvs \\',
        '    --peers 0=10.0.0.1:7000,1=10.0.0.2:7000,2=10.0.0.3:7000 --store etcd://10.0.0.1:2379,10.0.0.2:2379',
        'dvs node start --node-id 2 --listen 10.0.0.3:7000 --socket /run/dvs/dvk.sock --data /var/lib/dvs \\',
        '    --peers 0=10.0.0.1:7000,1=10.0.0.2:7000,2=10.0.0.3:7000 --store embedded --seed 10.0.0.1:7000',
        '',
        'dvs up does this for every node of a local cluster.',
      ]),
    )
    .action((o) => act(nodeStart(ctx, o)));
  node
    .command('status')
    .description('node status: address, DCs, endpoints, isolation mode and cgroup driver')
    .option('--node <ID>', 'only this node (default: all)', nodeIdArg)
    .option('--json', 'machine-readable output', false)
    .addHelpText('after', examples(['dvs node status', 'dvs node status --node 1 --json']))
    .action((o) => act(nodeStatus(ctx, { json: o.json, ...(o.node !== undefined ? { node: o.node } : {}) })));
  node
    .command('join')
    .description("get this node's certificate from the cluster CA with a one-time token (docs/security.md)")
    .requiredOption('--token <TOKEN>', 'join token from dvs ca token')
    .requiredOption('--node-id <N>', 'the node id the certificate is for (0..65535)', nodeIdArg)
    .option(
      '--via <URL>',
      'join over the network: API of the node holding the CA, https://HOST:PORT (http:// if its API is plain)',
    )
    .option('--ca-dir <DIR>', 'without --via: the CA directory (default: DIR/ca of the cluster directory)')
    .option('--tls-dir <DIR>', "where this node's credentials go (default: DIR/node<N>/tls)")
    .option('--name <NAME>', 'node name, also a DNS name of the certificate (default node<N>)')
    .option('--ip <LIST>', 'IP addresses of the certificate, comma-separated (default 127.0.0.1)', ipListArg)
    .option('--dns <LIST>', 'DNS names of the certificate, comma-separated (default: the name)', nameListArg)
    .option('--json', 'print the paths and fingerprints as JSON', false)
    .addHelpText(
      'after',
      examples([
        'dvs node join --token "$(dvs ca token)" --node-id 2',
        'dvs node join --token dvsjt1-... --node-id 2 --ca-dir /mnt/ca --tls-dir /var/lib/dvs/tls --ip 10.0.0.3',
        'dvs node join --token dvsjt1-... --node-id 2 --via https://10.0.0.1:8080 --tls-dir /var/lib/dvs/tls --ip 10.0.0.3',
        '',
        'The key pair is made here and never leaves this host; only the request goes to the CA.',
        'With --via, the CA is checked against the fingerprint in the token before anything is sent.',
      ]),
    )
    .action((o) => act(nodeJoin(ctx, o)));

  const ca = program.command('ca').description('the cluster CA: node certificates and join tokens');
  ca.command('init')
    .description('create the cluster CA (ECDSA P-256) in DIR/ca')
    .option('--ca-dir <DIR>', 'put it here instead')
    .option('--json', 'print the paths and the CA fingerprint as JSON', false)
    .addHelpText('after', examples(['dvs ca init', 'dvs ca init --dir /tmp/c1 --json']))
    .action((o) => act(caInit(ctx, o)));
  ca.command('token')
    .description('create a one-time join token (dvs node join spends it)')
    .option('--ca-dir <DIR>', 'the CA directory (default: DIR/ca)')
    .option('--node-id <N>', 'bind the token to this node id (default: good for any)', nodeIdArg)
    .addOption(
      new Option('--ttl <DURATION>', 'lifetime: 30m, 1h, 7d').default(3_600_000, '1h').argParser(durationArg),
    )
    .option('--json', 'print {token, id, expiresAt, caDir, caFingerprint, nodeId}', false)
    .addHelpText(
      'after',
      examples(['dvs ca token', 'dvs ca token --ttl 15m --json', 'dvs ca token --node-id 2 --ttl 30m']),
    )
    .action((o) =>
      act(
        caToken(ctx, {
          ttlMs: o.ttl,
          json: o.json,
          ...(o.caDir ? { caDir: o.caDir } : {}),
          ...(o.nodeId !== undefined ? { nodeId: o.nodeId } : {}),
        }),
      ),
    );

  program
    .command('status')
    .description('nodes of the cluster (up/down) and their links')
    .option('--json', 'machine-readable output', false)
    .addOption(new Option('--timeout <MS>', 'per-node answer timeout').default(2000).argParser(msArg))
    .addHelpText('after', examples(['dvs status', "dvs status --json | jq '.nodes[] | {id, state}'"]))
    .action((o) => act(status(ctx, { json: o.json, timeoutMs: o.timeout })));

  const dc = program.command('dc').description('distributed containers: create, list, remove');
  dc.command('create')
    .description('create a DC on some or all nodes')
    .argument('<NAME>', 'DC name', dcNameArg)
    .option('--nodes <LIST>', 'nodes of the DC, e.g. 0,1 or 0-2 (default: all)', parseNodeList)
    .option('--id <N>', 'DC id (default: the next free one)', intArg(1, 65535))
    .option('--max-payload <BYTES>', 'largest message payload (default 4096)', intArg(1, 1 << 20))
    .option(
      '--post-window <N>',
      'post() window per sender/destination pair (default 1024)',
      intArg(1, 1 << 20),
    )
    .option(
      '--sys-endpoints <N>',
      'endpoints below N are system endpoints (default 64)',
      intArg(0, 0x7ffffffe),
    )
    .option('--memory <BYTES>', 'memory limit per node, e.g. 256M (K/M/G = 1024^n)')
    .option('--cpus <N>', 'CPU limit per node, e.g. 0.5 or 50%')
    .option('--pids <N>', 'most tasks (processes and threads) per node')
    .option('--io-bps <BYTES>', 'block I/O per disk per node, read and write, e.g. 10M')
    .option('--net-bps <BITS>', 'DC LAN bandwidth each way per node, e.g. 50M (needs --lan)')
    .option('--lan <PREFIX>', 'a DC-private LAN across its nodes (VXLAN), e.g. 172.31.5.0/24')
    .option('--json', 'print the DC configuration as JSON', false)
    .addHelpText(
      'after',
      examples([
        'dvs dc create demo',
        'dvs dc create web --memory 256M --cpus 0.5 --pids 128 --lan 172.31.5.0/24',
        'dvs dc create db --nodes 1,2 --max-payload 65536',
        'dvs dc create web --id 7',
      ]),
    )
    .action((name, o) => act(dcCreate(ctx, name, o)));
  dc.command('set')
    .description('change limits of a DC live, on every node of it')
    .requiredOption('--dc <NAME>', 'DC name or id', dcRefArg)
    .option('--memory <BYTES>', 'memory limit per node, e.g. 512M; max removes it')
    .option('--cpus <N>', 'CPU limit per node, e.g. 0.5; max removes it')
    .option('--pids <N>', 'most tasks per node; max removes it')
    .option('--io-bps <BYTES>', 'block I/O per disk per node; max removes it')
    .option('--net-bps <BITS>', 'DC LAN bandwidth each way per node; max removes it')
    .option('--json', 'machine-readable output', false)
    .addHelpText('after', examples(['dvs dc set --dc web --memory 512M', 'dvs dc set --dc web --cpus max']))
    .action((o) => act(dcSet(ctx, o)));
  dc.command('stats')
    .description('usage against limits, per node')
    .requiredOption('--dc <NAME>', 'DC name or id', dcRefArg)
    .option('--json', 'machine-readable output', false)
    .addHelpText('after', examples(['dvs dc stats --dc web', 'dvs dc stats --dc web --json']))
    .action((o) => act(dcStats(ctx, o)));
  dc.command('show')
    .description('a DC: its nodes, containers, limits and LAN addresses')
    .requiredOption('--dc <NAME>', 'DC name or id', dcRefArg)
    .option('--json', 'machine-readable output', false)
    .addHelpText('after', examples(['dvs dc show --dc web']))
    .action((o) => act(dcShow(ctx, o)));
  for (const what of ['pause', 'resume'] as const) {
    dc.command(what)
      .description(what === 'pause' ? 'freeze every process of a DC (all nodes)' : 'thaw a paused DC')
      .requiredOption('--dc <NAME>', 'DC name or id', dcRefArg)
      .option('--json', 'machine-readable output', false)
      .addHelpText('after', examples([`dvs dc ${what} --dc web`]))
      .action((o) => act(dcFreeze(ctx, what, o)));
  }
  dc.command('ls')
    .description('list DCs with their nodes and endpoint counts')
    .option('--json', 'machine-readable output', false)
    .addHelpText('after', examples(['dvs dc ls', 'dvs dc ls --json']))
    .action((o) => act(dcList(ctx, o)));
  dc.command('rm')
    .description('remove a DC from every node (its processes are stopped)')
    .argument('<NAME>', 'DC name or id', dcRefArg)
    .option('--json', 'machine-readable output', false)
    .addHelpText('after', examples(['dvs dc rm demo']))
    .action((name, o) => act(dcRemove(ctx, name, o)));
  dc.command('add-node')
    .description('add a node to a DC (needs a cluster store: dvs up --store)')
    .argument('<NAME>', 'DC name or id', dcRefArg)
    .argument('<NODE>', 'node id', nodeIdArg)
    .option('--json', 'print the new DC configuration as JSON', false)
    .addHelpText('after', examples(['dvs dc add-node demo 2']))
    .action((name, node, o) => act(dcNodes(ctx, 'add', name, node, o)));
  dc.command('rm-node')
    .description('remove a node from a DC; its processes there are stopped (needs a cluster store)')
    .argument('<NAME>', 'DC name or id', dcRefArg)
    .argument('<NODE>', 'node id', nodeIdArg)
    .option('--json', 'print the new DC configuration as JSON', false)
    .addHelpText('after', examples(['dvs dc rm-node demo 2']))
    .action((name, node, o) => act(dcNodes(ctx, 'rm', name, node, o)));

  program
    .command('run')
    .description('run a process bound to an endpoint of a DC')
    .requiredOption('--dc <NAME>', 'DC name or id', dcRefArg)
    .requiredOption('--ep <N>', 'endpoint number', epArg)
    .option('--node <ID>', 'node to run on (default: the DC node with the most headroom)', nodeIdArg)
    .option('--name <NAME>', 'endpoint name (default ep<N>)')
    .option('--json', 'print {dc, ep, node, pid}', false)
    .option('--wait', "stream the process's output and exit with its exit code", false)
    .option(
      '--replicas <N>',
      'replicas in all, one per node: the primary on --node, backups on the next live nodes of the DC',
      intArg(1, 65536),
    )
    .option(
      '--mode <MODE>',
      'replication mode with --replicas: primary-backup or state-machine (docs/replication.md)',
    )
    .argument('<CMD...>', 'command and arguments (after --)')
    .addHelpText(
      'after',
      examples([
        'dvs run --dc demo --ep 100 -- node server.js',
        'dvs run --dc demo --ep 101 --node 2 --name client --wait -- node client.js 100',
        'dvs run --dc demo --ep 102 --replicas 3 --mode primary-backup -- node examples/replicated-counter.js',
        'dvs run --dc demo --ep 103 --replicas 3 --mode state-machine -- node examples/smr-counter.js',
        '',
        'The process gets DVS_SOCKET, DVS_DC and DVS_ENDPOINT; connect() from the SDK reads them.',
      ]),
    )
    .action((cmd, o) =>
      act(
        run(ctx, cmd, {
          dc: o.dc,
          ep: o.ep,
          json: o.json,
          wait: o.wait,
          ...(o.node !== undefined ? { node: o.node } : {}),
          ...(o.name !== undefined ? { name: o.name } : {}),
          ...(o.replicas !== undefined ? { replicas: o.replicas } : {}),
          ...(o.mode !== undefined ? { mode: o.mode } : {}),
        }),
      ),
    );

  program
    .command('logs')
    .description('print the output of a process started by dvs run')
    .requiredOption('--dc <NAME>', 'DC name or id', dcRefArg)
    .requiredOption('--ep <N>', 'endpoint number', epArg)
    .option('-f, --follow', 'keep printing until the process exits (Ctrl-C stops following)', false)
    .addHelpText('after', examples(['dvs logs --dc demo --ep 100', 'dvs logs --dc demo --ep 100 --follow']))
    .action((o) => act(logs(ctx, o)));

  program
    .command('kill')
    .description('signal the process of an endpoint (SIGKILL after a grace period)')
    .requiredOption('--dc <NAME>', 'DC name or id', dcRefArg)
    .requiredOption('--ep <N>', 'endpoint number', epArg)
    .addOption(new Option('--signal <SIG>', 'signal name or number').default('SIGTERM').argParser(signalArg))
    .addOption(new Option('--grace <MS>', 'then SIGKILL after this long').default(3000).argParser(msArg))
    .option(
      '--replicas',
      'a replicated endpoint: stop every replica and end the group (without it, killing the primary fails over)',
      false,
    )
    .option('--json', 'print the exited process as JSON', false)
    .addHelpText(
      'after',
      examples([
        'dvs kill --dc demo --ep 100',
        'dvs kill --dc demo --ep 100 --signal INT',
        'dvs kill --dc demo --ep 100 --replicas   # every replica of a --replicas endpoint',
      ]),
    )
    .action((o) =>
      act(
        kill(ctx, {
          dc: o.dc,
          ep: o.ep,
          signal: o.signal,
          graceMs: o.grace,
          json: o.json,
          replicas: o.replicas,
        }),
      ),
    );

  program
    .command('migrate')
    .description(
      'live-migrate an endpoint and its process to another node of its DC (nothing queued is lost)',
    )
    .requiredOption('--dc <NAME>', 'DC name or id', dcRefArg)
    .requiredOption('--ep <N>', 'endpoint number', epArg)
    .requiredOption('--to <ID>', 'destination node', nodeIdArg)
    .option('--json', 'print the result (freeze time, pids, state size) as JSON', false)
    .addHelpText(
      'after',
      `
The process must have been started with dvs run. A process that declares dvk.onMigrate({export, import})
keeps its state (examples/counter-server.js); one that does not is restarted at the destination without it.
Senders never see an error: messages queued for the endpoint follow it, calls in progress finish first.
${examples(['dvs migrate --dc demo --ep 100 --to 1', 'dvs migrate --dc demo --ep 100 --to 2 --json'])}`,
    )
    .action((o) => act(migrate(ctx, { dc: o.dc, ep: o.ep, to: o.to, json: o.json })));

  program
    .command('balance')
    .description("propose (and with --apply perform) migrations that even out the load of a DC's nodes")
    .requiredOption('--dc <NAME>', 'DC name or id', dcRefArg)
    .option('--apply', 'perform the migrations (dvs migrate, one by one)', false)
    .option('--max-moves <N>', 'at most N migrations (default 8)', intArg(1, 1000))
    .option('--json', 'print the plan (loads before and after, moves, results) as JSON', false)
    .addHelpText(
      'after',
      `
Load is the CPU (in cores) of the processes each node runs, from its live load report (dvs node status);
each process counts at least 0.05 so idle ones are spread by count. Only processes started by dvs run move.
${examples(['dvs balance --dc demo', 'dvs balance --dc demo --apply', 'dvs balance --dc demo --json'])}`,
    )
    .action((o) =>
      act(
        balance(ctx, {
          dc: o.dc,
          apply: o.apply,
          json: o.json,
          ...(o.maxMoves !== undefined ? { maxMoves: o.maxMoves } : {}),
        }),
      ),
    );

  program
    .command('top')
    .description('performance per node, DC and endpoint: CPU, memory, messages, bytes, queues, latencies')
    .option('--dc <NAME>', 'only this DC', dcRefArg)
    .option('--once', 'print one sample and exit', false)
    .option('--json', 'print samples as JSON (with --once: one document)', false)
    .addOption(
      new Option('--interval <MS>', 'between samples (rates are over it)')
        .default(1000)
        .argParser(intArg(50, 3_600_000)),
    )
    .addHelpText(
      'after',
      examples(['dvs top', 'dvs top --dc demo --interval 2000', 'dvs top --once --json | jq .endpoints']),
    )
    .action((o) =>
      act(
        top(ctx, {
          once: o.once,
          json: o.json,
          interval: o.interval,
          ...(o.dc !== undefined ? { dc: o.dc } : {}),
        }),
      ),
    );

  program
    .command('ps')
    .description('processes started by dvs run, on every node (running and recently exited)')
    .option('--dc <NAME>', 'only this DC', dcRefArg)
    .option('--json', 'machine-readable output', false)
    .addHelpText('after', examples(['dvs ps', 'dvs ps --dc demo --json']))
    .action((o) => act(ps(ctx, { json: o.json, ...(o.dc !== undefined ? { dc: o.dc } : {}) })));

  program
    .command('exec')
    .description("run a command inside a DC's container on a node and print its output")
    .requiredOption('--dc <NAME>', 'DC name or id', dcRefArg)
    .option('--node <ID>', "node (default: the DC's lowest)", nodeIdArg)
    .addOption(new Option('--timeout <MS>', 'kill it after this long').default(30_000).argParser(msArg))
    .option('--json', 'print {code, signal, stdout, stderr}', false)
    .argument('<CMD...>', 'command and arguments (after --)')
    .addHelpText(
      'after',
      examples(['dvs exec --dc demo -- ps -ef', 'dvs exec --dc demo --node 2 -- ip -br addr']),
    )
    .action((cmd, o) =>
      act(
        exec(ctx, cmd, {
          dc: o.dc,
          timeoutMs: o.timeout,
          json: o.json,
          ...(o.node !== undefined ? { node: o.node } : {}),
        }),
      ),
    );

  const ep = program.command('ep').description('endpoints of a DC');
  ep.command('ls')
    .description("the DC's endpoint table merged across nodes (the prototype's procs table)")
    .requiredOption('--dc <NAME>', 'DC name or id', dcRefArg)
    .option('--json', 'machine-readable output', false)
    .addHelpText(
      'after',
      examples(['dvs ep ls --dc demo', "dvs ep ls --dc demo --json | jq '.endpoints[].ep'"]),
    )
    .action((o) => act(epList(ctx, o)));

  const group = program.command('group').description("a DC's process groups (views, ordered multicast)");
  group
    .command('ls')
    .description('groups of a DC as every node sees them: newest view, members, counters')
    .requiredOption('--dc <NAME>', 'DC name or id', dcRefArg)
    .option('--json', 'machine-readable output', false)
    .addHelpText(
      'after',
      examples(['dvs group ls --dc demo', "dvs group ls --dc demo --json | jq '.groups[]'"]),
    )
    .action((o) => act(groupList(ctx, o)));

  const lock = program.command('lock').description("a DC's locks (held by its processes through the SDK)");
  lock
    .command('ls')
    .description('held locks of a DC: holder, fencing token and waiters in queue order')
    .requiredOption('--dc <NAME>', 'DC name or id', dcRefArg)
    .option('--json', 'machine-readable output', false)
    .addHelpText('after', examples(['dvs lock ls --dc demo', "dvs lock ls --dc demo --json | jq '.locks[]'"]))
    .action((o) => act(lockList(ctx, o)));

  const kv = program.command('kv').description("a DC's key/value space (needs a cluster store)");
  kv.command('get')
    .description("print a key's value")
    .argument('<KEY>', 'key')
    .requiredOption('--dc <NAME>', 'DC name or id', dcRefArg)
    .option('--json', 'the entry as JSON (value as text and base64, revisions)', false)
    .addHelpText('after', examples(['dvs kv get config/mode --dc demo']))
    .action((key, o) => act(kvGet(ctx, key, o)));
  kv.command('put')
    .description('write a key')
    .argument('<KEY>', 'key')
    .argument('<VALUE>', 'value (stored as UTF-8)')
    .requiredOption('--dc <NAME>', 'DC name or id', dcRefArg)
    .option('--json', 'print {key, revision}', false)
    .addHelpText('after', examples(['dvs kv put config/mode fast --dc demo']))
    .action((key, value, o) => act(kvPut(ctx, key, value, o)));
  kv.command('rm')
    .description('delete a key')
    .argument('<KEY>', 'key')
    .requiredOption('--dc <NAME>', 'DC name or id', dcRefArg)
    .option('--json', 'print {key, deleted, revision}', false)
    .addHelpText('after', examples(['dvs kv rm config/mode --dc demo']))
    .action((key, o) => act(kvRemove(ctx, key, o)));
  kv.command('ls')
    .description('list keys (under a prefix)')
    .argument('[PREFIX]', 'key prefix (default: every key)')
    .requiredOption('--dc <NAME>', 'DC name or id', dcRefArg)
    .option('--limit <N>', 'at most N keys', intArg(1, 100_000))
    .option('--json', 'machine-readable output', false)
    .addHelpText('after', examples(['dvs kv ls --dc demo', 'dvs kv ls config/ --dc demo --json']))
    .action((prefix, o) => act(kvList(ctx, prefix, o)));

  const snap = program
    .command('snapshot')
    .description('consistent snapshots of a whole DC (states + messages in flight), restore and fork');
  snap
    .command('create')
    .description('record a consistent cut of a running DC (processes declare dvk.onSnapshot hooks)')
    .requiredOption('--dc <NAME>', 'DC name or id', dcRefArg)
    .option('--name <NAME>', 'snapshot name (default: DC name and time)')
    .addOption(new Option('--timeout <MS>', 'fail (ETIMEDOUT) if not complete in this time').argParser(msArg))
    .option('--json', 'print the snapshot summary as JSON', false)
    .addHelpText(
      'after',
      `
Every process with onSnapshot hooks records its state and the messages it receives until each peer's
marker; processes without hooks are recorded as stateless. Participants must keep receiving.
${examples(['dvs snapshot create --dc ring --name cut1', 'dvs snapshot create --dc ring --json'])}`,
    )
    .action((o) =>
      act(
        snapshotCreate(ctx, {
          dc: o.dc,
          json: o.json,
          ...(o.name !== undefined ? { name: o.name } : {}),
          ...(o.timeout !== undefined ? { timeoutMs: o.timeout } : {}),
        }),
      ),
    );
  snap
    .command('ls')
    .description('stored snapshots')
    .option('--dc <NAME>', 'only snapshots of this DC', dcRefArg)
    .option('--json', 'machine-readable output', false)
    .addHelpText('after', examples(['dvs snapshot ls', 'dvs snapshot ls --dc ring --json']))
    .action((o) => act(snapshotList(ctx, { json: o.json, ...(o.dc !== undefined ? { dc: o.dc } : {}) })));
  snap
    .command('show')
    .description('processes and channels of a snapshot')
    .argument('<NAME>', 'snapshot name')
    .option('--json', 'everything, states and payloads in base64', false)
    .addHelpText('after', examples(['dvs snapshot show cut1', 'dvs snapshot show cut1 --json']))
    .action((name, o) => act(snapshotShow(ctx, name, o)));
  snap
    .command('rm')
    .description('delete a snapshot')
    .argument('<NAME>', 'snapshot name')
    .option('--json', 'print {removed}', false)
    .addHelpText('after', examples(['dvs snapshot rm cut1']))
    .action((name, o) => act(snapshotRemove(ctx, name, o)));
  snap
    .command('restore')
    .description("stop a DC's processes and start them again from a snapshot of it")
    .requiredOption('--dc <NAME>', 'DC name or id', dcRefArg)
    .requiredOption('--snapshot <NAME>', 'snapshot name')
    .option('--json', 'print the result as JSON', false)
    .addHelpText('after', examples(['dvs snapshot restore --dc ring --snapshot cut1']))
    .action((o) => act(snapshotRestore(ctx, o)));
  snap
    .command('fork')
    .description('start a new DC from a snapshot: same programs, same nodes, in-flight messages again')
    .requiredOption('--snapshot <NAME>', 'snapshot name')
    .requiredOption('--as <NAME>', 'name of the new DC')
    .option('--json', 'print the result as JSON', false)
    .addHelpText('after', examples(['dvs snapshot fork --snapshot cut1 --as ring2']))
    .action((o) => act(snapshotFork(ctx, o)));

  program
    .command('api')
    .description("the REST API's URL and token of the local cluster")
    .option('--json', 'print {url, token, node, ca?} (ca: the CA file to verify an HTTPS API with)', false)
    .option('--node <ID>', 'the API of this node (default: the first)', nodeIdArg)
    .addHelpText(
      'after',
      examples([
        'dvs api',
        'curl -H "Authorization: Bearer $(dvs api --json | jq -r .token)" "$(dvs api --json | jq -r .url)/api/v1/cluster"',
        'with dvs up --tls the API is HTTPS: add --cacert "$(dvs api --json | jq -r .ca)"',
      ]),
    )
    .action((o) => act(api(ctx, { json: o.json, ...(o.node !== undefined ? { node: o.node } : {}) })));

  program
    .command('dashboard')
    .description('print the web dashboard URL (with the API token in its #fragment)')
    .option('--open', 'open it with xdg-open, if installed', false)
    .option('--node <ID>', 'the dashboard of this node (default: the first)', nodeIdArg)
    .addHelpText('after', examples(['dvs dashboard', 'dvs dashboard --open']))
    .action((o) => act(dashboard(ctx, { open: o.open, ...(o.node !== undefined ? { node: o.node } : {}) })));

  program
    .command('events')
    .description("the nodes' event logs merged by time (node up/down, DCs, processes)")
    .option('-f, --follow', 'keep printing new events until Ctrl-C', false)
    .option('--json', 'machine-readable output (with --follow: one JSON object per line)', false)
    .option('--node <ID>', "only this node's log", nodeIdArg)
    .option('--limit <N>', 'at most the last N events', intArg(1, 100_000))
    .addHelpText(
      'after',
      examples(['dvs events', 'dvs events --follow', 'dvs events --json | jq .events[].kind']),
    )
    .action((o) =>
      act(
        events(ctx, {
          follow: o.follow,
          json: o.json,
          ...(o.node !== undefined ? { node: o.node } : {}),
          ...(o.limit !== undefined ? { limit: o.limit } : {}),
        }),
      ),
    );

  return program;
}

/** Runs the CLI with `argv` (without node and script). Returns the exit code. */
export async function main(argv: string[], io?: Partial<Io>): Promise<number> {
  const fullIo: Io = {
    stdout: io?.stdout ?? process.stdout,
    stderr: io?.stderr ?? process.stderr,
    env: io?.env ?? process.env,
    cwd: io?.cwd ?? process.cwd(),
  };
  const result = { code: 0 };
  const program = buildProgram(fullIo, result);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return result.code;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.exitCode === 0)
        return 0;
      if (e.code === 'commander.help' || e.code === 'commander.executeSubCommandAsync') return e.exitCode;
      const msg = e.message
        .replace(/^error:\s*/, '')
        .replace(/\s*\n+\s*/g, ' ')
        .trim();
      fullIo.stderr.write(`dvs: error: ${msg} (EINVAL)\n`);
      return EXIT_USAGE;
    }
    fullIo.stderr.write(`${errorLine(e)}\n`);
    return 1;
  }
}

// Run directly (`node --import tsx src/cli/main.ts ...`, or how `dvs up` starts daemons).
function isEntryPoint(): boolean {
  try {
    return process.argv[1] !== undefined && realpathSync(process.argv[1]) === realpathSync(MAIN_PATH);
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  void main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
