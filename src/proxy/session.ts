/**
 * Reliable, ordered, exactly-once delivery of frames to one peer node over a connection that may drop and
 * come back (the prototype reserved c_snd_seq/c_ack_seq for this and never used them).
 *
 * Pure state machine: no I/O, no clock. The link driver (src/proxy/link.ts) and the simulator feed it.
 *
 * - Every frame we enqueue gets the next sequence number (1, 2, 3...) and stays in `unacked` until the peer
 *   acknowledges it (cumulative acks).
 * - `takeUnsent()` hands out frames not yet written on the current connection.
 * - On a new connection both sides exchange how far they have received; `resume(peerReceived)` drops what
 *   the peer already has and rewinds so everything after it is written again.
 * - `accept(seq)` on the receiving side drops duplicates (seq <= received) and rejects gaps (a gap means
 *   the peer broke the protocol: the driver closes the connection).
 * - When the peer turns out to be a new incarnation (it restarted), or it forgot us (it declared us dead:
 *   `peerLostState(peerReceived)` is true because its cumulative ack went backwards), `reset()` discards
 *   both directions and numbering restarts at 1 on both sides.
 */
export class LinkSession<F> {
  /** Sequence number the next enqueued frame gets. */
  private nextSeq = 1;
  /** Frames not yet acknowledged, oldest first; `unacked[i]` has seq `firstUnacked + i`. */
  private unacked: F[] = [];
  private head = 0;
  private firstUnacked = 1;
  /** Highest seq written on the current connection. */
  private written = 0;
  /** Highest seq received in order from the peer (what we acknowledge). */
  private receivedSeq = 0;

  /** Queue `frame` for the peer; returns its sequence number. */
  enqueue(frame: F): number {
    this.unacked.push(frame);
    return this.nextSeq++;
  }

  /** Frames queued but not yet written on the current connection, oldest first. Marks them written. */
  takeUnsent(): { firstSeq: number; frames: F[] } {
    const firstSeq = this.written + 1;
    const start = this.head + (firstSeq - this.firstUnacked);
    const frames = start < this.unacked.length ? this.unacked.slice(start) : [];
    this.written = this.nextSeq - 1;
    return { firstSeq, frames };
  }

  /** True if there are frames not yet written on the current connection. */
  hasUnsent(): boolean {
    return this.written < this.nextSeq - 1;
  }

  /** The peer has received every frame up to and including `ack`. Out-of-range acks are ignored. */
  acked(ack: number): void {
    if (ack < this.firstUnacked || ack >= this.nextSeq) return;
    const n = ack - this.firstUnacked + 1;
    this.head += n;
    this.firstUnacked += n;
    // Compact now and then instead of shifting on every ack.
    if (this.head > 1024 && this.head * 2 > this.unacked.length) {
      this.unacked = this.unacked.slice(this.head);
      this.head = 0;
    }
  }

  /**
   * A frame with sequence number `seq` arrived. Returns 'deliver' for the next frame in order, 'duplicate'
   * for one already received (a resend after reconnect), 'gap' if frames are missing (protocol violation).
   */
  accept(seq: number): 'deliver' | 'duplicate' | 'gap' {
    if (seq <= this.receivedSeq) return 'duplicate';
    if (seq !== this.receivedSeq + 1) return 'gap';
    this.receivedSeq = seq;
    return 'deliver';
  }

  /** Highest sequence number received in order: the cumulative ack to send. */
  get received(): number {
    return this.receivedSeq;
  }

  /** Number of frames enqueued and not yet acknowledged. */
  get pending(): number {
    return this.unacked.length - this.head;
  }

  /** True if the peer's handshake claims less than it already acknowledged: it lost our session. */
  peerLostState(peerReceived: number): boolean {
    return peerReceived < this.firstUnacked - 1;
  }

  /**
   * A new connection to the same peer incarnation is up; the peer has received up to `peerReceived`.
   * Everything after that will be written again by the next takeUnsent().
   */
  resume(peerReceived: number): void {
    this.acked(peerReceived);
    this.written = this.firstUnacked - 1;
  }

  /**
   * The peer is a new incarnation (it restarted) or was declared dead: forget both directions.
   * Returns the frames that were never acknowledged, so the caller can fail what waited on them.
   */
  reset(): F[] {
    const lost = this.unacked.slice(this.head);
    this.unacked = [];
    this.head = 0;
    this.nextSeq = 1;
    this.firstUnacked = 1;
    this.written = 0;
    this.receivedSeq = 0;
    return lost;
  }
}
