/**
 * The transport interface: an ordered, reliable byte-frame pipe between two parties (a process and its
 * daemon, or two daemons). Frames are the bodies of src/protocol/frame.ts; a transport does the length
 * prefixing and never looks inside a body.
 *
 * Implementations: TCP and Unix sockets (src/transport/net.ts), and an in-memory pair for tests
 * (src/transport/memory.ts). All of them pass one compliance suite (test/integration/transport/).
 *
 * A transport closes itself on a framing error (oversized or zero length: EPROTO), on a socket error, or
 * when the handler throws; {@link Transport.closed} then resolves with that error. It never throws out of an
 * event handler.
 */

/** What a transport calls when things happen. */
export interface TransportHandler {
  /**
   * One incoming frame body. The bytes may be a view of a larger read buffer; they stay valid (nothing
   * reuses them), but keeping a small view alive keeps the whole read buffer alive: copy if you keep it long.
   * If this throws, the transport closes with the error.
   */
  frame(body: Uint8Array): void;
  /** The transport accepts writes again after send()/sendFramed() returned false. */
  drain?(): void;
}

/**
 * One connection.
 *
 * @example
 * const t = await connectTcp({ host: '127.0.0.1', port, timeoutMs: 1000 });
 * t.start({ frame: (body) => console.log(body) });
 * t.send(Uint8Array.of(1, 2, 3));
 * t.close();
 * await t.closed();
 */
export interface Transport {
  /** The peer's address, for logs (host:port, a socket path, or `memory`). */
  readonly remote: string;
  /** Begin delivering incoming frames to `handler` (nothing is read before). Call once. */
  start(handler: TransportHandler): void;
  /**
   * Write one frame body (1..maxFrameBytes bytes). Returns false when the write buffer is full: the caller
   * should wait for handler.drain before writing more (what was written is still queued, never dropped).
   * Writes after close are ignored.
   */
  send(body: Uint8Array): boolean;
  /**
   * Write bytes that are already framed (FrameWriter.take(): many frames, one write). The caller must not
   * modify `bytes` afterwards. Same return value as send().
   */
  sendFramed(bytes: Uint8Array): boolean;
  /** Close now (pending writes may be lost). `err` is the reason closed() reports. Idempotent. */
  close(err?: Error): void;
  /** Resolves once closed: with the error that closed it, or undefined for a clean close by either side. */
  closed(): Promise<Error | undefined>;
  /** True once close() was called or the connection ended. */
  readonly isClosed: boolean;
}

/** A listening endpoint that hands out a {@link Transport} per accepted connection. */
export interface TransportListener {
  /** Bound address: host:port for TCP (the real port when 0 was asked), the path for Unix sockets. */
  readonly address: string;
  /** Stop accepting; open transports are not closed (their owners close them). */
  close(): Promise<void>;
}

/** Options shared by every transport. */
export interface TransportOptions {
  /** Largest frame body accepted from the peer (default DEFAULT_MAX_FRAME_BYTES). */
  maxFrameBytes?: number;
}
