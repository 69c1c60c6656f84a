import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { LinkSession } from '../../../src/proxy/session.js';

/**
 * Two sessions joined by a lossy "connection" model: a reconnect loses everything in flight, then both
 * sides resume from the other's `received`. Whatever the schedule, the receiver sees 1..N exactly once.
 */
describe('LinkSession', () => {
  it('delivers exactly once in order across arbitrary reconnects', () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom('send', 'flush', 'deliver', 'ack', 'reconnect'), { maxLength: 200 }),
        (steps) => {
          const tx = new LinkSession<number>();
          const rx = new LinkSession<number>();
          let next = 1;
          let wire: { seq: number; v: number }[] = [];
          const got: number[] = [];
          const run = (step: string) => {
            switch (step) {
              case 'send':
                tx.enqueue(next++);
                break;
              case 'flush': {
                const { firstSeq, frames } = tx.takeUnsent();
                for (const [i, v] of frames.entries()) wire.push({ seq: firstSeq + i, v });
                break;
              }
              case 'deliver':
                for (const m of wire.splice(0)) {
                  const r = rx.accept(m.seq);
                  assert.notEqual(r, 'gap');
                  if (r === 'deliver') got.push(m.v);
                }
                break;
              case 'ack':
                tx.acked(rx.received);
                break;
              case 'reconnect':
                wire = [];
                assert.equal(tx.peerLostState(rx.received), false);
                tx.resume(rx.received);
                break;
            }
          };
          for (const s of steps) run(s);
          for (const s of ['reconnect', 'flush', 'deliver', 'ack']) run(s);
          assert.deepEqual(
            got,
            Array.from({ length: next - 1 }, (_, i) => i + 1),
          );
          assert.equal(tx.pending, 0);
        },
      ),
    );
  });

  it('reset forgets both directions and returns the unacknowledged frames', () => {
    const s = new LinkSession<string>();
    s.enqueue('a');
    s.enqueue('b');
    s.acked(1);
    assert.equal(s.accept(1), 'deliver');
    assert.equal(s.peerLostState(0), true);
    assert.deepEqual(s.reset(), ['b']);
    assert.equal(s.received, 0);
    assert.equal(s.enqueue('c'), 1);
    assert.equal(s.accept(2), 'gap');
  });
});
