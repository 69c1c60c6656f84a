/** Small file helpers for secrets: atomic writes with an explicit mode, and a lock file. */
import { randomBytes } from 'node:crypto';
import { open, rename, rm, stat, writeFile } from 'node:fs/promises';
import { DvsError } from '../protocol/errors.js';

/**
 * Write `data` to `path` atomically (a temp file in the same directory, then rename) with `mode`: readers
 * never see half a file, and a secret never exists with looser permissions, even briefly.
 */
export async function writeFileAtomic(path: string, data: string, mode: number): Promise<void> {
  const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    await writeFile(tmp, data, { mode, flag: 'wx' });
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

/** True if `path` exists. */
export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

/** Options of {@link withLockFile}. */
export interface LockOptions {
  /** Give up after this long (ETIMEDOUT), ms. */
  timeoutMs: number;
  signal?: AbortSignal;
  /** A lock file older than this was left by a crashed process and is taken over, ms (default 30 s). */
  staleMs?: number;
}

/**
 * Run `fn` holding `lockPath` (created with O_EXCL), so two processes sharing a directory (two `dvs node
 * join` spending tokens from one CA dir) never interleave their read-modify-write.
 */
export async function withLockFile<T>(lockPath: string, opts: LockOptions, fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + opts.timeoutMs;
  const staleMs = opts.staleMs ?? 30_000;
  for (;;) {
    if (opts.signal?.aborted) throw new DvsError('EABORTED', `waiting for ${lockPath} aborted`);
    try {
      const h = await open(lockPath, 'wx', 0o600);
      await h.close();
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const st = await stat(lockPath).catch(() => null);
    if (st && Date.now() - st.mtimeMs > staleMs) {
      await rm(lockPath, { force: true });
      continue;
    }
    if (Date.now() > deadline) throw new DvsError('ETIMEDOUT', `lock ${lockPath} is held by another process`);
    await new Promise((r) => setTimeout(r, 20));
  }
  try {
    return await fn();
  } finally {
    await rm(lockPath, { force: true });
  }
}

/** Refuse a private key file that group or others may read: it may have been copied or leaked. */
export async function checkPrivate(path: string): Promise<void> {
  const st = await stat(path);
  if ((st.mode & 0o077) !== 0) {
    throw new DvsError(
      'EAUTH',
      `${path} is accessible by group/others (mode ${(st.mode & 0o777).toString(8)}): chmod 600 it`,
    );
  }
}
