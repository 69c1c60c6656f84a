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
import { down, up } from './commands/cluster.js';
import { dcCreate, dcList, dcNodes, dcRemove } from './commands/dc.js';
import { nodeStart } from './commands/node.js';
import { epList, kill, logs, run } from './commands/proc.js';
import { status } from './commands/status.js';
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
      'cluster store: embedded (node 0 hosts it) or etcd://H:P[,H:P...] (an etcd already running)',
      storeArg,
    )
    .addHelpText(
      'after',
      examples([
        'dvs up                              # 3 nodes, foreground; Ctrl-C stops them',
        'dvs up --store embedded --detach    # node 0 hosts the cluster store, the others use it',
        'dvs up --store etcd://127.0.0.1:2379 --detach',
        'dvs up --nodes 5 --detach           # 5 nodes in the background (stop with dvs down)',
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
          ...(o.store !== undefined ? { store: o.store } : {}),
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
    .option('--json', 'print the DC configuration as JSON', false)
    .addHelpText(
      'after',
      examples([
        'dvs dc create demo',
        'dvs dc create db --nodes 1,2 --max-payload 65536',
        'dvs dc create web --id 7',
      ]),
    )
    .action((name, o) => act(dcCreate(ctx, name, o)));
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
    .option('--node <ID>', "node to run on (default: the DC's lowest node)", nodeIdArg)
    .option('--name <NAME>', 'endpoint name (default ep<N>)')
    .option('--json', 'print {dc, ep, node, pid}', false)
    .option('--wait', "stream the process's output and exit with its exit code", false)
    .argument('<CMD...>', 'command and arguments (after --)')
    .addHelpText(
      'after',
      examples([
        'dvs run --dc demo --ep 100 -- node server.js',
        'dvs run --dc demo --ep 101 --node 2 --name client --wait -- node client.js 100',
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
    .option('--json', 'print the exited process as JSON', false)
    .addHelpText(
      'after',
      examples(['dvs kill --dc demo --ep 100', 'dvs kill --dc demo --ep 100 --signal INT']),
    )
    .action((o) => act(kill(ctx, { dc: o.dc, ep: o.ep, signal: o.signal, graceMs: o.grace, json: o.json })));

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
