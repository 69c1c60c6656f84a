/**
 * DC-scoped leader election: the queue recipe of the locks (src/cluster/lock.ts), under
 * `/dvs/svc/<dc>/elections/<name>/<lease>`. Candidates queue by create revision; the head of the queue is the
 * leader, and its key's createRevision is the term: strictly increasing across the leaders of one election,
 * so "at most one leader per term" holds by construction, and a stale leader's writes can be fenced with its
 * term exactly as with a lock's token.
 *
 * A leader leads until it resigns or its lease ends (the daemon binds the lease to the candidate process or
 * node; a service-granted lease is kept alive by this instance). Then the next candidate in the queue leads,
 * with a higher term. Followers learn the leader and term from {@link ElectionService.observe}, an async
 * iterator that lists the queue once and then follows it with a watch (re-listing after a compaction or a
 * lost watch), yielding each change of (leader, term).
 */
import { lockPrefix } from '../cluster/lock.js';
import type { KeyValue, WatchEnd } from '../cluster/store.js';
import { dvsError } from '../protocol/errors.js';
import { LockService, ownerOf } from './lock.js';
import {
  AsyncQueue,
  type CallOptions,
  DcService,
  hasControl,
  type ServiceOptions,
  sleep,
  storeCall,
  validateName,
} from './scope.js';

/** Options of {@link ElectionService.campaign}. */
export interface CampaignOptions {
  /** ms to wait for leadership (ETIMEDOUT after; the candidate leaves the queue). */
  timeout?: number;
  signal?: AbortSignal;
  /** The candidate's lease (kept alive by the caller): leadership ends when it does. */
  lease?: string;
  /** Without `lease`: TTL of a lease the service grants and keeps alive, s (default 10). */
  ttl?: number;
}

/** Leadership won by {@link ElectionService.campaign}. */
export interface Leadership {
  name: string;
  candidate: string;
  /** Strictly increasing across the leaders of this election (the leader key's create revision). */
  term: number;
  lease: string;
  /** Step down (ENOTOWNER if leadership was already lost). */
  resign(opts?: CallOptions): Promise<void>;
}

/** Who leads an election. */
export interface LeaderState {
  /** The leader's candidate id, or null when nobody campaigns. */
  leader: string | null;
  /** The leader's term (0 when there is no leader). */
  term: number;
  /** Store revision at which this was observed. */
  revision: number;
}

const RETRY_MIN_MS = 50;
const RETRY_MAX_MS = 1_000;

/** The election service of one DC. */
export class ElectionService extends DcService {
  private readonly queue: LockService;
  private stopping = new AbortController();

  constructor(opts: ServiceOptions) {
    super(opts, 'election');
    this.queue = new LockService(opts, 'election');
  }

  async start(): Promise<void> {
    if (this.running) return;
    this.stopping = new AbortController();
    await this.queue.start();
    this.running = true;
  }

  /** Stop: campaigns in progress fail with EUNAVAIL, observers end, service-granted leaderships resign. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.stopping.abort();
    await this.queue.stop();
  }

  /**
   * Campaign in election `name` as `candidate` (1..256 characters); resolves once leader. Rejects with
   * ETIMEDOUT / EABORTED (the candidate leaves the queue), ENOENT (its lease is gone), EBUSY (this lease
   * already campaigns in this election), EUNAVAIL, EINVAL.
   */
  async campaign(name: string, candidate: string, opts: CampaignOptions = {}): Promise<Leadership> {
    validateName('election', name);
    if (
      typeof candidate !== 'string' ||
      candidate.length === 0 ||
      candidate.length > 256 ||
      hasControl(candidate)
    ) {
      throw dvsError('EINVAL', 'candidate id must be 1..256 characters without control characters');
    }
    const l = await this.queue.lock(name, { ...opts, owner: candidate });
    return {
      name,
      candidate,
      term: l.token,
      lease: l.lease,
      resign: (o?: CallOptions) => this.resign(name, l.token, o),
    };
  }

  /** Step down as the leader of `term` (ENOTOWNER if this instance does not lead with that term). */
  resign(name: string, term: number, opts: CallOptions = {}): Promise<void> {
    return this.queue.unlock(name, term, opts);
  }

  /** The current leader of `name` (ENOENT if nobody campaigns in it). */
  leader(name: string, opts: CallOptions = {}): Promise<LeaderState> {
    return this.metrics.track(
      'election',
      'leader',
      (async () => {
        validateName('election', name);
        this.check();
        const r = await storeCall(
          { what: 'election.leader', write: false, idempotent: true },
          opts,
          this.timeoutMs,
          (c) => this.opts.store.get(this.prefix(name), { ...c, prefix: true }),
        );
        const st = headOf(r.kvs, r.revision);
        if (st.leader === null) throw dvsError('ENOENT', `election ${name}: no candidate`, { name });
        return st;
      })(),
    );
  }

  /** Resolve if `term` is the current leader's term of `name`; ESTALE if not. */
  checkTerm(name: string, term: number, opts: CallOptions = {}): Promise<void> {
    return this.queue.checkFence(name, term, opts);
  }

  /**
   * Follow election `name`: yields the current (leader, term) at once, then every change of it, until the
   * signal fires or the iterator is returned (then it finishes), or the service stops (then it rejects with
   * EUNAVAIL). A consumer that falls behind by more than 1000 states loses the oldest ones.
   */
  observe(name: string, opts: { signal?: AbortSignal } = {}): AsyncIterableIterator<LeaderState> {
    validateName('election', name);
    this.check();
    const ac = new AbortController();
    const q = new AsyncQueue<LeaderState>(1_000, () => ac.abort());
    const signal = AbortSignal.any([ac.signal, this.stopping.signal, ...(opts.signal ? [opts.signal] : [])]);
    this.follow(name, q, signal).then(
      () => q.end(this.running ? undefined : dvsError('EUNAVAIL', 'election service stopped')),
      (e: unknown) => q.end(e),
    );
    return q;
  }

  // ---------------------------------------------------------------------------------------------- internals

  private prefix(name: string): string {
    return lockPrefix(name, this.scope.electionsRoot);
  }

  private async follow(name: string, q: AsyncQueue<LeaderState>, signal: AbortSignal): Promise<void> {
    const prefix = this.prefix(name);
    const { store } = this.opts;
    let last: string | undefined;
    const emit = (st: LeaderState) => {
      const id = `${st.term}`;
      if (id === last) return;
      last = id;
      q.push(st);
    };
    let retryMs = RETRY_MIN_MS;
    while (!signal.aborted) {
      let list: { kvs: KeyValue[]; revision: number };
      try {
        list = await store.get(prefix, { prefix: true, signal, timeout: this.timeoutMs });
      } catch (e) {
        if (signal.aborted) break;
        this.log.debug({ err: e, election: name }, 'observe: list failed; retrying');
        await sleep(retryMs, signal);
        retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
        continue;
      }
      retryMs = RETRY_MIN_MS;
      const keys = new Map(list.kvs.map((kv) => [kv.key, kv]));
      emit(headOf(keys.values(), list.revision));
      const why = await new Promise<WatchEnd | 'aborted'>((resolve) => {
        let done = false;
        const finish = (w: WatchEnd | 'aborted') => {
          if (done) return;
          done = true;
          signal.removeEventListener('abort', onAbort);
          resolve(w);
        };
        const watch = store.watch(
          prefix,
          list.revision + 1,
          (events, revision) => {
            for (const ev of events) {
              if (ev.type === 'put') keys.set(ev.kv.key, ev.kv);
              else keys.delete(ev.kv.key);
            }
            emit(headOf(keys.values(), revision));
          },
          (w) => finish(w),
        );
        const onAbort = () => {
          watch.cancel();
          finish('aborted');
        };
        signal.addEventListener('abort', onAbort, { once: true });
        if (signal.aborted) onAbort();
      });
      if (why === 'aborted') break;
      this.log.debug({ election: name, why }, 'observe: watch ended; re-listing');
      if (why === 'disconnected') await sleep(retryMs, signal);
    }
  }
}

/** The queue head (lowest createRevision) as a LeaderState. */
function headOf(kvs: Iterable<KeyValue>, revision: number): LeaderState {
  let head: KeyValue | undefined;
  for (const kv of kvs) if (head === undefined || kv.createRevision < head.createRevision) head = kv;
  return head === undefined
    ? { leader: null, term: 0, revision }
    : { leader: ownerOf(head), term: head.createRevision, revision };
}
