/**
 * {@link Transport} over `net` sockets: TCP (TCP_NODELAY on: batching is done above, by FrameWriter, so
 * Nagle would only add latency) and Unix domain sockets.
 */
import net from 'node:net';
import { DvsError } from '../protocol/errors.js';
import { FRAME_HEADER_BYTES, FrameDecoder } from '../protocol/frame.js';
import type { Transport, TransportHandler, TransportListener, TransportOptions } from './transport.js';

/** Options of a dial. */
export interface DialOptions extends TransportOptions {
  /** Give up after this many ms (ETIMEDOUT). */
  timeoutMs: number;
  /** Give up when aborted (EABORTED). */
  signal?: AbortSignal;
}

/** Split `host:port` (IPv6 as `[::1]:port`). Throws EINVAL. */
export function parseHostPort(s: string): { host: string; port: number } {
  const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(s);
  const port = m ? Number(m[2]) : Number.NaN;
  if (!m?.[1] || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new DvsError('EINVAL', `bad address ${s}: want host:port`);
  }
  return { host: m[1], port };
}

/** A {@link Transport} over a connected `net.Socket`. */
export class NetTransport implements Transport {
  readonly remote: string;
  private readonly socket: net.Socket;
  private readonly decoder: FrameDecoder;
  private handler: TransportHandler | null = null;
  private closing = false;
  private error: Error | undefined;
  private readonly done: Promise<Error | undefined>;
  private readonly header = Buffer.allocUnsafe(FRAME_HEADER_BYTES);

  constructor(socket: net.Socket, remote: string, opts: TransportOptions = {}) {
    this.socket = socket;
    this.remote = remote;
    this.decoder = new FrameDecoder(opts);
    this.done = new Promise((resolve) => {
      socket.once('close', () => {
        this.closing = true;
        resolve(this.error);
      });
    });
    socket.on('error', (e) => {
      this.error ??= e;
    });
    socket.on('drain', () => this.handler?.drain?.());
  }

  get isClosed(): boolean {
    return this.closing || this.socket.destroyed;
  }

  start(handler: TransportHandler): void {
    if (this.handler) throw new DvsError('EINTERNAL', 'transport already started');
    this.handler = handler;
    const onFrame = (body: Uint8Array) => handler.frame(body);
    this.socket.on('data', (chunk: Buffer) => {
      if (this.closing) return;
      try {
        this.decoder.feed(chunk, onFrame);
      } catch (e) {
        this.close(e instanceof Error ? e : DvsError.from(e));
      }
    });
  }

  send(body: Uint8Array): boolean {
    if (this.isClosed) return false;
    if (body.length === 0 || body.length > this.decoder.maxFrameBytes) {
      throw new DvsError('EMSGSIZE', `frame of ${body.length} bytes`);
    }
    // Two writes would cost two syscalls with TCP_NODELAY: cork them into one.
    this.socket.cork();
    this.header.writeUInt32LE(body.length, 0);
    this.socket.write(Buffer.from(this.header));
    const ok = this.socket.write(body);
    this.socket.uncork();
    return ok;
  }

  sendFramed(bytes: Uint8Array): boolean {
    if (this.isClosed) return false;
    return this.socket.write(bytes);
  }

  close(err?: Error): void {
    if (this.closing) return;
    this.closing = true;
    this.error ??= err;
    this.socket.destroy();
  }

  closed(): Promise<Error | undefined> {
    return this.done;
  }
}

/** The peer of a TCP socket as `host:port` (`[v6]:port`); `unknown` once the socket has lost its address. */
export function remoteOf(socket: net.Socket): string {
  if (socket.remoteAddress === undefined) return 'unknown';
  return socket.remoteFamily === 'IPv6'
    ? `[${socket.remoteAddress}]:${socket.remotePort}`
    : `${socket.remoteAddress}:${socket.remotePort}`;
}

/** A bound TCP address as `host:port` (`[v6]:port`). */
export function formatAddress(a: net.AddressInfo): string {
  return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
}

/** How {@link dialSocket} opens and finishes one kind of connection. */
export interface DialSpec<S extends net.Socket, T> {
  /** Create the socket (called only if the dial was not aborted already). */
  open(): S;
  /** The event that means connected: `connect` (TCP, Unix) or `secureConnect` (TLS, after the handshake). */
  ready: 'connect' | 'secureConnect';
  /** The socket's error as a DvsError; undefined: ENOTCONN naming the remote. */
  error?(e: Error): DvsError | undefined;
  /** ms before giving up (default: the dial's timeoutMs). */
  timeoutMs?: number;
  /** The error when that time runs out (default ETIMEDOUT). */
  timeout?(): DvsError;
  /** Wrap the connected socket. */
  wrap(socket: S): T;
}

/**
 * The dial every socket transport shares: open, then settle exactly once with the wrapped socket on
 * `spec.ready`, or fail (socket destroyed, listeners removed) with the socket's error, a timeout, or
 * EABORTED when `opts.signal` aborts.
 */
export function dialSocket<S extends net.Socket, T>(
  remote: string,
  opts: DialOptions,
  spec: DialSpec<S, T>,
): Promise<T> {
  return new Promise((resolve, reject) => {
    if (opts.signal?.aborted) {
      reject(new DvsError('EABORTED', `dial ${remote} aborted`));
      return;
    }
    const socket = spec.open();
    const fail = (err: DvsError) => {
      cleanup();
      socket.destroy();
      reject(err);
    };
    const onError = (e: Error) =>
      fail(
        spec.error?.(e) ?? new DvsError('ENOTCONN', `dial ${remote}: ${e.message}`, { remote }, { cause: e }),
      );
    const onAbort = () => fail(new DvsError('EABORTED', `dial ${remote} aborted`));
    const timer = setTimeout(
      () => fail(spec.timeout?.() ?? new DvsError('ETIMEDOUT', `dial ${remote} timed out`)),
      spec.timeoutMs ?? opts.timeoutMs,
    );
    const cleanup = () => {
      clearTimeout(timer);
      socket.off('error', onError);
      opts.signal?.removeEventListener('abort', onAbort);
    };
    socket.once('error', onError);
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    socket.once(spec.ready, () => {
      cleanup();
      resolve(spec.wrap(socket));
    });
  });
}

function dial(
  connectOpts: net.NetConnectOpts,
  tcp: boolean,
  remote: string,
  opts: DialOptions,
): Promise<Transport> {
  return dialSocket(remote, opts, {
    open: () => net.connect(connectOpts),
    ready: 'connect',
    wrap: (socket) => {
      if (tcp) socket.setNoDelay(true);
      return new NetTransport(socket, remote, opts);
    },
  });
}

/** Connect over TCP. Rejects with ENOTCONN, ETIMEDOUT or EABORTED. */
export function connectTcp(opts: DialOptions & { host: string; port: number }): Promise<Transport> {
  return dial({ host: opts.host, port: opts.port }, true, `${opts.host}:${opts.port}`, opts);
}

/** Connect to a Unix socket. Rejects with ENOTCONN, ETIMEDOUT or EABORTED. */
export function connectUnix(opts: DialOptions & { path: string }): Promise<Transport> {
  return dial({ path: opts.path }, false, opts.path, opts);
}

/** Options of a listener. */
export interface ListenOptions extends TransportOptions {
  /** Called with every accepted connection (not started: call start() on it). */
  onTransport(t: Transport): void;
}

function listen(
  bind: net.ListenOptions,
  opts: ListenOptions,
  addressOf: (server: net.Server) => string,
): Promise<TransportListener> {
  const tcp = bind.path === undefined;
  const server = net.createServer({ noDelay: tcp }, (socket) => {
    if (tcp) socket.setNoDelay(true);
    opts.onTransport(new NetTransport(socket, tcp ? remoteOf(socket) : (bind.path ?? 'unix'), opts));
  });
  return startListening(server, bind).then(() => ({
    address: addressOf(server),
    close: () => new Promise<void>((res) => server.close(() => res())),
  }));
}

/**
 * Start `server` listening at `bind`; EINVAL if it cannot. Later errors (EMFILE on accept) must not crash
 * the daemon: they are ignored here and logged by the owner.
 */
export function startListening(server: net.Server, bind: net.ListenOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', (e) =>
      reject(new DvsError('EINVAL', `listen: ${e.message}`, undefined, { cause: e })),
    );
    server.listen(bind, () => {
      server.removeAllListeners('error');
      server.on('error', () => {});
      resolve();
    });
  });
}

/** Listen on TCP `host:port` (port 0: any free port; `address` reports it). */
export function listenTcp(opts: ListenOptions & { host: string; port: number }): Promise<TransportListener> {
  return listen({ host: opts.host, port: opts.port }, opts, (server) =>
    formatAddress(server.address() as net.AddressInfo),
  );
}

/** Listen on a Unix socket at `path` (the caller removes a stale file first). */
export function listenUnix(opts: ListenOptions & { path: string }): Promise<TransportListener> {
  return listen({ path: opts.path }, opts, () => opts.path);
}
