/**
 * Join tokens that pin the cluster CA (the network join, docs/security.md), beside the plain tokens of
 * tokens.ts that the file flow still accepts.
 *
 * ```
 * dvsjt1-<id>.<secret>.<fingerprint>
 *        │    │        └ 64 hex: SHA-256 of the CA certificate (DER), lower case, no colons
 *        │    └ 43 chars base64url: 32 random bytes (the part that authorises)
 *        └ 8 chars base64url: 6 random bytes, a handle (logged, looked up; not secret)
 * e.g. dvsjt1-Vq3x_0aZ.hF2...43 chars....3f9c...64 hex...
 * ```
 *
 * The secret never travels. The CA directory keeps, in the same `tokens.json` as the plain tokens (and
 * under the same lock file, so the two flows cannot both spend one token):
 *
 * ```
 * { "hash": hex SHA-256("dvsjt1:" + id + "." + secret), "id": "<id>", "nodeId": 2 (optional),
 *   "createdAt": <ms>, "expiresAt": <ms> }
 * ```
 *
 * `hash` doubles as the key of the proof a joining node sends instead of the token:
 * `proof = HMAC-SHA256(key = the 32 bytes of hash, "dvs-join-v1\n" + nodeId + "\n" + csrPem)` (hex), so a
 * request seen on the wire is good only for the key pair of that CSR and that node id, once. The prefix
 * `dvsjt1:` keeps these hashes apart from the plain tokens' SHA-256(token): code that knows only plain
 * tokens (`consumeJoinToken`) cannot spend a pinned one, so it cannot skip the node-id binding.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { NodeId } from '../kernel/types.js';
import { DvsError } from '../protocol/errors.js';
import { withLockFile, writeFileAtomic } from './fsutil.js';
import { TOKEN_PREFIX, TOKENS_FILE, type TokenOptions } from './tokens.js';

/** Label of the proof's HMAC input: a proof for another protocol version can never verify. */
export const JOIN_PROOF_LABEL = 'dvs-join-v1';

const PINNED = /^dvsjt1-([A-Za-z0-9_-]{8})\.([A-Za-z0-9_-]{43})\.([0-9a-fA-F]{64})$/;
const TOKEN_ID = /^[A-Za-z0-9_-]{8}$/;

/** A pinned join token taken apart. */
export interface PinnedToken {
  /** Handle of the token: not secret, safe to log. */
  id: string;
  /** The authorising part. Secret. */
  secret: string;
  /** SHA-256 of the CA certificate, 64 lower-case hex digits. */
  caFingerprint: string;
}

/** A stored token record (tokens.json); plain tokens have neither `id` nor `nodeId`. */
export interface JoinTokenRecord {
  hash: string;
  id?: string;
  /** The only node id this token may join as; absent: any. */
  nodeId?: NodeId;
  createdAt: number;
  expiresAt: number;
}

/** Options of {@link createPinnedToken}. */
export interface PinnedTokenOptions extends TokenOptions {
  /** Bind the token to this node id: a join as any other id is refused (and does not spend it). */
  nodeId?: NodeId;
}

/** A new pinned token and when it expires. */
export interface NewPinnedToken {
  token: string;
  id: string;
  expiresAt: number;
  nodeId?: NodeId;
}

/** True if `token` has the pinned form (the plain `dvsjt1-<secret>` form is not). */
export function isPinnedToken(token: string): boolean {
  return PINNED.test(token.trim());
}

/** Take a pinned token apart. EINVAL if it is not one (with a hint when it is a plain token). */
export function parsePinnedToken(token: string): PinnedToken {
  const m = PINNED.exec(token.trim());
  if (!m) {
    throw new DvsError(
      'EINVAL',
      token.startsWith(TOKEN_PREFIX)
        ? 'this join token carries no CA fingerprint (old form): join with --ca-dir, or make a new one with dvs ca token'
        : `not a join token (want ${TOKEN_PREFIX}<id>.<secret>.<fingerprint>)`,
    );
  }
  return { id: m[1]!, secret: m[2]!, caFingerprint: m[3]!.toLowerCase() };
}

/** A certificate fingerprint in the token's form (`AB:CD:..` or hex in any case → lower-case hex). */
export function compactFingerprint(fp: string): string {
  const hex = fp.replace(/:/g, '').toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(hex)) throw new DvsError('EINVAL', `not a SHA-256 fingerprint: ${fp}`);
  return hex;
}

/** A fingerprint as openssl and node:crypto print it (`AB:CD:...`), for messages. */
export function colonFingerprint(hex: string): string {
  return (hex.toUpperCase().match(/../g) ?? []).join(':');
}

/** The stored hash (and proof key) of a pinned token, hex. */
export function pinnedTokenHash(t: Pick<PinnedToken, 'id' | 'secret'>): string {
  return createHash('sha256').update(`dvsjt1:${t.id}.${t.secret}`).digest('hex');
}

/** The proof a joining node sends for `csrPem` as `nodeId`, keyed by the token's hash (hex). */
export function joinProof(hashHex: string, nodeId: NodeId, csrPem: string): string {
  return createHmac('sha256', Buffer.from(hashHex, 'hex'))
    .update(`${JOIN_PROOF_LABEL}\n${nodeId}\n${csrPem}`)
    .digest('hex');
}

/**
 * Create a pinned one-time token for the CA whose fingerprint is `caFingerprint`, valid for `ttlMs`, and
 * record its hash in `caDir`.
 */
export async function createPinnedToken(
  caDir: string,
  caFingerprint: string,
  ttlMs: number,
  opts: PinnedTokenOptions = {},
): Promise<NewPinnedToken> {
  if (!Number.isFinite(ttlMs) || ttlMs <= 0) throw new DvsError('EINVAL', `bad token lifetime ${ttlMs} ms`);
  if (opts.nodeId !== undefined && !validNodeId(opts.nodeId)) {
    throw new DvsError('EINVAL', `bad node id ${opts.nodeId}`);
  }
  const now = opts.now ?? Date.now();
  const fp = compactFingerprint(caFingerprint);
  const id = randomBytes(6).toString('base64url');
  const secret = randomBytes(32).toString('base64url');
  const expiresAt = now + ttlMs;
  const record: JoinTokenRecord = {
    hash: pinnedTokenHash({ id, secret }),
    id,
    ...(opts.nodeId !== undefined ? { nodeId: opts.nodeId } : {}),
    createdAt: now,
    expiresAt,
  };
  await updateTokens(caDir, opts, (tokens) => [...tokens.filter((t) => t.expiresAt > now), record]);
  return {
    token: `${TOKEN_PREFIX}${id}.${secret}.${fp}`,
    id,
    expiresAt,
    ...(opts.nodeId !== undefined ? { nodeId: opts.nodeId } : {}),
  };
}

/** What a join presents to spend a pinned token: the proof, or the token itself (file flow). */
export type TokenCredential =
  | { kind: 'proof'; tokenId: string; proof: string; nodeId: NodeId; csrPem: string }
  | { kind: 'token'; token: PinnedToken; nodeId: NodeId };

/**
 * Check a credential against the stored record without spending it: EAUTH if the token is unknown, used,
 * expired, the proof is wrong, or the token is bound to another node id. Returns the record.
 */
export async function checkPinnedToken(
  caDir: string,
  cred: TokenCredential,
  opts: TokenOptions = {},
): Promise<JoinTokenRecord> {
  return checkRecords(await readTokens(caDir), cred, opts.now ?? Date.now());
}

/**
 * Spend a pinned token: {@link checkPinnedToken} again under the tokens file's lock, then remove it. Exactly
 * one of two racing spends succeeds; the other gets EAUTH "unknown or already used".
 */
export async function spendPinnedToken(
  caDir: string,
  cred: TokenCredential,
  opts: TokenOptions = {},
): Promise<JoinTokenRecord> {
  const now = opts.now ?? Date.now();
  let spent: JoinTokenRecord | undefined;
  let refusal: unknown;
  await updateTokens(caDir, opts, (tokens) => {
    try {
      // The records just read under the lock, not a possibly stale earlier read.
      spent = checkRecords(tokens, cred, now);
    } catch (e) {
      refusal = e;
      return tokens.filter((t) => t.expiresAt > now);
    }
    return tokens.filter((t) => t !== spent && t.expiresAt > now);
  });
  if (refusal !== undefined) throw refusal;
  return spent!;
}

function checkRecords(tokens: JoinTokenRecord[], cred: TokenCredential, now: number): JoinTokenRecord {
  const id = cred.kind === 'proof' ? cred.tokenId : cred.token.id;
  if (!TOKEN_ID.test(id)) throw new DvsError('EINVAL', 'malformed join token id');
  const r = tokens.find((t) => t.id === id);
  // One message for unknown, spent and wrong secret or proof: no oracle telling which ids exist.
  if (!r || !credentialMatches(r, cred)) throw new DvsError('EAUTH', 'join token unknown or already used');
  if (r.expiresAt <= now) {
    throw new DvsError('EAUTH', `join token expired at ${new Date(r.expiresAt).toISOString()}`);
  }
  if (r.nodeId !== undefined && r.nodeId !== cred.nodeId) {
    throw new DvsError('EAUTH', `join token is for node ${r.nodeId}, not node ${cred.nodeId}`);
  }
  return r;
}

function credentialMatches(r: JoinTokenRecord, cred: TokenCredential): boolean {
  if (!/^[0-9a-f]{64}$/.test(r.hash)) return false;
  const want =
    cred.kind === 'proof'
      ? Buffer.from(joinProof(r.hash, cred.nodeId, cred.csrPem), 'hex')
      : Buffer.from(r.hash, 'hex');
  const have = Buffer.from(cred.kind === 'proof' ? cred.proof : pinnedTokenHash(cred.token), 'hex');
  return have.length === want.length && timingSafeEqual(have, want);
}

function validNodeId(id: number): boolean {
  return Number.isInteger(id) && id >= 0 && id <= 0xffff;
}

async function readTokens(caDir: string): Promise<JoinTokenRecord[]> {
  let text: string;
  try {
    text = await readFile(join(caDir, TOKENS_FILE), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  let f: { version?: unknown; tokens?: unknown };
  try {
    f = JSON.parse(text) as typeof f;
  } catch {
    f = {};
  }
  if (f.version !== 1 || !Array.isArray(f.tokens)) {
    throw new DvsError('EINVAL', `${join(caDir, TOKENS_FILE)} is not a dvs token file`);
  }
  return f.tokens as JoinTokenRecord[];
}

/** Read-modify-write of tokens.json under tokens.ts's lock file (same format, same lock: one file, two flows). */
async function updateTokens(
  caDir: string,
  opts: TokenOptions,
  fn: (tokens: JoinTokenRecord[]) => JoinTokenRecord[],
): Promise<void> {
  const path = join(caDir, TOKENS_FILE);
  const lock = { timeoutMs: opts.timeoutMs ?? 5000, ...(opts.signal ? { signal: opts.signal } : {}) };
  await withLockFile(`${path}.lock`, lock, async () => {
    const tokens = fn(await readTokens(caDir));
    await writeFileAtomic(path, `${JSON.stringify({ version: 1, tokens }, null, 2)}\n`, 0o600);
  });
}
