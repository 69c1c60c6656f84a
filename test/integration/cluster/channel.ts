/**
 * An in-memory StoreChannel pair for tests: asynchronous delivery (as a link would), plus the faults the
 * remote store must survive: hold (stop delivering until released) and drop (both ends see a close).
 */
import type { StoreChannel } from '../../../src/cluster/embedded/remote.js';

class End implements StoreChannel {
  peer!: End;
  private msgCb: ((b: Uint8Array) => void) | null = null;
  private closeCb: ((err?: Error) => void) | null = null;
  closed = false;
  held: Uint8Array[] | null = null;

  send(bytes: Uint8Array): void {
    if (this.closed) throw new Error('channel closed');
    const copy = Uint8Array.from(bytes);
    setImmediate(() => this.peer.receive(copy));
  }
  receive(bytes: Uint8Array): void {
    if (this.closed) return;
    if (this.held) this.held.push(bytes);
    else this.msgCb?.(bytes);
  }
  onMessage(cb: (b: Uint8Array) => void): void {
    this.msgCb = cb;
  }
  onClose(cb: (err?: Error) => void): void {
    this.closeCb = cb;
  }
  close(): void {
    if (this.closed) return;
    this.closed = true;
    setImmediate(() => this.closeCb?.());
    this.peer.close();
  }
}

/** A connected pair; `hold()` stops delivery in both directions until the returned function runs. */
export function channelPair(): {
  client: StoreChannel;
  server: StoreChannel;
  hold(): () => void;
  drop(): void;
} {
  const a = new End();
  const b = new End();
  a.peer = b;
  b.peer = a;
  return {
    client: a,
    server: b,
    hold() {
      a.held = [];
      b.held = [];
      return () => {
        for (const end of [a, b]) {
          const held = end.held ?? [];
          end.held = null;
          for (const m of held) end.receive(m);
        }
      };
    },
    drop: () => a.close(),
  };
}
