/**
 * {@link Transport} over TLS 1.3 with mutual certificate checks: the node links of a cluster that has a CA
 * (DESIGN.md §10, docs/security.md). Framing is the same as TCP's (src/transport/net.ts): TLS only wraps the
 * byte stream.
 *
 * Both sides present a certificate and accept only one issued by the cluster CA (`requestCert`,
 * `rejectUnauthorized`, `minVersion: 'TLSv1.3'`, the CA as the only trust anchor, not the system store).
 * The node id a certificate speaks for is its CN (`node-<id>`, src/security/names.ts): a dialer may require
 * a given node id instead of a host name match (node certificates name nodes; addresses change), and every
 * transport exposes the peer's node id so the link layer can compare it with the id the peer claims.
 *
 * With TLS 1.3 a client learns that the server refused its certificate only after its own handshake is done:
 * such a refusal closes the transport shortly after the dial resolved, with EAUTH.
 */
import { type AddressInfo, isIP, type Socket } from 'node:net';
import type { PeerCertificate, TLSSocket } from 'node:tls';
import tls from 'node:tls';
import type { NodeId } from '../kernel/types.js';
import { DvsError } from '../protocol/errors.js';
import { parseNodeCommonName } from '../security/names.js';
import {
  type DialOptions,
  dialSocket,
  formatAddress,
  type ListenOptions,
  NetTransport,
  remoteOf,
  startListening,
} from './net.js';
import type { Transport, TransportListener, TransportOptions } from './transport.js';

/** The credentials of one side (PEM text). */
export interface TlsConfig {
  /** The only CA trusted for the peer's certificate. */
  ca: string;
  /** Our certificate. */
  cert: string;
  /** Our private key. */
  key: string;
}

/** Default limit on a TLS handshake, ms: a peer that connects and says nothing is dropped. */
export const HANDSHAKE_TIMEOUT_MS = 10_000;

/** A {@link Transport} over an authenticated TLS socket: who the peer is, by its certificate. */
export class TlsTransport extends NetTransport {
  /** The node id in the peer certificate's CN, or null if the CN is not `node-<id>`. */
  readonly peerNodeId: NodeId | null;
  /** The peer certificate's CN (for logs). */
  readonly peerName: string;
  /** SHA-256 fingerprint of the peer certificate. */
  readonly peerFingerprint: string;
  private mapped: Promise<Error | undefined> | undefined;

  constructor(socket: TLSSocket, remote: string, opts: TransportOptions = {}) {
    super(socket, remote, opts);
    const cert = socket.getPeerCertificate();
    this.peerName = cnOf(cert) ?? '';
    this.peerNodeId = parseNodeCommonName(cnOf(cert));
    this.peerFingerprint = cert.fingerprint256 ?? '';
  }

  /** As NetTransport's, but TLS failures (a refused certificate after the handshake) come out as EAUTH. */
  override closed(): Promise<Error | undefined> {
    this.mapped ??= super.closed().then((e) => (e && isTlsError(e) ? tlsError(this.remote, e) : e));
    return this.mapped;
  }
}

/** The peer's node id if `t` is a TLS transport, else undefined (plain TCP: nobody vouches for the peer). */
export function peerNodeIdOf(t: Transport): NodeId | null | undefined {
  return t instanceof TlsTransport ? t.peerNodeId : undefined;
}

/** Options of {@link connectTls}. */
export interface TlsDialOptions extends DialOptions, TlsConfig {
  host: string;
  port: number;
  /**
   * Require the server's certificate to be node `expectNodeId`'s (CN `node-<id>`) instead of matching the
   * host name against its SAN. Node links set it: they dial a node, not a name.
   */
  expectNodeId?: NodeId;
  handshakeTimeoutMs?: number;
}

/**
 * Connect with TLS 1.3 and present our certificate. Rejects with ENOTCONN (unreachable), EAUTH (the server's
 * certificate is not from our CA, or not the expected node's; or the peer accepted TCP but dropped or never
 * answered the handshake: a plain-TCP node), ETIMEDOUT (no TCP connection in time) or EABORTED.
 */
export function connectTls(opts: TlsDialOptions): Promise<TlsTransport> {
  const remote = isIP(opts.host) === 6 ? `[${opts.host}]:${opts.port}` : `${opts.host}:${opts.port}`;
  const expect = opts.expectNodeId;
  // Connected but dropped before the handshake finished: the peer does not speak TLS, or refused us.
  let connected = false;
  const limit = Math.min(opts.timeoutMs, opts.handshakeTimeoutMs ?? Number.POSITIVE_INFINITY);
  return dialSocket(remote, opts, {
    open: () => {
      const socket = tls.connect({
        host: opts.host,
        port: opts.port,
        ca: opts.ca,
        cert: opts.cert,
        key: opts.key,
        minVersion: 'TLSv1.3',
        rejectUnauthorized: true,
        // SNI must not be an IP address; a name is sent only when we dialed one.
        ...(isIP(opts.host) === 0 ? { servername: opts.host } : {}),
        checkServerIdentity:
          expect === undefined
            ? tls.checkServerIdentity
            : (_host, cert) => {
                if (parseNodeCommonName(cnOf(cert)) === expect) return undefined;
                return Object.assign(
                  new Error(`server certificate is for ${cnOf(cert) ?? 'no CN'}, not node-${expect}`),
                  { code: 'ERR_TLS_DVS_NODE_ID' },
                );
              },
      });
      socket.once('connect', () => {
        connected = true;
      });
      return socket;
    },
    ready: 'secureConnect',
    error: (e) => {
      if (isTlsError(e)) return tlsError(remote, e);
      if (connected && (e as NodeJS.ErrnoException).code === 'ECONNRESET') {
        const why = new Error(
          'peer closed during the handshake (no TLS, or it does not trust our certificate)',
        );
        return tlsError(remote, Object.assign(why, { cause: e }));
      }
      return undefined;
    },
    timeoutMs: limit,
    // A plain-TCP node never answers a ClientHello: silence after connecting is that, most likely.
    timeout: () =>
      connected
        ? tlsError(remote, new Error(`no TLS handshake within ${limit} ms (peer without TLS?)`))
        : new DvsError('ETIMEDOUT', `dial ${remote} timed out`),
    wrap: (socket) => {
      // Batching is done above (FrameWriter); Nagle would only add latency.
      socket.setNoDelay(true);
      return new TlsTransport(socket, remote, opts);
    },
  });
}

/** Options of {@link listenTls}. */
export interface TlsListenOptions extends ListenOptions, TlsConfig {
  host: string;
  port: number;
  /**
   * A connection refused during the handshake: no certificate, one from another CA, not TLS at all, a
   * handshake timeout. `remote` is host:port. The socket is already closed.
   */
  onRefused?(remote: string, err: DvsError): void;
  handshakeTimeoutMs?: number;
}

/** Listen for TLS 1.3 connections whose client certificate is issued by `ca`. */
export function listenTls(opts: TlsListenOptions): Promise<TransportListener> {
  const server = tls.createServer(
    {
      ca: opts.ca,
      cert: opts.cert,
      key: opts.key,
      minVersion: 'TLSv1.3',
      requestCert: true,
      rejectUnauthorized: true,
      handshakeTimeout: opts.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS,
      noDelay: true,
    },
    (socket) => {
      const parent = parentOf(socket);
      if (parent) handshaking.delete(parent);
      socket.setNoDelay(true);
      opts.onTransport(new TlsTransport(socket, remoteOf(socket), opts));
    },
  );
  // Connections still in their handshake belong to nobody yet: close() ends them, or the server would wait
  // for their handshake timeout before it reports closed.
  const handshaking = new Set<Socket>();
  // A refused socket is already destroyed when tlsClientError fires and no longer knows its address: keep
  // it from the moment of the TCP accept.
  const remotes = new WeakMap<object, string>();
  server.on('connection', (raw: Socket) => {
    remotes.set(raw, remoteOf(raw));
    handshaking.add(raw);
    raw.once('close', () => handshaking.delete(raw));
  });
  server.on('tlsClientError', (e, socket) => {
    const parent = parentOf(socket);
    const remote = (parent && remotes.get(parent)) ?? remoteOf(socket);
    // A certificate that fails verification is refused by Node closing the socket ("socket hang up"); the
    // verification error itself is in authorizationError.
    const why = socket.authorizationError;
    const reason = why
      ? Object.assign(new Error(`client certificate refused: ${String(why)}`), { code: why })
      : (e as NodeJS.ErrnoException).code === 'ECONNRESET'
        ? new Error('peer closed during the handshake (no TLS, or it does not trust our certificate)', {
            cause: e,
          })
        : e;
    opts.onRefused?.(remote, tlsError(remote, reason));
  });
  return startListening(server, { host: opts.host, port: opts.port }).then(() => ({
    address: formatAddress(server.address() as AddressInfo),
    close: () =>
      new Promise<void>((res) => {
        server.close(() => res());
        for (const raw of handshaking) raw.destroy();
      }),
  }));
}

/** The TCP socket under a server-side TLS socket (Node keeps it as `_parent`; not in its typings). */
function parentOf(socket: TLSSocket): Socket | undefined {
  return (socket as TLSSocket & { _parent?: Socket })._parent;
}

/** OpenSSL and certificate verification errors, as opposed to network ones. */
const VERIFY_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_SIGNATURE_FAILURE',
  'CERT_REVOKED',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'INVALID_PURPOSE',
  'INVALID_CA',
  'HOSTNAME_MISMATCH',
]);

function isTlsError(e: Error): boolean {
  const code = String((e as NodeJS.ErrnoException).code ?? '');
  return code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_') || VERIFY_CODES.has(code);
}

function tlsError(remote: string, e: Error): DvsError {
  if (e instanceof DvsError) return e;
  const code = (e as NodeJS.ErrnoException).code;
  return new DvsError(
    'EAUTH',
    `TLS with ${remote} refused: ${e.message}${code && !e.message.includes(String(code)) ? ` (${code})` : ''}`,
    { remote, tls: code },
    { cause: e },
  );
}

function cnOf(cert: PeerCertificate | undefined): string | undefined {
  const cn = cert?.subject?.CN as string | string[] | undefined;
  // Several CNs: ambiguous, so no node id.
  return typeof cn === 'string' ? cn : undefined;
}
