/**
 * The dashboard in Debian's chromium (playwright-core): a 3-node cluster started by `dvs up`, the URL that
 * `dvs dashboard` prints, then as a user would: create a DC with limits (a bad one refused in place), run
 * the stateful counter server (examples/counter-server.js), see it in the endpoints table and its
 * container's limits, migrate it to another node from the dashboard and see it there with a migrate.done
 * event, pause and resume the DC, kill a node's daemon and watch the node turn down with an event.
 * Screenshots go to test-results/screenshots/. Needs the build (`npm run build`: dist/web) and `chromium`
 * on PATH.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmdirSync } from 'node:fs';
import { mkdir, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type Browser, chromium, type Page } from 'playwright-core';
import { alive, CliCluster, killAll } from '../integration/cli.js';

const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));
const SHOTS = join(ROOT, 'test-results', 'screenshots');

function which(cmd: string): string | undefined {
  try {
    return execFileSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}

const CHROMIUM = process.env.DVS_CHROMIUM ?? which('chromium');
const BUILT = existsSync(join(ROOT, 'dist', 'web', 'index.html')) && existsSync(join(ROOT, 'dist', 'src'));
const skip = !CHROMIUM
  ? 'chromium is not installed (apt-get install chromium)'
  : !BUILT
    ? 'the dashboard is not built (npm run build)'
    : false;

/** The flags that keep Chromium off the (closed) network and quiet in a container (ecosystem.md §13). */
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
  '--disable-dev-shm-usage',
];

/**
 * Remove what a daemon killed by the test left behind (its DC containers: their processes, cgroups and
 * named network namespaces, found by the node's isolation prefix); `dvs down` cleans the others.
 */
function cleanLeftovers(prefixes: string[]): void {
  if (prefixes.length === 0) return;
  const mine = (n: string) => prefixes.some((p) => n.startsWith(p));
  const dirs: string[] = [];
  if (existsSync('/sys/fs/cgroup')) {
    for (const ctl of readdirSync('/sys/fs/cgroup')) {
      const d = join('/sys/fs/cgroup', ctl, 'dvs');
      if (existsSync(d)) for (const n of readdirSync(d).filter(mine)) dirs.push(join(d, n));
    }
  }
  for (const d of dirs) {
    const procs = existsSync(join(d, 'cgroup.procs')) ? readFileSync(join(d, 'cgroup.procs'), 'utf8') : '';
    killAll(procs.split('\n').map(Number));
  }
  for (const d of dirs) {
    // A cgroup can be removed once its last process is gone (SIGKILL is not instant).
    for (let i = 0; i < 50; i++) {
      try {
        rmdirSync(d);
        break;
      } catch {
        execFileSync('sleep', ['0.1']);
      }
    }
  }
  if (existsSync('/run/netns'))
    for (const n of readdirSync('/run/netns').filter(mine)) {
      try {
        execFileSync('ip', ['netns', 'delete', n]);
      } catch {
        // already gone
      }
    }
}

describe('dashboard end to end (chromium)', { skip }, () => {
  const c = new CliCluster('dvs-dash-');
  const { dvs } = c;
  let browser: Browser | undefined;
  let page: Page;
  let daemonPids: number[] = [];
  const childPids: number[] = [];
  /** Isolation name prefixes of the nodes whose daemon the test kills. */
  const killedPrefixes: string[] = [];

  const shot = (name: string) =>
    page.screenshot({ path: join(SHOTS, `dashboard-${name}.png`), fullPage: true });

  before(async () => {
    await c.start();
    await mkdir(SHOTS, { recursive: true });
    const up = await dvs('up', '--nodes', '3', '--detach', '--timeout', '30000');
    assert.equal(up.code, 0, up.stderr);
    daemonPids = (await c.nodes()).map((n) => n.pid);
    browser = await chromium.launch({
      executablePath: CHROMIUM as string,
      args: CHROMIUM_ARGS,
      timeout: 60_000,
    });
    page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  });

  after(async () => {
    await browser?.close().catch(() => {});
    await c.stop([...daemonPids, ...childPids]);
    cleanLeftovers(killedPrefixes);
  });

  it('dvs api --json gives the URL and token; the token file is 0600', async () => {
    const r = await dvs('api', '--json');
    assert.equal(r.code, 0, r.stderr);
    const info = JSON.parse(r.stdout) as { url: string; token: string };
    assert.match(info.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.match(info.token, /^[0-9a-f]{64}$/);
    const res = await fetch(`${info.url}/api/v1/cluster`);
    assert.equal(res.status, 401);
    const { stdout } = await dvs('dashboard');
    assert.equal(stdout.trim(), `${info.url}/#token=${info.token}`);
    assert.equal((await stat(join(c.dir, 'api-token'))).mode & 0o777, 0o600);
  });

  it('creates a DC with limits, runs a stateful server, migrates it, pauses the DC, sees a node go down', async () => {
    const url = (await dvs('dashboard')).stdout.trim();
    await page.goto(url);
    // The token moved from the fragment to sessionStorage.
    await page.waitForFunction("!window.location.hash.includes('token=')");
    await page.getByTestId('live').filter({ hasText: 'live' }).waitFor({ timeout: 15_000 });
    await page.getByTestId('node-state-2').filter({ hasText: 'up' }).waitFor();
    await page.locator('.u-over').first().waitFor();
    // Two overviews make the first rate point, and the link RTT chart.
    await page.getByTestId('card-messages-s').locator('.value').filter({ hasNotText: '…' }).waitFor();
    await page.getByTestId('link-chart-rtt').waitFor();
    await shot('overview');

    await page.getByTestId('tab-dcs').click();
    // A bad limit is refused by the API, shown in place, and nothing is created.
    await page.getByTestId('dc-name').fill('demo');
    await page.getByTestId('dc-memory').fill('lots');
    await page.getByTestId('create-dc').click();
    await page.getByTestId('confirm').click();
    await page.getByTestId('create-dc-error').filter({ hasText: 'limits.memory' }).waitFor();
    await page.getByRole('button', { name: 'Cancel' }).click();
    await page.getByTestId('dc-name').fill('demo');
    await page.getByTestId('dc-memory').fill('512M');
    await page.getByTestId('dc-pids').fill('256');
    await page.getByTestId('create-dc').click();
    await page.getByTestId('confirm').click();
    await page.getByTestId('dc-row-demo').waitFor({ timeout: 15_000 });

    // A bad action shows the API's error in place (endpoint out of range: 400 with the field).
    await page.getByTestId('run-ep').fill('-5');
    await page.getByTestId('run-cmd').fill('sleep 1');
    await page.getByTestId('run').click();
    await page.getByTestId('confirm').click();
    await page.getByTestId('run-error').filter({ hasText: 'ep' }).waitFor();
    await page.getByRole('button', { name: 'Cancel' }).click();

    // The stateful counter server (its state moves through the SDK's onMigrate hooks) on node 0.
    await page.getByTestId('run-ep').fill('100');
    await page.getByTestId('run-node').selectOption('0');
    await page.getByTestId('run-name').fill('counter');
    await page
      .getByTestId('run-cmd')
      .fill(`${process.execPath} ${join(ROOT, 'examples', 'counter-server.js')}`);
    await page.getByTestId('run').click();
    await page.getByTestId('confirm').click();
    const epRow = page.getByTestId('endpoints-table').getByTestId('ep-row-100');
    await epRow.waitFor({ timeout: 15_000 });
    let cells = await epRow.locator('td').allTextContents();
    assert.deepEqual([cells[1], cells[2]], ['counter', '0']);
    const procRow = page.getByTestId('processes-table').getByTestId('proc-row-100');
    await procRow.waitFor();
    const pid = Number((await procRow.locator('td').allTextContents())[3]);
    assert.ok(pid > 0 && alive(pid), `process pid ${pid}`);
    childPids.push(pid);
    // Its container on each node, with the limits given at creation.
    await page.getByTestId('place-row-0').filter({ hasText: 'memory=512M' }).waitFor({ timeout: 10_000 });
    await shot('dc');

    // Migrate it to node 1 from the dashboard: the result says its state moved, the tables follow.
    await page.getByTestId('migrate-to-100').selectOption('1');
    await page.getByTestId('migrate-100').click();
    await page.getByTestId('confirm').click();
    const notice = page.getByTestId('dc-notice').filter({ hasText: 'migrated from node 0 to node 1' });
    await notice.waitFor({ timeout: 30_000 });
    assert.match((await notice.textContent()) ?? '', /8 bytes of state/);
    await page
      .getByTestId('processes-table')
      .getByTestId('proc-row-100')
      .locator('td:nth-child(3)', { hasText: /^1$/ })
      .waitFor({ timeout: 10_000 });
    await epRow.locator('td:nth-child(3)', { hasText: /^1$/ }).waitFor({ timeout: 10_000 });
    cells = await epRow.locator('td').allTextContents();
    assert.equal(cells[2], '1');
    const moved = Number((await procRow.locator('td').allTextContents())[3]);
    if (moved > 0) childPids.push(moved);
    await shot('migrated');

    // Pause and resume the DC: with containers its state pill follows; without, the refusal is shown.
    const st = await dvs('node', 'status', '--node', '0', '--json');
    const mode = (JSON.parse(st.stdout) as { nodes: { isolation?: { mode: string } }[] }).nodes[0]?.isolation
      ?.mode;
    await page.getByTestId('pause-dc').click();
    await page.getByTestId('confirm').click();
    if (mode === 'container') {
      await page.getByTestId('dc-state').filter({ hasText: 'paused' }).waitFor({ timeout: 10_000 });
      await shot('paused');
      await page.getByTestId('resume-dc').click();
      await page.getByTestId('confirm').click();
      await page.getByTestId('dc-state').filter({ hasText: 'running' }).waitFor({ timeout: 10_000 });
    } else {
      await page.getByRole('dialog').locator('.error').waitFor();
      await page.getByRole('button', { name: 'Cancel' }).click();
    }

    // The events page: the migration, logged by the node it left.
    await page.getByTestId('tab-events').click();
    await page.getByTestId('events-filter').selectOption('migrations');
    await page
      .getByTestId('events-table')
      .locator('tr', { hasText: 'migrate.done' })
      .filter({ hasText: 'demo/100' })
      .first()
      .waitFor({ timeout: 10_000 });
    await shot('events-migration');
    await page.getByTestId('events-filter').selectOption('all');

    await page.getByTestId('tab-links').click();
    await page.getByTestId('link-row-0-1').waitFor();
    await page.getByTestId('link-chart-rtt').waitFor();
    await page.getByTestId('link-chart-fps').waitFor();
    await shot('links');

    // Kill node 2's daemon: node 0 (serving the page) declares it down and logs it. Its container is
    // left behind, to be removed by the cleanup (by its isolation prefix).
    const st2 = await dvs('node', 'status', '--node', '2', '--json');
    const prefix = (JSON.parse(st2.stdout) as { nodes: { isolation?: { prefix: string } }[] }).nodes[0]
      ?.isolation?.prefix;
    if (prefix) killedPrefixes.push(prefix);
    process.kill(daemonPids[2]!, 'SIGKILL');
    await page.getByTestId('tab-nodes').click();
    await page.getByTestId('node-state-2').filter({ hasText: 'down' }).waitFor({ timeout: 20_000 });
    await shot('nodes-down');
    await page.getByTestId('tab-events').click();
    const ev = page
      .getByTestId('events-table')
      .locator('tr', { hasText: 'node.down' })
      .filter({ hasText: 'node2' });
    await ev.first().waitFor({ timeout: 20_000 });
    await shot('events');

    // The CLI reads the same logs.
    const r = await dvs('events', '--json', '--node', '0');
    assert.equal(r.code, 0, r.stderr);
    const kinds = (JSON.parse(r.stdout) as { events: { kind: string; subject: string }[] }).events.map(
      (e) => `${e.kind} ${e.subject}`,
    );
    for (const k of ['node.down node2', 'dc.created dc demo', 'migrate.done demo/100'])
      assert.ok(kinds.includes(k), `${k} in ${kinds.join(', ')}`);
  });
});
