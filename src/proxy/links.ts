/**
 * The node links of one daemon (DESIGN.md §5): one TCP connection per node pair, reliable and ordered
 * across reconnects, batched, with heartbeats and failure detection. Wire format: src/proxy/wire.ts;
 * per-peer state and the restart rules: src/proxy/link.ts.
 *
 * - Connections: the node with the lower id dials, the higher accepts (one connection per pair, no
 *   tie-break needed). Dials retry with backoff from 50 ms doubling to 1 s.
 * - Batching: every frame given to send() during one event-loop turn goes out in one socket write, on
 *   setImmediate (after the poll phase, so frames produced by all the I/O callbacks of a turn coalesce).
 * - Acks: cumulative, piggybacked on DATA; a standalone ACK after ACK_EVERY frames or ACK_DELAY_MS.
 * - Failure: a peer not heard from (no connection, or a silent one) for deadAfterMs is declared dead:
 *   its session is dropped, nodeDown is reported; frames sent to a down node are dropped and counted.
 *   When it comes back, nodeUp is reported again.
 * - Bad input from a peer closes that connection with a logged warning; other links are untouched.
 * - TLS (docs/security.md), when `tls` is set: every connection is TLS 1.3 with a certificate from the
 *   cluster CA on both sides; a dialer accepts only the certificate of the node it dialed, and a HELLO must
 *   claim the node id of the certificate it came over (else EAUTH). Refused peers are logged (one warning
 *   with the remote address and the reason). Without `tls` the links are plain TCP, as before.
 */
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { NodeFrame, NodeId } from '../kernel/types.js';
import type { PeerConfig } from '../protocol/admin.js';
import { DvsError } from '../protocol/errors.js';
import { DEFAULT_MAX_FRAME_BYTES, FRAME_HEADER_BYTES, FrameWriter } from '../protocol/frame.js';
import {
  checkNodeFrame,
  decodeNodeFrame,
  encodeControlFrame,
  LINK_TAG_BASE,
  MSG_HEADER_BYTES,
} from '../protocol/node-frames.js';
import { loadTlsCredentials, type TlsCredentials } from '../security/credentials.js';
import type { TlsPaths } from '../security/paths.js';
import { connectTcp, listenTcp, parseHostPort } from '../transport/net.js';
import { connectTls, listenTls, peerNodeIdOf } from '../transport/tls.js';
import type { Transport, TransportListener } from '../transport/transport.js';
import { type Conn, Link, type LinkStats } from './link.js';
import {
  decodeDataHeader,
  decodeHello,
  decodeShort,
  encodeHello,
  encodeShort,
  type HelloInfo,
  LINK_TAG,
} from './wire.js';

/** Send a standalone ACK once this many frames arrived unacknowledged... */
export const ACK_EVERY = 512;
/** ...or this long after the first of them. */
export const ACK_DELAY_MS = 5;
/** First dial retry delay and its cap, ms. */
export const BACKOFF_MIN_MS = 50;
export const BACKOFF_MAX_MS = 1000;

/** What the link layer reports to the daemon (the kernel's nodeUp/nodeDown/fromNode). */
export interface LinkHandlers {
  /** A frame from `node`, in order, exactly once. Exceptions are logged, never fatal to the link. */
  frame(node: NodeId, frame: NodeFrame): void;
  /** The link to `node` is up: first time, or after nodeDown. */
  nodeUp(node: NodeId): void;
  /** `node` is dead, or restarted (then nodeUp follows at once). Unacknowledged frames to it were dropped. */
  nodeDown(node: NodeId): void;
}

/** Options of a {@link LinkManager}. */
export interface LinkManagerOptions {
  nodeId: NodeId;
  name: string;
  /** Random id of this daemon run. */
  incarnation: string;
  /** host:port to accept links on (port 0: any; see {@link LinkManager.address}). */
  listen: string;
  peers: PeerConfig[];
  /** Heartbeat period, ms. */
  heartbeatMs: number;
  /** A peer not heard from this long is declared dead, ms. */
  deadAfterMs: number;
  logger: Logger;
  /** Largest frame accepted from a peer (default DEFAULT_MAX_FRAME_BYTES). */
  maxFrameBytes?: number;
  handlers: LinkHandlers;
  /**
   * Mutual TLS on every link with these credentials (read and checked in start(): EAUTH if the certificate
   * is not this node's or not from the CA, ENOENT if a file is missing). Omitted: plain TCP.
   */
  tls?: TlsPaths;
}

/**
 * All node links of one daemon.
 *
 * @example
 * const links = new LinkManager({ nodeId: 1, name: 'node1', incarnation, listen: '127.0.0.1:0', peers,
 *   heartbeatMs: 500, deadAfterMs: 3000, logger, handlers: { frame, nodeUp, nodeDown } });
 * await links.start();
 * links.send(2, { t: 'notify', dc: 1, src: 5, dst: 9, ts: Date.now() });
 */
export class LinkManager {
  private readonly opts: LinkManagerOptions;
  private readonly log: Logger;
  private readonly links = new Map<NodeId, Link>();
  /** Accepted connections whose HELLO has not arrived yet. */
  private readonly pending = new Set<Conn>();
  private readonly writer: FrameWriter;
  private readonly dirty: Link[] = [];
  private flushScheduled = false;
  private listener: TransportListener | null = null;
  private tickTimer: NodeJS.Timeout | null = null;
  private readonly abort = new AbortController();
  private running = false;
  private stopped = false;
  private droppedUnknown = 0;
  /** Loaded in start() when options.tls is set. */
  private tls: TlsCredentials | null = null;
  /** The last refused-dial reason logged per peer: a peer refusing us every second is logged once. */
  private readonly dialRefusals = new Map<NodeId, string>();

  constructor(opts: LinkManagerOptions) {
    if (!Number.isInteger(opts.nodeId) || opts.nodeId < 0 || opts.nodeId > 0xffff) {
      throw new DvsError('EINVAL', `bad node id ${opts.nodeId}`);
    }
    if (!(opts.heartbeatMs > 0) || !(opts.deadAfterMs > opts.heartbeatMs)) {
      throw new DvsError('EINVAL', 'need 0 < heartbeatMs < deadAfterMs');
    }
    this.opts = opts;
    this.log = opts.logger.child({ component: 'links' });
    this.writer = new FrameWriter({ maxFrameBytes: opts.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES });
    const now = performance.now();
    for (const p of opts.peers) {
      if (p.id === opts.nodeId) throw new DvsError('EINVAL', `peer ${p.id} is this node`);
      if (this.links.has(p.id)) throw new DvsError('EINVAL', `peer ${p.id} listed twice`);
      parseHostPort(p.address);
      this.links.set(p.id, new Link(p, now));
    }
  }

  /** The bound listen address (host:port), once started. */
  get address(): string {
    if (!this.listener) throw new DvsError('EINVAL', 'link manager not started');
    return this.listener.address;
  }

  /** Listen, and dial the peers with higher ids. */
  async start(): Promise<void> {
    if (this.running || this.stopped) throw new DvsError('EINVAL', 'link manager already started');
    const { host, port } = parseHostPort(this.opts.listen);
    const listen = {
      host,
      port,
      maxFrameBytes: this.opts.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES,
      onTransport: (t: Transport) => this.accepted(t),
    };
    if (this.opts.tls) {
      const creds = await loadTlsCredentials(this.opts.tls);
      if (creds.nodeId !== this.opts.nodeId) {
        throw new DvsError(
          'EAUTH',
          `${this.opts.tls.cert} is node-${creds.nodeId}'s, not node ${this.opts.nodeId}'s`,
        );
      }
      this.tls = creds;
      this.listener = await listenTls({
        ...listen,
        ca: creds.ca,
        cert: creds.cert,
        key: creds.key,
        onRefused: (remote, err) => {
          if (this.running) this.log.warn({ remote, reason: err.message }, 'node link refused');
        },
      });
    } else {
      this.listener = await listenTcp(listen);
    }
    this.running = true;
    const now = performance.now();
    for (const link of this.links.values()) {
      link.lastHeard = now;
      link.stateSince = now;
      if (link.peer.id > this.opts.nodeId) this.dial(link);
    }
    const tick = Math.max(1, Math.min(this.opts.heartbeatMs, this.opts.deadAfterMs / 4));
    this.tickTimer = setInterval(() => this.tick(), tick);
    this.log.info(
      { address: this.listener.address, peers: this.links.size, tls: this.tls !== null },
      'node links listening',
    );
  }

  /** Close every connection and the listener. No nodeDown is reported. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.running = false;
    this.abort.abort();
    if (this.tickTimer) clearInterval(this.tickTimer);
    const closing: Promise<unknown>[] = [];
    for (const link of this.links.values()) {
      if (link.dialTimer) clearTimeout(link.dialTimer);
      if (link.ackTimer) clearTimeout(link.ackTimer);
      if (link.conn) {
        closing.push(link.conn.transport.closed());
        link.conn.transport.close();
      }
    }
    for (const c of this.pending) {
      closing.push(c.transport.closed());
      c.transport.close();
    }
    if (this.listener) closing.push(this.listener.close());
    await Promise.all(closing);
  }

  /**
   * Queue `frame` for `node`. Returns false if it was dropped (the node is down or unknown). Throws EINVAL
   * if the frame cannot be encoded (a bug in the caller).
   */
  send(node: NodeId, frame: NodeFrame): boolean {
    const link = this.links.get(node);
    if (!link) {
      this.droppedUnknown++;
      return false;
    }
    if (link.state === 'down' || this.stopped) {
      link.framesDropped++;
      return false;
    }
    checkNodeFrame(frame);
    const max = this.writer.maxFrameBytes;
    let item: NodeFrame | Uint8Array = frame;
    if (frame.t === 'msg' || frame.t === 'reply') {
      if (frame.payload.length + MSG_HEADER_BYTES > max)
        throw new DvsError('EMSGSIZE', 'frame above the link limit');
    } else if (frame.t !== 'ack' && frame.t !== 'notify' && frame.t !== 'credit') {
      item = encodeControlFrame(frame);
      if (item.length > max) throw new DvsError('EMSGSIZE', `control frame of ${item.length} bytes`);
    }
    link.lastSeq = link.session.enqueue(item);
    this.markDirty(link);
    return true;
  }

  /** Link rows for `dvs status`. */
  info(): LinkStats[] {
    const now = performance.now();
    return [...this.links.values()].map((l) => l.info(now));
  }

  /** Frames given to send() for nodes not in the peer list. */
  get droppedUnknownNode(): number {
    return this.droppedUnknown;
  }

  /**
   * Drop the current connection to `node` (it reconnects as after a network failure; nothing is lost).
   * For operators and tests. Returns false if there was no connection.
   */
  disconnect(node: NodeId, reason = 'disconnect requested'): boolean {
    const c = this.links.get(node)?.conn;
    if (!c) return false;
    c.transport.close(new DvsError('ENOTCONN', reason));
    return true;
  }

  // ---- connections -------------------------------------------------------------------------------------

  private dial(link: Link): void {
    if (!this.running || link.conn || link.dialTimer) return;
    const { host, port } = parseHostPort(link.peer.address);
    const dial = {
      host,
      port,
      timeoutMs: Math.max(this.opts.deadAfterMs, 1000),
      signal: this.abort.signal,
      maxFrameBytes: this.opts.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES,
    };
    const tls = this.tls;
    (tls
      ? connectTls({ ...dial, ca: tls.ca, cert: tls.cert, key: tls.key, expectNodeId: link.peer.id })
      : connectTcp(dial)
    ).then(
      (t) => {
        if (!this.running || link.conn) {
          t.close();
          return;
        }
        const conn = this.newConn(t, true);
        conn.link = link;
        link.conn = conn;
        t.send(encodeHello(this.helloFor(link)));
      },
      (e: unknown) => {
        if (!this.running) return;
        const reason = (e as Error).message;
        if ((e as DvsError).code === 'EAUTH' && this.dialRefusals.get(link.peer.id) !== reason) {
          this.dialRefusals.set(link.peer.id, reason);
          this.log.warn({ node: link.peer.id, remote: link.peer.address, reason }, 'node link refused');
        } else {
          this.log.debug({ node: link.peer.id, err: reason }, 'dial failed');
        }
        this.redial(link);
      },
    );
  }

  private redial(link: Link): void {
    if (!this.running || link.dialTimer || link.peer.id < this.opts.nodeId) return;
    link.backoff = link.backoff === 0 ? BACKOFF_MIN_MS : Math.min(BACKOFF_MAX_MS, link.backoff * 2);
    link.dialTimer = setTimeout(() => {
      link.dialTimer = null;
      this.dial(link);
    }, link.backoff);
  }

  private accepted(t: Transport): void {
    if (!this.running) {
      t.close();
      return;
    }
    this.pending.add(this.newConn(t, false));
  }

  private newConn(t: Transport, dialer: boolean): Conn {
    const conn: Conn = {
      transport: t,
      link: null,
      established: false,
      dialer,
      expect: 0,
      blocked: false,
      timer: null,
    };
    conn.timer = setTimeout(
      () => t.close(new DvsError('ETIMEDOUT', 'no HELLO from peer')),
      Math.max(this.opts.deadAfterMs, 1000),
    );
    t.start({
      frame: (body) => this.onFrame(conn, body),
      drain: () => {
        conn.blocked = false;
        if (conn.link) this.markDirty(conn.link);
      },
    });
    void t.closed().then((err) => this.onClosed(conn, err));
    return conn;
  }

  private onClosed(conn: Conn, err: Error | undefined): void {
    if (conn.timer) clearTimeout(conn.timer);
    this.pending.delete(conn);
    const link = conn.link;
    const fields = { node: link?.peer.id, remote: conn.transport.remote, established: conn.established };
    if (err && !this.stopped) {
      this.log.warn(
        { ...fields, reason: err.message, code: (err as DvsError).code },
        'node link connection closed',
      );
    } else {
      this.log.debug(fields, 'node link connection closed');
    }
    if (!link || link.conn !== conn) return;
    link.conn = null;
    if (link.ackTimer) {
      clearTimeout(link.ackTimer);
      link.ackTimer = null;
    }
    if (this.stopped) return;
    if (link.state === 'up') link.setState('reconnecting', performance.now());
    this.redial(link);
  }

  private helloFor(link: Link): HelloInfo {
    return {
      nodeId: this.opts.nodeId,
      name: this.opts.name,
      incarnation: this.opts.incarnation,
      epoch: link.epoch,
      peerIncarnation: link.peerIncarnation ?? '',
      peerEpoch: link.peerIncarnation === null ? 0 : link.peerEpoch,
      received: link.session.received,
    };
  }

  // ---- incoming ----------------------------------------------------------------------------------------

  /** One frame from a connection. Throwing closes that connection (the transport logs it via onClosed). */
  private onFrame(conn: Conn, body: Uint8Array): void {
    const tag = body[0]!;
    const link = conn.link;
    if (link && conn.established) {
      link.lastHeard = performance.now();
      link.bytesReceived += body.length + FRAME_HEADER_BYTES;
    }
    if (tag < LINK_TAG_BASE) {
      if (!link || !conn.established || conn.expect === 0)
        throw new DvsError('EPROTO', 'node frame before DATA');
      this.onNodeFrame(link, conn, body);
      return;
    }
    switch (tag) {
      case LINK_TAG.hello:
        if (conn.established) throw new DvsError('EPROTO', 'second HELLO');
        this.onHello(conn, decodeHello(body));
        return;
      case LINK_TAG.data: {
        if (!link || !conn.established) throw new DvsError('EPROTO', 'DATA before HELLO');
        const h = decodeDataHeader(body);
        conn.expect = h.firstSeq;
        link.session.acked(h.ack);
        return;
      }
      case LINK_TAG.ack:
        if (!link || !conn.established) throw new DvsError('EPROTO', 'ACK before HELLO');
        link.session.acked(decodeShort(body));
        return;
      case LINK_TAG.ping:
        if (!link || !conn.established) throw new DvsError('EPROTO', 'PING before HELLO');
        conn.transport.send(encodeShort(LINK_TAG.pong, decodeShort(body)));
        return;
      case LINK_TAG.pong: {
        if (!link || !conn.established) throw new DvsError('EPROTO', 'PONG before HELLO');
        const rtt = performance.now() - decodeShort(body);
        if (rtt >= 0) link.rttMs = link.rttMs === null ? rtt : link.rttMs * 0.8 + rtt * 0.2;
        return;
      }
      default:
        throw new DvsError('EPROTO', `unknown link frame tag ${tag}`);
    }
  }

  private onNodeFrame(link: Link, conn: Conn, body: Uint8Array): void {
    const seq = conn.expect++;
    if (seq <= link.session.received) {
      link.duplicates++;
      return;
    }
    const frame = decodeNodeFrame(body);
    if (link.session.accept(seq) === 'gap') {
      throw new DvsError('EPROTO', `gap in sequence: got ${seq}, expected ${link.session.received + 1}`);
    }
    link.framesReceived++;
    const unacked = link.session.received - link.ackSent;
    if (unacked >= ACK_EVERY) this.markDirty(link);
    else if (link.ackTimer === null) {
      link.ackTimer = setTimeout(() => {
        link.ackTimer = null;
        this.markDirty(link);
      }, ACK_DELAY_MS);
    }
    try {
      this.opts.handlers.frame(link.peer.id, frame);
    } catch (e) {
      this.log.error({ node: link.peer.id, err: e, t: frame.t }, 'frame handler threw');
    }
  }

  private onHello(conn: Conn, h: HelloInfo): void {
    const id = h.nodeId;
    if (this.tls) {
      // The certificate says who the peer is; the HELLO only claims it.
      const certified = peerNodeIdOf(conn.transport);
      if (certified !== id) {
        const holder = certified === null || certified === undefined ? 'no node' : `node-${certified}`;
        throw new DvsError('EAUTH', `HELLO claims node ${id} but the certificate is ${holder}'s`, {
          node: id,
        });
      }
    }
    const link = this.links.get(id);
    if (id === this.opts.nodeId) throw new DvsError('EPROTO', 'HELLO from our own node id', { node: id });
    if (!link) throw new DvsError('EPROTO', `HELLO from unknown node ${id}`, { node: id });
    if (conn.dialer) {
      if (conn.link !== link)
        throw new DvsError('EPROTO', `dialed node ${conn.link?.peer.id} but ${id} answered`);
    } else {
      if (id > this.opts.nodeId)
        throw new DvsError('EPROTO', `node ${id} dialed us but we dial it`, { node: id });
      this.pending.delete(conn);
      if (link.conn) link.conn.transport.close(new DvsError('ENOTCONN', 'replaced by a new connection'));
      conn.link = link;
      link.conn = conn;
    }
    if (conn.timer) clearTimeout(conn.timer);
    conn.timer = null;
    const now = performance.now();

    // The peer restarted, or forgot us (declared us dead): our session is void too.
    const known = link.peerIncarnation !== null;
    if (known && (h.incarnation !== link.peerIncarnation || h.epoch !== link.peerEpoch)) {
      const lost = link.resetSession();
      this.log.info(
        { node: id, incarnation: h.incarnation, epoch: h.epoch, lost },
        'peer restarted or reset the session',
      );
      if (link.up) this.reportDown(link);
    }
    link.peerIncarnation = h.incarnation;
    link.peerEpoch = h.epoch;

    // The peer's `received` counts our current session only if it knows our current identity.
    const current = h.peerIncarnation === this.opts.incarnation && h.peerEpoch === link.epoch;
    const peerReceived = current ? h.received : 0;
    if (current && (peerReceived > link.lastSeq || link.session.peerLostState(peerReceived))) {
      // Cannot happen with a well-behaved peer: start over with a new epoch; the next connection agrees.
      this.log.warn(
        { node: id, peerReceived, lastSeq: link.lastSeq },
        'peer session inconsistent; resetting',
      );
      this.forget(link, now);
      throw new DvsError('EPROTO', 'inconsistent session state');
    }
    link.session.resume(peerReceived);

    if (!conn.dialer) conn.transport.send(encodeHello(this.helloFor(link)));
    conn.established = true;
    conn.expect = 0;
    link.ackSent = -1; // make the first flush restate our ack on the new connection
    link.lastHeard = now;
    link.backoff = 0;
    this.dialRefusals.delete(id);
    if (link.everConnected) link.reconnects++;
    link.everConnected = true;
    link.setState('up', now);
    this.log.info(
      { node: id, name: h.name, remote: conn.transport.remote, resumedFrom: peerReceived },
      'node link up',
    );
    if (!link.up) {
      link.up = true;
      this.callHandler('nodeUp', id);
    }
    this.markDirty(link);
  }

  // ---- failure detection -------------------------------------------------------------------------------

  private tick(): void {
    const now = performance.now();
    for (const link of this.links.values()) {
      const conn = link.conn;
      if (conn?.established) {
        if (now - link.lastPing >= this.opts.heartbeatMs) {
          link.lastPing = now;
          conn.transport.send(encodeShort(LINK_TAG.ping, now));
        }
        if (now - link.lastHeard > this.opts.deadAfterMs) {
          this.log.warn({ node: link.peer.id, silentMs: Math.round(now - link.lastHeard) }, 'peer silent');
          conn.transport.close(new DvsError('ETIMEDOUT', 'peer silent'));
          this.declareDead(link, now);
        }
      } else if (link.state !== 'down' && now - link.lastHeard > this.opts.deadAfterMs) {
        this.declareDead(link, now);
      }
    }
  }

  private declareDead(link: Link, now: number): void {
    if (link.state === 'down') return;
    this.log.warn({ node: link.peer.id, wasUp: link.up }, 'node declared dead');
    this.forget(link, now);
    link.setState('down', now);
  }

  /** Drop the session on our own initiative: new epoch (the peer resets when it sees it), nodeDown. */
  private forget(link: Link, now: number): void {
    // The new epoch must be announced on a new connection: a HELLO in flight describes the old one.
    link.conn?.transport.close(new DvsError('ENOTCONN', 'session dropped'));
    link.resetSession();
    link.epoch++;
    link.lastHeard = now;
    if (link.up) this.reportDown(link);
  }

  private reportDown(link: Link): void {
    link.up = false;
    this.callHandler('nodeDown', link.peer.id);
  }

  private callHandler(which: 'nodeUp' | 'nodeDown', node: NodeId): void {
    try {
      this.opts.handlers[which](node);
    } catch (e) {
      this.log.error({ node, err: e }, `${which} handler threw`);
    }
  }

  // ---- output ------------------------------------------------------------------------------------------

  private markDirty(link: Link): void {
    if (link.dirty) return;
    link.dirty = true;
    this.dirty.push(link);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** Write every dirty link's batch: one write per link per turn. */
  private flush(): void {
    this.flushScheduled = false;
    const links = this.dirty.splice(0);
    for (const link of links) {
      link.dirty = false;
      const conn = link.conn;
      if (!conn?.established || conn.blocked || conn.transport.isClosed) continue;
      if (link.ackTimer) {
        clearTimeout(link.ackTimer);
        link.ackTimer = null;
      }
      const w = this.writer;
      let n: number;
      try {
        n = link.fill(w);
      } catch (e) {
        // Frames were checked in send(); reaching this is a bug. Do not wedge the link in a loop.
        w.abort();
        w.take();
        this.log.error({ node: link.peer.id, err: e }, 'encoding a batch failed');
        conn.transport.close(DvsError.from(e));
        continue;
      }
      const bytes = w.take();
      if (!bytes) continue;
      link.framesSent += n;
      link.bytesSent += bytes.length;
      if (!conn.transport.sendFramed(bytes)) conn.blocked = true;
    }
  }
}
