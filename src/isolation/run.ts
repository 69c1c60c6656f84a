/**
 * Running the system tools the isolation layer drives (`ip`, `tc`, `bridge`, `unshare`, `nsenter`): no
 * shell, a timeout on every call, an optional AbortSignal, and failures as DvsError carrying the tool's
 * stderr (which is what an operator needs to see: "RTNETLINK answers: File exists", ...).
 */
import { execFile } from 'node:child_process';
import { DvsError } from '../protocol/errors.js';

/** Options of every call that runs a tool. */
export interface RunOptions {
  /** Default 10 s. */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Written to the tool's stdin (`ip -batch -`). */
  input?: string;
}

/** Default time a single tool invocation may take. */
export const DEFAULT_TOOL_TIMEOUT_MS = 10_000;

/** Runs `file args`; resolves with stdout, rejects with a DvsError (EINTERNAL, ENOENT, ETIMEDOUT, EABORTED). */
export function runTool(file: string, args: readonly string[], opts: RunOptions = {}): Promise<string> {
  opts.signal?.throwIfAborted();
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      args,
      {
        timeout: opts.timeoutMs ?? DEFAULT_TOOL_TIMEOUT_MS,
        maxBuffer: 16 * 1024 * 1024,
        ...(opts.signal ? { signal: opts.signal } : {}),
        encoding: 'utf8',
      },
      (err, stdout, stderr) => {
        if (!err) return resolve(stdout);
        const e = err as NodeJS.ErrnoException & { killed?: boolean; code?: string | number };
        const cmd = [file, ...args].join(' ');
        if (e.name === 'AbortError') {
          return reject(new DvsError('EABORTED', `aborted: ${cmd}`, undefined, { cause: err }));
        }
        if (e.code === 'ENOENT') {
          return reject(
            new DvsError('ENOENT', `${file} not found (install it)`, { cmd: file }, { cause: err }),
          );
        }
        if (e.killed) {
          return reject(new DvsError('ETIMEDOUT', `timed out: ${cmd}`, { cmd }, { cause: err }));
        }
        const msg = String(stderr).trim() || e.message;
        reject(new DvsError('EINTERNAL', `${cmd}: ${msg}`, { cmd, stderr: String(stderr) }, { cause: err }));
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** Like {@link runTool}, but resolves with undefined instead of failing (for cleanup of things maybe gone). */
export async function tryTool(
  file: string,
  args: readonly string[],
  opts: RunOptions = {},
): Promise<string | undefined> {
  try {
    return await runTool(file, args, opts);
  } catch {
    return undefined;
  }
}

/** Resolves after `ms`, or rejects with EABORTED when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new DvsError('EABORTED', 'aborted'));
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(new DvsError('EABORTED', 'aborted'));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Polls `cond` every `everyMs` until it returns true; rejects with ETIMEDOUT (`what` in the message) after
 * `timeoutMs`. For kernel state that changes asynchronously (freezer FREEZING -> FROZEN, cgroup emptying).
 */
export async function pollUntil(
  cond: () => Promise<boolean> | boolean,
  what: string,
  opts: { timeoutMs?: number; everyMs?: number; signal?: AbortSignal } = {},
): Promise<void> {
  const deadline = Date.now() + (opts.timeoutMs ?? 5000);
  for (;;) {
    if (await cond()) return;
    if (Date.now() >= deadline) throw new DvsError('ETIMEDOUT', `timed out waiting for ${what}`);
    await sleep(opts.everyMs ?? 20, opts.signal);
  }
}
