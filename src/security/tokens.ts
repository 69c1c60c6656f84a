/**
 * One-time join tokens (`dvs ca token`, spent by `dvs node join`). A token authorises issuing exactly one node
 * certificate. Only its SHA-256 hash is kept, in the CA directory, so reading the file does not yield usable
 * tokens:
 *
 * ```
 * <caDir>/tokens.json   (mode 0600)
 * { "version": 1,
 *   "tokens": [ { "hash": "<sha256 hex of the token>", "createdAt": <ms>, "expiresAt": <ms> }, ... ] }
 * ```
 *
 * A token is `dvsjt1-` followed by 32 random bytes in base64url (256 bits: not guessable, so a fast hash
 * is enough). Spending removes it; expired tokens are pruned whenever the file is written.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DvsError } from '../protocol/errors.js';
import { withLockFile, writeFileAtomic } from './fsutil.js';

/** File of the token hashes inside the CA directory. */
export const TOKENS_FILE = 'tokens.json';
/** Prefix of every join token (versioned, so the format can change). */
export const TOKEN_PREFIX = 'dvsjt1-';
/** Default lifetime of a join token, ms (1 h). */
export const DEFAULT_TOKEN_TTL_MS = 3_600_000;

interface TokenRecord {
  hash: string;
  createdAt: number;
  expiresAt: number;
}

interface TokenFile {
  version: 1;
  tokens: TokenRecord[];
}

/** Options of the token calls. */
export interface TokenOptions {
  /** Clock (ms since the epoch), for tests; default Date.now(). */
  now?: number;
  /** How long to wait for another process holding the token file, ms (default 5000). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** A new token and when it expires. */
export interface NewToken {
  token: string;
  expiresAt: number;
}

/** Create a one-time join token valid for `ttlMs` and record its hash in `caDir`. */
export async function createJoinToken(
  caDir: string,
  ttlMs: number,
  opts: TokenOptions = {},
): Promise<NewToken> {
  if (!Number.isFinite(ttlMs) || ttlMs <= 0) throw new DvsError('EINVAL', `bad token lifetime ${ttlMs} ms`);
  const now = opts.now ?? Date.now();
  const token = TOKEN_PREFIX + randomBytes(32).toString('base64url');
  const expiresAt = now + ttlMs;
  await update(caDir, opts, (tokens) => [
    ...tokens.filter((t) => t.expiresAt > now),
    { hash: hashToken(token), createdAt: now, expiresAt },
  ]);
  return { token, expiresAt };
}

/**
 * Spend `token`: succeeds once per token, before it expires. Throws EAUTH (unknown, already used or expired:
 * the message says which of unknown-or-used and expired) or EINVAL (not shaped like a token).
 */
export async function consumeJoinToken(caDir: string, token: string, opts: TokenOptions = {}): Promise<void> {
  if (!token.startsWith(TOKEN_PREFIX) || token.length < TOKEN_PREFIX.length + 43) {
    throw new DvsError('EINVAL', `not a join token (want ${TOKEN_PREFIX}...)`);
  }
  const now = opts.now ?? Date.now();
  const want = Buffer.from(hashToken(token), 'hex');
  let found: TokenRecord | undefined;
  await update(caDir, opts, (tokens) => {
    found = tokens.find((t) => {
      const have = Buffer.from(t.hash, 'hex');
      return have.length === want.length && timingSafeEqual(have, want);
    });
    return tokens.filter((t) => t !== found && t.expiresAt > now);
  });
  if (!found) throw new DvsError('EAUTH', 'join token unknown or already used');
  if (found.expiresAt <= now) {
    throw new DvsError('EAUTH', `join token expired at ${new Date(found.expiresAt).toISOString()}`);
  }
}

/** Tokens not yet spent nor expired (hash prefix and times only), for `dvs ca token --list`. */
export async function listJoinTokens(caDir: string, opts: TokenOptions = {}): Promise<TokenRecord[]> {
  const now = opts.now ?? Date.now();
  return (await read(caDir)).tokens.filter((t) => t.expiresAt > now);
}

/** Parse a duration: `90s`, `15m`, `1h`, `7d`, `500ms`, or plain milliseconds. EINVAL otherwise. */
export function parseDuration(s: string): number {
  const m = /^(\d+)(ms|s|m|h|d)?$/.exec(s.trim());
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;
  const ms = m ? Number(m[1]) * unit[(m[2] ?? 'ms') as keyof typeof unit] : Number.NaN;
  if (!Number.isSafeInteger(ms) || ms <= 0) {
    throw new DvsError('EINVAL', `bad duration ${s}: want e.g. 30m, 1h, 7d`);
  }
  return ms;
}

function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

async function read(caDir: string): Promise<TokenFile> {
  let text: string;
  try {
    text = await readFile(join(caDir, TOKENS_FILE), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { version: 1, tokens: [] };
    throw e;
  }
  const f = JSON.parse(text) as Partial<TokenFile>;
  if (f.version !== 1 || !Array.isArray(f.tokens)) {
    throw new DvsError('EINVAL', `${join(caDir, TOKENS_FILE)} is not a dvs token file`);
  }
  return { version: 1, tokens: f.tokens };
}

async function update(
  caDir: string,
  opts: TokenOptions,
  fn: (tokens: TokenRecord[]) => TokenRecord[],
): Promise<void> {
  const path = join(caDir, TOKENS_FILE);
  const lock = { timeoutMs: opts.timeoutMs ?? 5000, ...(opts.signal ? { signal: opts.signal } : {}) };
  await withLockFile(`${path}.lock`, lock, async () => {
    const f = await read(caDir);
    const next: TokenFile = { version: 1, tokens: fn(f.tokens) };
    await writeFileAtomic(path, `${JSON.stringify(next, null, 2)}\n`, 0o600);
  });
}
