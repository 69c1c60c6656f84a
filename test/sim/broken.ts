/**
 * Deliberately broken links, used to prove that the invariants can fail (a checker that never fails
 * proves nothing).
 */
import type { NodeFrame } from '../../src/kernel/types.js';
import { LinkSession } from '../../src/proxy/session.js';

/** A session that forgets to drop duplicates: frames resent after a reconnect are delivered again. */
export class NoDedupSession extends LinkSession<NodeFrame> {
  override accept(seq: number): 'deliver' | 'duplicate' | 'gap' {
    const r = super.accept(seq);
    return r === 'duplicate' ? 'deliver' : r;
  }
}

/** A session that never resends: resume() pretends the peer already has everything written. */
export class NoResendSession extends LinkSession<NodeFrame> {
  override resume(peerReceived: number): void {
    super.resume(peerReceived);
    // Skip what would be rewritten; the receiver then sees a gap or silently misses frames.
    this.takeUnsent();
  }
}
