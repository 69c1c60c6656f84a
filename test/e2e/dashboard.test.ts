/**
 * The dashboard in Debian's chromium (playwright-core): a 3-node cluster started by `dvs up`, the URL that
 * `dvs dashboard` prints, then as a user would: create a DC, run a process, see it in the endpoints table,
 * kill a node's daemon and watch the node turn down with an event. Screenshots go to
 * test-results/screenshots/. Needs the build (`npm run build`: dist/web) and `chromium` on PATH.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type Browser, chromium, type Page } from 'playwright-core';

const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));
const BIN = join(ROOT, 'bin', 'dvs.js');
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

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('dashboard end to end (chromium)', { skip }, () => {
  let dir: string;
  let browser: Browser | undefined;
  let page: Page;
  let daemonPids: number[] = [];
  const childPids: number[] = [];

  function dvs(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    return new Promise((res) => {
      execFile(
        process.execPath,
        [BIN, '--dir', dir, ...args],
        { cwd: dir, timeout: 60_000, env: { ...process.env, NO_COLOR: '1' } },
        (err, stdout, stderr) => {
          res({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
        },
      );
    });
  }

  const shot = (name: string) =>
    page.screenshot({ path: join(SHOTS, `dashboard-${name}.png`), fullPage: true });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dvs-dash-'));
    await mkdir(SHOTS, { recursive: true });
    const up = await dvs('up', '--nodes', '3', '--detach', '--timeout', '30000');
    assert.equal(up.code, 0, up.stderr);
    const cluster = JSON.parse(await readFile(join(dir, 'cluster.json'), 'utf8')) as {
      nodes: { pid: number }[];
    };
    daemonPids = cluster.nodes.map((n) => n.pid);
    browser = await chromium.launch({
      executablePath: CHROMIUM as string,
      args: CHROMIUM_ARGS,
      timeout: 60_000,
    });
    page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  });

  after(async () => {
    await browser?.close().catch(() => {});
    await dvs('down', '--timeout', '3000').catch(() => {});
    for (const pid of [...daemonPids, ...childPids]) {
      if (pid > 0 && alive(pid)) process.kill(pid, 'SIGKILL');
    }
    await rm(dir, { recursive: true, force: true });
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
    assert.equal((await stat(join(dir, 'api-token'))).mode & 0o777, 0o600);
  });

  it('opens, creates a DC, runs a process, and shows a killed node down with an event', async () => {
    const url = (await dvs('dashboard')).stdout.trim();
    await page.goto(url);
    // The token moved from the fragment to sessionStorage.
    await page.waitForFunction("!window.location.hash.includes('token=')");
    await page.getByTestId('live').filter({ hasText: 'live' }).waitFor({ timeout: 15_000 });
    await page.getByTestId('node-state-2').filter({ hasText: 'up' }).waitFor();
    await page.locator('.u-over').first().waitFor();
    // Two overviews make the first rate point.
    await page.getByTestId('card-messages-s').locator('.value').filter({ hasNotText: '…' }).waitFor();
    await shot('overview');

    await page.getByTestId('tab-dcs').click();
    await page.getByTestId('dc-name').fill('demo');
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

    await page.getByTestId('run-ep').fill('100');
    await page.getByTestId('run-node').selectOption('2');
    await page.getByTestId('run-name').fill('srv');
    await page.getByTestId('run-cmd').fill(`${process.execPath} -e "setInterval(() => {}, 1e6)"`);
    await page.getByTestId('run').click();
    await page.getByTestId('confirm').click();
    const row = page.getByTestId('endpoints-table').getByTestId('ep-row-100');
    await row.waitFor({ timeout: 15_000 });
    const cells = await row.locator('td').allTextContents();
    assert.equal(cells[1], 'srv');
    assert.equal(cells[2], '2');
    const pid = Number(cells[3]);
    assert.ok(pid > 0 && alive(pid), `process pid ${cells[3]}`);
    childPids.push(pid);
    await page.getByTestId('proc-row-100').waitFor();
    await shot('dc');

    await page.getByTestId('tab-links').click();
    await page.getByTestId('links-table').waitFor();
    await shot('links');

    // Kill node 2's daemon: node 0 (serving the page) declares it down and logs it.
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

    // The CLI reads the same log.
    const r = await dvs('events', '--json', '--node', '0');
    assert.equal(r.code, 0, r.stderr);
    const kinds = (JSON.parse(r.stdout) as { events: { kind: string; subject: string }[] }).events.map(
      (e) => `${e.kind} ${e.subject}`,
    );
    assert.ok(kinds.includes('node.down node2') && kinds.includes('dc.created dc demo'), kinds.join(', '));
  });
});
