/**
 * What the security and HTTPS tests share: the CLI run in-process (its exit code and what it printed) and
 * an `assert.rejects` matcher for a DvsError code.
 */
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { PassThrough } from 'node:stream';
import { main } from '../../../src/cli/main.js';
import { DvsError } from '../../../src/protocol/errors.js';

/** `dvs <args>` in this process, with an empty environment and a neutral working directory. */
export async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  stderr.on('data', (d: Buffer) => {
    err += d.toString();
  });
  const c = await main(args, { stdout, stderr, env: {}, cwd: tmpdir() });
  return { code: c, stdout: out, stderr: err };
}

/** For `assert.rejects`: a DvsError with code `c` (and a message matching `re`). */
export const code =
  (c: string, re?: RegExp) =>
  (e: unknown): true => {
    assert.ok(e instanceof DvsError, String(e));
    assert.equal(e.code, c, e.message);
    if (re) assert.match(e.message, re);
    return true;
  };
