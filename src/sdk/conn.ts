/**
 * One client connection to a node daemon's local socket: framing, per-turn write batching and close
 * handling, shared by the process SDK ({@link Dvk}) and the {@link AdminClient}.
 */
import type { Socket } from 'node:net';
import { createConnection } from 'node:net';
import { DvsError } from '../protocol/errors.js';
import { DEFAULT_MAX_FRAME_BYTES, FrameDecoder } from '../protocol/frame.js';
import type { ProcFrame } from '../protocol/proc-frames.js';
import { decodeProcFrame, ProcFrameWriter } from '../protocol/proc-frames.js';

/** Options of every connecting call. */
export interface ConnectTimeoutOptions {
  /** ms (default 5000). */
  timeout?: number;
  signal?: AbortSignal;
}

export interface ConnHandlers {
  /** A frame from the daemon. Throwing DvsError EPROTO closes the connection. */
  frame(f: ProcFrame): void;
  /** The connection closed (once); `err` says why. */
  closed(err: DvsError): void;
}

/** A framed, batched connection to the daemon. */
export class ProcConnection {
  /** Frames appended here leave at the end of the current event-loop turn (or on {@link flushNow}). */
  readonly out = new ProcFrameWriter();
  private readonly socket: Socket;
  private readonly decoder = new FrameDecoder({ maxFrameBytes: DEFAULT_MAX_FRAME_BYTES });
  private handlers: ConnHandlers | undefined;
  private scheduled = false;
  private closedErr: DvsError | undefined;
  private readonly closedPromise: Promise<void>;

  private constructor(socket: Socket) {
    this.socket = socket;
    this.closedPromise = new Promise((resolve) => socket.once('close', () => resolve()));
    const onFrame = (body: Uint8Array) => this.handlers?.frame(decodeProcFrame(body));
    socket.on('data', (chunk: Buffer) => {
      if (this.closedErr) return;
      try {
        this.decoder.feed(chunk, onFrame);
      } catch (e) {
        this.fail(DvsError.from(e));
      }
    });
    socket.on('error', (e) =>
      this.fail(new DvsError('ENOTCONN', `daemon connection: ${e.message}`, undefined, { cause: e })),
    );
    socket.on('close', () => this.fail(new DvsError('ENOTCONN', 'daemon connection closed')));
  }

  /** Connect to the Unix socket `path`. Rejects ENOTCONN (nobody there), ETIMEDOUT or EABORTED. */
  static open(path: string, opts: ConnectTimeoutOptions = {}): Promise<ProcConnection> {
    return new Promise((resolve, reject) => {
      if (opts.signal?.aborted) return reject(new DvsError('EABORTED', 'connect aborted'));
      const socket = createConnection(path);
      const timer = setTimeout(
        () => finish(new DvsError('ETIMEDOUT', `connect to ${path} timed out`)),
        opts.timeout ?? 5000,
      );
      const onAbort = () => finish(new DvsError('EABORTED', 'connect aborted'));
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      const finish = (err: DvsError | undefined) => {
        clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
        socket.off('error', onError);
        if (err) {
          socket.destroy();
          reject(err);
        } else resolve(new ProcConnection(socket));
      };
      const onError = (e: Error) =>
        finish(new DvsError('ENOTCONN', `cannot connect to ${path}: ${e.message}`, { path }, { cause: e }));
      socket.once('error', onError);
      socket.once('connect', () => finish(undefined));
    });
  }

  /** Set the frame and close handlers (before any frame is expected). */
  bind(handlers: ConnHandlers): void {
    this.handlers = handlers;
  }

  /** The error the connection closed with, if closed. */
  get closedError(): DvsError | undefined {
    return this.closedErr;
  }

  /** Write what `out` holds at the end of this turn. */
  schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.flushNow);
  }

  /** Write what `out` holds now. */
  readonly flushNow = (): void => {
    this.scheduled = false;
    if (this.closedErr) return;
    const buf = this.out.take();
    if (buf !== undefined) this.socket.write(buf);
  };

  /** Flush, then close; resolves once the socket closed. */
  close(): Promise<void> {
    if (!this.closedErr) {
      this.flushNow();
      this.closedErr = new DvsError('ENOTCONN', 'connection closed by the client');
      this.socket.end();
      this.handlers?.closed(this.closedErr);
      // A daemon that does not close its side promptly must not keep us waiting.
      const t = setTimeout(() => this.socket.destroy(), 1000);
      t.unref();
    }
    return this.closedPromise;
  }

  private fail(err: DvsError): void {
    if (this.closedErr) return;
    this.closedErr =
      err.code === 'ENOTCONN' ? err : new DvsError('ENOTCONN', err.message, undefined, { cause: err });
    this.socket.destroy();
    this.handlers?.closed(this.closedErr);
  }
}
