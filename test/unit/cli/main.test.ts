import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { main } from '../../../src/cli/main.js';

/** Runs main() with captured streams; no sockets, and a cluster dir that does not exist. */
async function cli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const sink = (f: (s: string) => void) =>
    new Writable({
      write(chunk, _enc, cb) {
        f(String(chunk));
        cb();
      },
    });
  const code = await main(argv, {
    stdout: sink((s) => {
      out += s;
    }),
    stderr: sink((s) => {
      err += s;
    }),
    env: { HOME: '/nonexistent-dvs-home' },
    cwd: '/',
  });
  return { code, out, err };
}

const ONE_ERROR_LINE = /^dvs: error: [^\n]+ \([A-Z]+\)\n$/;

describe('cli main - usage errors', () => {
  it('reports a bad argument as one line with exit code 2', async () => {
    const r = await cli(['dc', 'create', '1bad']);
    assert.equal(r.code, 2);
    assert.match(r.err, ONE_ERROR_LINE);
    assert.match(r.err, /not a valid DC name/);
    assert.equal(r.out, '');
  });

  it('reports unknown commands and options, and missing required options', async () => {
    for (const argv of [
      ['nope'],
      ['status', '--bogus'],
      ['run', '--ep', '1', '--', 'true'],
      ['up', '--nodes', '0'],
    ]) {
      const r = await cli(argv);
      assert.equal(r.code, 2, argv.join(' '));
      assert.match(r.err, ONE_ERROR_LINE, argv.join(' '));
    }
  });

  it('reports a missing cluster as ENOENT with a hint, exit code 1', async () => {
    const r = await cli(['status', '--dir', '/nonexistent-dvs-dir/c1']);
    assert.equal(r.code, 1);
    assert.match(r.err, ONE_ERROR_LINE);
    assert.match(
      r.err,
      /no cluster in \/nonexistent-dvs-dir\/c1 .*dvs up --dir \/nonexistent-dvs-dir\/c1.*\(ENOENT\)/,
    );
  });

  it('down with no cluster is not an error', async () => {
    const r = await cli(['down', '--dir', '/nonexistent-dvs-dir/c1']);
    assert.equal(r.code, 0);
    assert.match(r.out, /nothing to stop/);
  });
});

describe('cli main - help', () => {
  for (const argv of [
    ['--help'],
    ['up', '--help'],
    ['run', '--help'],
    ['dc', 'create', '--help'],
    ['ep', 'ls', '--help'],
  ]) {
    it(`${argv.join(' ')} prints usage with examples`, async () => {
      const r = await cli(argv);
      assert.equal(r.code, 0);
      assert.match(r.out, /^Usage: dvs/m);
      assert.match(r.out, /Examples:\n {2}dvs /);
    });
  }
});
