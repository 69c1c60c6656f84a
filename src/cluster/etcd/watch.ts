/**
 * One store watch over one etcd watch stream, with the guarantees of the ClusterStore contract: events in
 * revision order, one callback per revision, no gap, no duplicate, resumed after a disconnect from the last
 * delivered revision, `compacted` surfaced.
 *
 * Why a stream of our own rather than the client's Watcher: the client resumes silently and does not tell
 * when the resume point was compacted away, and its reconnect backoff grows to 30 s. Here the resume point is
 * always `last delivered revision + 1`, so whatever member the new stream lands on, etcd replays exactly the
 * events we have not delivered; anything at or below the last delivered revision is dropped as a duplicate.
 */

import type { Metadata } from '@grpc/grpc-js';
import type { Etcd3, IDuplexStream, IEvent, IWatchRequest, IWatchResponse } from 'etcd3';
import type { Logger } from 'pino';
import { DvsError } from '../../protocol/errors.js';
import type { Watch, WatchEnd, WatchEvent } from '../store.js';
import { toKeyValue } from './convert.js';

/** What a watch needs from its store. */
export interface WatchDeps {
  client: Etcd3;
  logger: Logger;
  /** Give up (onEnd('disconnected')) after this long without a working stream, ms. */
  resumeTimeoutMs: number;
  /** Called once when the watch is over (cancelled or ended), so the store forgets it. */
  forget(w: EtcdWatch): void;
  /**
   * Every this many ms the watch asks its member for a progress report; a stream that has answered nothing
   * for twice as long is treated as broken and resumed on another member (0 disables).
   */
  probeMs: number;
}

const MIN_RETRY_MS = 20;
const MAX_RETRY_MS = 500;

/** A live watch; see the module comment. */
export class EtcdWatch implements Watch {
  /** The next revision to deliver: everything below it has been delivered. */
  private next: number;
  private stream: IDuplexStream<IWatchRequest, IWatchResponse> | undefined;
  private done = false;
  private timer: NodeJS.Timeout | undefined;
  private retryMs = MIN_RETRY_MS;
  /** When the last working stream broke (undefined while one works). */
  private brokenSince: number | undefined;
  /** host:port of the member the current (or last) stream was opened on: for logs and tests. */
  member: string | undefined;
  /** Progress probe of the current stream (see WatchDeps.probeMs). */
  private probe: NodeJS.Timeout | undefined;
  /** When the current stream last said anything (a response of any kind). */
  private heardAt = 0;

  constructor(
    private readonly deps: WatchDeps,
    private readonly range: { key: Buffer; range_end: Buffer },
    fromRevision: number,
    private readonly onEvents: (events: WatchEvent[], revision: number) => void,
    private readonly onEnd: (why: WatchEnd, err?: Error) => void,
  ) {
    this.next = Math.max(1, Math.floor(fromRevision));
  }

  /** Open the first stream. */
  start(): void {
    void this.connect();
  }

  cancel(): void {
    if (this.done) return;
    this.done = true;
    this.teardown();
  }

  /** End the watch with a reason (store stopped, compacted, gave up): onEnd is called once. */
  end(why: WatchEnd, err?: Error): void {
    if (this.done) return;
    this.done = true;
    this.teardown();
    try {
      this.onEnd(why, err);
    } catch (e) {
      this.deps.logger.error({ err: e }, 'watch onEnd callback threw');
    }
  }

  private teardown(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.stopProbe();
    const s = this.stream;
    this.stream = undefined;
    if (s !== undefined) closeStream(s);
    this.deps.forget(this);
  }

  private async connect(): Promise<void> {
    this.timer = undefined;
    if (this.done) return;
    let stream: IDuplexStream<IWatchRequest, IWatchResponse>;
    try {
      const opened = await openWatchStream(this.deps.client);
      stream = opened.stream;
      this.member = opened.member;
    } catch (e) {
      this.broken(undefined, e);
      return;
    }
    if (this.done) {
      closeStream(stream);
      return;
    }
    this.stream = stream;
    stream.on('data', (r) => this.response(stream, r));
    stream.on('error', (e) => this.broken(stream, e));
    stream.on('end', () => this.broken(stream, new Error('watch stream ended by the server')));
    stream.write({
      create_request: {
        ...this.range,
        start_revision: String(this.next),
        // Progress notifications keep an idle stream's liveness visible to gRPC keepalive and logs.
        progress_notify: true,
      },
    });
    this.startProbe(stream);
  }

  /**
   * A member cut off by a partition (packets silently dropped) leaves the stream open and silent: gRPC
   * keepalive notices only after 15 s. Asking for a progress report every probeMs and resuming elsewhere when
   * nothing came back for 2 * probeMs bounds that to a few seconds. (A member that is reachable but lost its
   * leader is handled by etcd itself: the stream was opened with `hasleader`, so etcd cancels it.)
   */
  private startProbe(stream: IDuplexStream<IWatchRequest, IWatchResponse>): void {
    this.stopProbe();
    const every = this.deps.probeMs;
    if (every <= 0) return;
    this.heardAt = Date.now();
    this.probe = setInterval(() => {
      if (this.done || stream !== this.stream) return this.stopProbe();
      const silentMs = Date.now() - this.heardAt;
      if (silentMs > 2 * every) {
        this.broken(stream, new Error(`watch stream silent for ${silentMs} ms`));
        return;
      }
      try {
        stream.write({ progress_request: {} });
      } catch (e) {
        this.broken(stream, e);
      }
    }, every);
    this.probe.unref();
  }

  private stopProbe(): void {
    if (this.probe !== undefined) clearInterval(this.probe);
    this.probe = undefined;
  }

  private response(stream: IDuplexStream<IWatchRequest, IWatchResponse>, r: IWatchResponse): void {
    if (this.done || stream !== this.stream) return;
    this.heardAt = Date.now();
    if (r.compact_revision !== undefined && r.compact_revision !== '0' && r.compact_revision !== '') {
      this.end(
        'compacted',
        new DvsError(
          'ENOENT',
          `watch from revision ${this.next}: history compacted up to ${r.compact_revision}`,
          {
            fromRevision: this.next,
            compactRevision: Number(r.compact_revision),
          },
        ),
      );
      return;
    }
    if (r.canceled) {
      this.broken(stream, new Error(`watch cancelled by etcd: ${r.cancel_reason || 'no reason given'}`));
      return;
    }
    if (r.created) {
      if (this.brokenSince !== undefined) {
        this.deps.logger.info(
          { fromRevision: this.next, downMs: Date.now() - this.brokenSince },
          'etcd watch resumed',
        );
      }
      this.brokenSince = undefined;
      this.retryMs = MIN_RETRY_MS;
    }
    if (r.events.length > 0) this.deliver(r.events);
  }

  /**
   * Deliver a response's events, one callback per revision. Without `fragment`, etcd never splits one
   * revision across responses, so a group is complete when its response arrives.
   */
  private deliver(events: IEvent[]): void {
    let group: WatchEvent[] = [];
    let groupRev = 0;
    const flush = () => {
      if (group.length === 0) return;
      const evs = group;
      group = [];
      this.next = groupRev + 1;
      try {
        this.onEvents(evs, groupRev);
      } catch (e) {
        this.deps.logger.error({ err: e, revision: groupRev }, 'watch onEvents callback threw');
      }
    };
    for (const ev of events) {
      const rev = Number(ev.kv.mod_revision);
      // Replayed after a resume: already delivered.
      if (rev < this.next) continue;
      if (rev !== groupRev) {
        flush();
        if (this.done) return;
        groupRev = rev;
      }
      group.push({ type: ev.type === 'Delete' ? 'delete' : 'put', kv: toKeyValue(ev.kv) });
    }
    flush();
  }

  private broken(stream: IDuplexStream<IWatchRequest, IWatchResponse> | undefined, err: unknown): void {
    if (this.done || stream !== this.stream) return;
    this.stream = undefined;
    this.stopProbe();
    if (stream !== undefined) closeStream(stream);
    const now = Date.now();
    if (this.brokenSince === undefined) {
      this.brokenSince = now;
      this.deps.logger.warn(
        { err, fromRevision: this.next, member: this.member },
        'etcd watch stream broken; resuming',
      );
    }
    if (now - this.brokenSince >= this.deps.resumeTimeoutMs) {
      this.end(
        'disconnected',
        new DvsError('ENOTCONN', `etcd watch could not be resumed for ${now - this.brokenSince} ms`, {
          fromRevision: this.next,
        }),
      );
      return;
    }
    const delay = this.retryMs;
    this.retryMs = Math.min(MAX_RETRY_MS, this.retryMs * 2);
    this.timer = setTimeout(() => void this.connect(), delay);
  }
}

/** The part of the client's connection pool a watch stream needs (it is not in the public typings). */
interface WatchPool {
  withConnection<T>(
    service: 'Watch',
    fn: (c: {
      resource: { host: string };
      client: { watch(metadata: Metadata, options: object): IDuplexStream<IWatchRequest, IWatchResponse> };
      metadata: Metadata;
    }) => Promise<T> | T,
  ): Promise<T>;
}

/**
 * Open a watch stream on one member chosen by the client's pool, with the `hasleader` metadata (etcd's
 * `WithRequireLeader`): a member that loses its leader (the minority side of a partition) cancels the stream
 * after a few election timeouts instead of keeping it open with no events, and the watch resumes elsewhere.
 */
function openWatchStream(
  client: Etcd3,
): Promise<{ stream: IDuplexStream<IWatchRequest, IWatchResponse>; member: string }> {
  const pool = (client as unknown as { pool: WatchPool }).pool;
  return pool.withConnection('Watch', ({ resource, client: svc, metadata }) => {
    metadata.set('hasleader', 'true');
    return { stream: svc.watch(metadata, {}), member: resource.host };
  });
}

/**
 * Close a stream without the client noticing a failure: ending our side first makes the stream unwritable,
 * so the client's error hook does not reset every connection to that member when the CANCELLED comes back.
 */
function closeStream(s: IDuplexStream<IWatchRequest, IWatchResponse>): void {
  try {
    s.end();
  } catch {
    // already closed
  }
  try {
    s.cancel();
  } catch {
    // already closed
  }
}
