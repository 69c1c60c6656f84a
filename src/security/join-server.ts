/**
 * The CA side of the network join (docs/security.md "Network join"): a node that holds the cluster CA
 * directory answers `POST /api/v1/join` (src/api/join.ts) by checking the proof made with a pinned join
 * token (join-token.ts), signing the joining node's CSR and spending the token, atomically.
 *
 * Order of a request, cheapest refusal first, and the token spent only once everything else passed (a CSR
 * with a typo does not cost the operator a new token):
 *
 * ```
 * limiter (per remote address) → proof + expiry + node binding (read only) → CSR check and signature
 *   → spend under the tokens.json lock (the race winner answers; the loser gets EAUTH) → {cert, ca}
 * ```
 */
import type { NodeId } from '../kernel/types.js';
import { DvsError } from '../protocol/errors.js';
import { type CaInfo, loadCa } from './ca-dir.js';
import { checkPinnedToken, spendPinnedToken, type TokenCredential } from './join-token.js';
import { type PemPair, signNodeRequest } from './pki.js';

/** A join request as the route received it (the wire body, minus `version`). */
export interface JoinRequest {
  tokenId: string;
  nodeId: NodeId;
  /** PKCS#10 request, PEM. */
  csr: string;
  /** HMAC proof, 64 hex (join-token.ts). */
  proof: string;
}

/** What a successful join returns. */
export interface JoinAnswer {
  /** The node certificate, PEM. */
  cert: string;
  /** The CA certificate, PEM (the joining node checks it against the token's fingerprint). */
  ca: string;
}

/** Options of {@link JoinAuthority}. */
export interface JoinAuthorityOptions {
  /** The cluster CA directory (`dvs ca init`): ca.crt, ca.key, tokens.json. */
  caDir: string;
  /** Lifetime of issued node certificates, days (default pki.ts NODE_VALID_DAYS). */
  validDays?: number;
  /** Failures allowed per remote address within `windowMs` before it is refused for the rest of it. */
  maxFailures?: number;
  windowMs?: number;
  /** Clock (ms), for tests. */
  now?: () => number;
}

/** The CA of a node, serving joins. start() loads and checks the CA (ENOENT, EAUTH); stop() forgets it. */
export class JoinAuthority {
  private ca: (PemPair & { info: CaInfo }) | undefined;
  readonly limiter: FailureLimiter;
  private readonly now: () => number;

  constructor(private readonly opts: JoinAuthorityOptions) {
    this.now = opts.now ?? Date.now;
    this.limiter = new FailureLimiter({
      maxFailures: opts.maxFailures ?? 10,
      windowMs: opts.windowMs ?? 60_000,
      now: this.now,
    });
  }

  /** Load the CA now, so a wrong `--ca-dir` stops the daemon at start rather than at the first join. */
  async start(): Promise<void> {
    this.ca = await loadCa(this.opts.caDir);
  }

  async stop(): Promise<void> {
    this.ca = undefined;
  }

  /** The CA certificate, PEM (public: what `GET /api/v1/join/ca` serves). */
  get caCert(): string {
    return this.loaded().certPem;
  }

  /** Fingerprint of the CA certificate, `AB:CD:...`. */
  get caFingerprint(): string {
    return this.loaded().info.fingerprint;
  }

  /**
   * Issue a certificate for `req`. EAUTH: unknown/used/expired token, wrong proof, token bound to another
   * node, CSR signature bad or for another node; EINVAL: malformed CSR or SAN. Does not touch the limiter:
   * the caller decides what counts as a failure of whom.
   */
  async join(req: JoinRequest): Promise<JoinAnswer> {
    const ca = this.loaded();
    const cred: TokenCredential = {
      kind: 'proof',
      tokenId: req.tokenId,
      proof: req.proof,
      nodeId: req.nodeId,
      csrPem: req.csr,
    };
    const clock = { now: this.now() };
    await checkPinnedToken(this.opts.caDir, cred, clock);
    let cert: string;
    try {
      cert = await signNodeRequest(ca, req.csr, {
        nodeId: req.nodeId,
        ...(this.opts.validDays !== undefined ? { validDays: this.opts.validDays } : {}),
      });
    } catch (e) {
      // A CSR the parser chokes on deep inside (odd key types, broken inner DER) is bad input, not a 500.
      if (e instanceof DvsError) throw e;
      throw new DvsError('EINVAL', 'certificate request rejected: not a usable PKCS#10 request', undefined, {
        cause: e,
      });
    }
    // Spent last: only a request that would succeed uses the token up; a racing twin is refused here.
    await spendPinnedToken(this.opts.caDir, cred, clock);
    return { cert, ca: ca.certPem };
  }

  private loaded(): PemPair & { info: CaInfo } {
    if (this.ca === undefined) throw new DvsError('EUNAVAIL', 'the join authority is not started');
    return this.ca;
  }
}

/** Options of {@link FailureLimiter}. */
export interface FailureLimiterOptions {
  maxFailures: number;
  windowMs: number;
  /** Most addresses tracked; beyond it the oldest window is forgotten (bounded memory under a flood). */
  maxKeys?: number;
  now?: () => number;
}

/**
 * Counts failures per key (a remote address) in a fixed window that starts at the first failure: after
 * `maxFailures` of them, {@link blockedFor} says how long the key is still refused. Success does not reset
 * the count (a guesser with one valid token must not get a fresh budget).
 */
export class FailureLimiter {
  private readonly windows = new Map<string, { start: number; failures: number }>();
  private readonly now: () => number;

  constructor(private readonly opts: FailureLimiterOptions) {
    this.now = opts.now ?? Date.now;
  }

  /** ms until `key` may try again, or 0 if it may now. */
  blockedFor(key: string): number {
    const w = this.live(key);
    if (w === undefined || w.failures < this.opts.maxFailures) return 0;
    return w.start + this.opts.windowMs - this.now();
  }

  /** Record one failure of `key`. */
  fail(key: string): void {
    const w = this.live(key);
    if (w !== undefined) {
      w.failures++;
      return;
    }
    const max = this.opts.maxKeys ?? 10_000;
    if (this.windows.size >= max) this.prune();
    // Still full of live windows: drop the oldest (Map keeps insertion order).
    if (this.windows.size >= max) {
      const oldest = this.windows.keys().next().value;
      if (oldest !== undefined) this.windows.delete(oldest);
    }
    this.windows.set(key, { start: this.now(), failures: 1 });
  }

  /** Number of keys tracked (for tests and metrics). */
  get size(): number {
    return this.windows.size;
  }

  private live(key: string): { start: number; failures: number } | undefined {
    const w = this.windows.get(key);
    if (w !== undefined && this.now() - w.start >= this.opts.windowMs) {
      this.windows.delete(key);
      return undefined;
    }
    return w;
  }

  private prune(): void {
    const now = this.now();
    for (const [k, w] of this.windows) if (now - w.start >= this.opts.windowMs) this.windows.delete(k);
  }
}
