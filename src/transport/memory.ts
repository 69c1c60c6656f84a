/**
 * An in-memory {@link Transport} pair for tests: bytes go through the same framing as sockets, and are
 * delivered asynchronously (setImmediate), as a socket would.
 */
import { DvsError } from '../protocol/errors.js';
import { FrameDecoder, FrameWriter } from '../protocol/frame.js';
import type { Transport, TransportHandler, TransportOptions } from './transport.js';

class MemoryTransport implements Transport {
  readonly remote = 'memory';
  peer!: MemoryTransport;
  private readonly decoder: FrameDecoder;
  private readonly writer: FrameWriter;
  private handler: TransportHandler | null = null;
  /** Chunks received before start() or not yet delivered. */
  private inbox: Uint8Array[] = [];
  private scheduled = false;
  private closing = false;
  private error: Error | undefined;
  private resolveClosed!: (e: Error | undefined) => void;
  private readonly done = new Promise<Error | undefined>((r) => {
    this.resolveClosed = r;
  });

  constructor(opts: TransportOptions) {
    this.decoder = new FrameDecoder(opts);
    this.writer = new FrameWriter({ maxFrameBytes: 0xffffffff });
  }

  get isClosed(): boolean {
    return this.closing;
  }

  start(handler: TransportHandler): void {
    if (this.handler) throw new DvsError('EINTERNAL', 'transport already started');
    this.handler = handler;
    this.schedule();
  }

  send(body: Uint8Array): boolean {
    if (body.length === 0 || body.length > this.decoder.maxFrameBytes) {
      throw new DvsError('EMSGSIZE', `frame of ${body.length} bytes`);
    }
    if (this.closing) return false;
    this.writer.frame(body);
    return this.sendFramed(this.writer.take()!);
  }

  sendFramed(bytes: Uint8Array): boolean {
    if (this.closing) return false;
    // Copy: the peer must not see later changes, exactly as with a socket.
    this.peer.receive(Uint8Array.from(bytes));
    return true;
  }

  private receive(chunk: Uint8Array): void {
    if (this.closing) return;
    this.inbox.push(chunk);
    this.schedule();
  }

  private schedule(): void {
    if (this.scheduled || this.handler === null) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      const handler = this.handler!;
      const chunks = this.inbox;
      this.inbox = [];
      for (const c of chunks) {
        if (this.closing) return;
        try {
          this.decoder.feed(c, (body) => handler.frame(body));
        } catch (e) {
          this.close(e instanceof Error ? e : DvsError.from(e));
          return;
        }
      }
    });
  }

  close(err?: Error): void {
    if (this.closing) return;
    this.closing = true;
    this.error = err;
    this.inbox = [];
    setImmediate(() => this.resolveClosed(this.error));
    // The other side sees a clean end, as with a socket reset it would see an error: keep it simple.
    this.peer.close();
  }

  closed(): Promise<Error | undefined> {
    return this.done;
  }
}

/** Two connected in-memory transports. */
export function memoryPair(opts: TransportOptions = {}): [Transport, Transport] {
  const a = new MemoryTransport(opts);
  const b = new MemoryTransport(opts);
  a.peer = b;
  b.peer = a;
  return [a, b];
}
