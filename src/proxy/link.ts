/**
 * One node link: everything this daemon knows about one peer node. The session (seq/ack/resend), the
 * peer's identity as last seen in a HELLO, the current connection (if any), the link state and counters.
 * The {@link LinkManager} (src/proxy/links.ts) owns the sockets and timers and drives it.
 *
 * Peer identity and restarts. Each side keeps, per peer, an `epoch` it bumps whenever it forgets the
 * session on its own (it declared the peer dead). A HELLO carries the sender's (incarnation, epoch) and the
 * receiver's (incarnation, epoch) the sender's state refers to. So on a HELLO:
 * - the peer's (incarnation, epoch) differs from the one we stored: it restarted or forgot us; we reset too
 *   (nodeDown if it was up, then nodeUp);
 * - the peer's idea of us is not our current (incarnation, epoch): its `received` counts a session we
 *   forgot, so we resume from 0 (it resets on our HELLO, by the rule above);
 * - otherwise it is the same session on a new connection: resume from its `received` and resend the rest.
 */
import type { NodeFrame, NodeId } from '../kernel/types.js';
import type { LinkInfo, PeerConfig } from '../protocol/admin.js';
import type { FrameWriter } from '../protocol/frame.js';
import { writeNodeFrame } from '../protocol/node-frames.js';
import type { Transport } from '../transport/transport.js';
import { LinkSession } from './session.js';
import { LINK_TAG, writeDataHeader, writeShort } from './wire.js';

/** A frame in the session queue: a hot frame object, or the pre-encoded body of a control frame. */
export type QueuedFrame = NodeFrame | Uint8Array;

/** {@link LinkInfo} plus counters not (yet) in the admin contract. */
export interface LinkStats extends LinkInfo {
  /** Frames dropped because the node was down (or was declared down while they waited). */
  framesDropped: number;
}

/** One connection carrying a link (or, before its HELLO, not yet attached to one). */
export interface Conn {
  transport: Transport;
  /** The link, once the HELLO told us who the peer is. */
  link: Link | null;
  /** True once both HELLOs were exchanged. */
  established: boolean;
  /** This side dialed. */
  dialer: boolean;
  /** Seq of the next node frame to arrive (0 until the first DATA header). */
  expect: number;
  /** The transport asked us to wait for drain. */
  blocked: boolean;
  /** HELLO timeout. */
  timer: NodeJS.Timeout | null;
}

export class Link {
  readonly peer: PeerConfig;
  readonly session = new LinkSession<QueuedFrame>();
  state: LinkInfo['state'] = 'connecting';
  /** nodeUp was reported and not yet followed by nodeDown. */
  up = false;
  conn: Conn | null = null;
  /** Our epoch towards this peer. */
  epoch = 1;
  /** The peer's identity from its last HELLO, or null if never seen (or forgotten). */
  peerIncarnation: string | null = null;
  peerEpoch = 0;
  /** Seq of the last frame we enqueued (0 after a reset). */
  lastSeq = 0;
  /** Highest seq ever written (to count retransmits). */
  maxWritten = 0;
  /** The cumulative ack we last sent. */
  ackSent = 0;
  /** performance.now() of the last thing heard from the peer, or of the last state change. */
  lastHeard: number;
  lastPing = 0;
  stateSince: number;
  /** Dial backoff, ms. */
  backoff = 0;
  dialTimer: NodeJS.Timeout | null = null;
  ackTimer: NodeJS.Timeout | null = null;
  dirty = false;

  framesSent = 0;
  framesReceived = 0;
  bytesSent = 0;
  bytesReceived = 0;
  retransmits = 0;
  duplicates = 0;
  reconnects = 0;
  framesDropped = 0;
  /** A connection was established before (the next one is a reconnect). */
  everConnected = false;
  rttMs: number | null = null;

  constructor(peer: PeerConfig, now: number) {
    this.peer = peer;
    this.lastHeard = now;
    this.stateSince = now;
  }

  setState(state: LinkInfo['state'], now: number): void {
    if (state === this.state) return;
    this.state = state;
    this.stateSince = now;
  }

  /** Forget the session in both directions; returns how many unacknowledged frames were lost. */
  resetSession(): number {
    const lost = this.session.reset().length;
    this.lastSeq = 0;
    this.maxWritten = 0;
    this.ackSent = 0;
    this.framesDropped += lost;
    return lost;
  }

  /**
   * Encode what should go out now into `w`: a DATA batch of unsent frames (ack piggybacked), or a
   * standalone ACK if only the ack moved. Returns the number of node frames written.
   */
  fill(w: FrameWriter): number {
    const received = this.session.received;
    if (this.session.hasUnsent()) {
      const { firstSeq, frames } = this.session.takeUnsent();
      writeDataHeader(w, firstSeq, received);
      for (const f of frames) {
        if (f instanceof Uint8Array) w.frame(f);
        else writeNodeFrame(w, f);
      }
      const last = firstSeq + frames.length - 1;
      if (firstSeq <= this.maxWritten) this.retransmits += Math.min(this.maxWritten, last) - firstSeq + 1;
      if (last > this.maxWritten) this.maxWritten = last;
      this.ackSent = received;
      return frames.length;
    }
    if (received > this.ackSent) {
      writeShort(w, LINK_TAG.ack, received);
      this.ackSent = received;
    }
    return 0;
  }

  info(now: number): LinkStats {
    return {
      node: this.peer.id as NodeId,
      name: this.peer.name,
      address: this.peer.address,
      state: this.state,
      framesSent: this.framesSent,
      framesReceived: this.framesReceived,
      bytesSent: this.bytesSent,
      bytesReceived: this.bytesReceived,
      retransmits: this.retransmits,
      duplicates: this.duplicates,
      reconnects: this.reconnects,
      rttMs: this.rttMs,
      unacked: this.session.pending,
      sinceMs: Math.max(0, Math.round(now - this.stateSince)),
      framesDropped: this.framesDropped,
    };
  }
}
