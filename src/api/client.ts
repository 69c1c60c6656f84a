/**
 * The client side of a node's REST API: one JSON request over HTTP or HTTPS, and what an HTTPS client
 * trusts. Used by the network join (src/security/join-client.ts) and by anything else in dvs that calls an
 * API; the CLI's other commands reach the daemons over their Unix sockets, not over HTTP.
 *
 * Trust (docs/security.md "HTTPS API"):
 *
 * ```
 *  client ──TLS >= 1.2──▶ node API  presents  node.crt (CN node-<id>) + ca.crt
 *   │  trust anchor: the cluster CA only (the system's CAs are not consulted)
 *   │  1. the chain ends in the cluster CA (OpenSSL's verification, expiry included)
 *   │  2. the leaf's CN is a node name `node-<id>` (and that very id when the caller knows which node it dials)
 *   └  the host name / IP of the URL is NOT matched against the certificate's SAN (see checkNodeIdentity)
 *
 *  network join (the joiner has no CA yet, only the token's CA fingerprint):
 *   probe: handshake without verification, find in the chain the server presents the certificate whose
 *          SHA-256 is the pinned one (EAUTH if none; nothing is sent on that connection), then
 *   every request: as above, with that certificate as the trust anchor.
 * ```
 */
import { X509Certificate } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import { isIP } from 'node:net';
import tls, { type DetailedPeerCertificate, type PeerCertificate } from 'node:tls';
import type { NodeId } from '../kernel/types.js';
import { DvsError } from '../protocol/errors.js';
import { parseNodeCommonName } from '../security/names.js';

/** What an HTTPS client of a node's API trusts. */
export interface ApiTrust {
  /** The cluster CA certificate, PEM: the only trust anchor. */
  ca: string;
  /** The node the URL should reach (e.g. from cluster.json): its certificate must then be `node-<node>`. */
  node?: NodeId;
}

/** Lowest TLS version of the API, both sides (1.3 is negotiated whenever both ends have it: Node's default). */
export const API_TLS_MIN_VERSION = 'TLSv1.2';

/** Largest API answer a client reads, bytes (a cluster view of many nodes stays far below). */
export const API_MAX_RESPONSE_BYTES = 16 << 20;

/**
 * The server-identity check of an HTTPS client of a node API, run by node:tls after the chain verified
 * against {@link ApiTrust.ca}. Returns an Error to refuse, undefined to accept.
 *
 * The host name of the URL is deliberately not matched against the certificate: node certificates carry
 * the node name as CN and, as SAN, only the addresses the operator listed when the node joined (often just
 * 127.0.0.1), while the API is reached at whatever address routes to it (another interface, NAT, a tunnel).
 * What identifies a server is the chain to the cluster CA, which is private to the cluster and signs only
 * node certificates (`signNodeRequest` requires CN `node-<id>`): a server whose chain ends there is one of our
 * nodes. The CN is checked to be a node name so that a certificate of another kind, should the CA ever sign
 * one, is not taken for a node; when the caller knows which node it dials, the CN must name that node, so a
 * node cannot answer for another one.
 */
export function checkNodeIdentity(
  _host: string,
  cert: Pick<PeerCertificate, 'subject'>,
  node?: NodeId,
): Error | undefined {
  const cn = cert.subject?.CN;
  const id = parseNodeCommonName(typeof cn === 'string' ? cn : undefined);
  if (id === null) {
    return identityError(`the API's certificate is not a node certificate (CN ${String(cn ?? 'none')})`);
  }
  if (node !== undefined && id !== node) {
    return identityError(`the API's certificate is node-${id}'s, not node-${node}'s`);
  }
  return undefined;
}

function identityError(message: string): Error {
  return Object.assign(new Error(message), { code: 'ERR_TLS_CERT_ALTNAME_INVALID', reason: message });
}

/** node:tls client options that trust the cluster CA and nothing else (see the file comment). */
export function clusterTlsOptions(trust: ApiTrust, host: string): tls.ConnectionOptions {
  return {
    ca: trust.ca,
    rejectUnauthorized: true,
    minVersion: API_TLS_MIN_VERSION,
    // SNI carries names only, never IP addresses (RFC 6066).
    ...(isIP(host) === 0 ? { servername: host } : {}),
    checkServerIdentity: (h, cert) => checkNodeIdentity(h, cert, trust.node),
  };
}

/** Options of {@link apiRequest}. */
export interface ApiRequestOptions {
  method?: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** Sent as JSON. */
  body?: unknown;
  /** Bearer token. */
  token?: string;
  /** Required for `https:` URLs. */
  trust?: ApiTrust;
  /** Whole request, ms (default 10000). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** An answer of any status. */
export interface ApiResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

/**
 * One request to a node API. Resolves with any HTTP status; rejects with DvsError: EINVAL (bad URL, https
 * without trust), EAUTH (the server's certificate is not trusted: the TLS handshake failed on our side),
 * ENOTCONN (unreachable, connection reset: also what plain HTTP to an HTTPS port looks like), ETIMEDOUT,
 * EABORTED, EPROTO (answer too big).
 */
export async function apiRequest(url: string, opts: ApiRequestOptions = {}): Promise<ApiResponse> {
  const u = parseUrl(url);
  const secure = u.protocol === 'https:';
  if (secure && opts.trust === undefined) {
    throw new DvsError('EINVAL', `${u.origin} is HTTPS: the cluster CA is needed to verify it`);
  }
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const timeout = AbortSignal.timeout(timeoutMs);
  const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
  const payload = opts.body === undefined ? undefined : JSON.stringify(opts.body);
  const headers: http.OutgoingHttpHeaders = { accept: 'application/json' };
  if (payload !== undefined) headers['content-type'] = 'application/json';
  if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;
  const reqOpts: https.RequestOptions = {
    method: opts.method ?? (payload === undefined ? 'GET' : 'POST'),
    host,
    port: u.port === '' ? (secure ? 443 : 80) : Number(u.port),
    path: `${u.pathname}${u.search}`,
    headers,
    signal,
    // One connection per request: no pooled socket outlives the call (nor a test).
    agent: false,
    ...(secure ? clusterTlsOptions(opts.trust!, host) : {}),
  };
  try {
    return await new Promise<ApiResponse>((resolve, reject) => {
      const req = (secure ? https : http).request(reqOpts, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (d: Buffer) => {
          size += d.length;
          if (size > API_MAX_RESPONSE_BYTES) {
            req.destroy(
              new DvsError('EPROTO', `${u.origin} answered more than ${API_MAX_RESPONSE_BYTES} bytes`),
            );
            return;
          }
          chunks.push(d);
        });
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            text: Buffer.concat(chunks).toString('utf8'),
          }),
        );
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(payload);
    });
  } catch (e) {
    throw transportError(e, u.origin, {
      timeout,
      timeoutMs,
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
  }
}

/**
 * The cluster CA as a server presents it, checked against a pinned SHA-256 fingerprint (64 hex, or
 * `AB:CD:..`): one TLS handshake to `url` without verification, nothing sent. The API serves its chain as
 * node certificate + CA certificate; the one whose fingerprint is the pinned one, if it is a CA certificate,
 * is returned as PEM, to be the trust anchor of the real requests (which verify the server against it).
 * EAUTH if the chain holds no such certificate; ENOTCONN, ETIMEDOUT, EABORTED as {@link apiRequest}.
 */
export async function fetchPinnedCa(
  url: string,
  fingerprint: string,
  opts: { timeoutMs?: number; signal?: AbortSignal } = {},
): Promise<string> {
  const u = parseUrl(url);
  if (u.protocol !== 'https:') throw new DvsError('EINVAL', `${u.origin} is not an https:// URL`);
  const pinned = fingerprint.replace(/:/g, '').toLowerCase();
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const timeout = AbortSignal.timeout(timeoutMs);
  const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
  let chain: X509Certificate[];
  try {
    chain = await new Promise<X509Certificate[]>((resolve, reject) => {
      signal.throwIfAborted();
      const socket = tls.connect({
        host,
        port: u.port === '' ? 443 : Number(u.port),
        ...(isIP(host) === 0 ? { servername: host } : {}),
        minVersion: API_TLS_MIN_VERSION,
        // Not trusting anything yet: the chain is only looked at, then the connection is dropped unused.
        rejectUnauthorized: false,
      });
      const abort = () => socket.destroy(signal.reason as Error);
      signal.addEventListener('abort', abort, { once: true });
      socket.once('secureConnect', () => {
        signal.removeEventListener('abort', abort);
        const certs = peerChain(socket.getPeerCertificate(true));
        socket.destroy();
        resolve(certs);
      });
      socket.once('error', (e) => {
        signal.removeEventListener('abort', abort);
        reject(e);
      });
    });
  } catch (e) {
    throw transportError(e, u.origin, {
      timeout,
      timeoutMs,
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
  }
  const ca = chain.find((c) => c.fingerprint256.replace(/:/g, '').toLowerCase() === pinned);
  if (ca === undefined || !ca.ca) {
    throw new DvsError(
      'EAUTH',
      `CA fingerprint mismatch: the TLS certificate chain of ${u.origin} holds no CA certificate with the pinned fingerprint (wrong --via, or someone in the middle)`,
    );
  }
  return ca.toString();
}

/** The certificates of a peer chain as node:tls links them (leaf first; a self-signed root ends it). */
function peerChain(leaf: DetailedPeerCertificate): X509Certificate[] {
  const out: X509Certificate[] = [];
  const seen = new Set<string>();
  for (let c: DetailedPeerCertificate | undefined = leaf; c?.raw !== undefined; c = c.issuerCertificate) {
    if (seen.has(c.fingerprint256)) break;
    seen.add(c.fingerprint256);
    out.push(new X509Certificate(c.raw));
  }
  return out;
}

function parseUrl(url: string): URL {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new DvsError('EINVAL', `bad URL ${url} (want http://HOST:PORT or https://HOST:PORT)`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new DvsError('EINVAL', `bad URL ${url}: http:// or https:// only`);
  }
  return u;
}

/** TLS verification failures of OpenSSL and node:tls, by error code. */
const CERT_ERROR = /CERT|ISSUER|SIGNATURE|SELF_SIGNED|ALTNAME|CHAIN/;

function transportError(
  e: unknown,
  origin: string,
  ctx: { timeout: AbortSignal; timeoutMs: number; signal?: AbortSignal },
): DvsError {
  if (e instanceof DvsError) return e;
  if (ctx.signal?.aborted) return new DvsError('EABORTED', `request to ${origin} aborted`);
  if (ctx.timeout.aborted)
    return new DvsError('ETIMEDOUT', `no answer from ${origin} within ${ctx.timeoutMs} ms`);
  const err = e as NodeJS.ErrnoException & { reason?: string };
  if (typeof err.code === 'string' && CERT_ERROR.test(err.code)) {
    return new DvsError(
      'EAUTH',
      `${origin} is not trusted: ${err.reason ?? err.message} (${err.code}); its certificate must chain to the cluster CA`,
      undefined,
      { cause: e },
    );
  }
  const hint =
    origin.startsWith('http:') && err.code === 'ECONNRESET' ? ' (if it serves HTTPS, use https://)' : '';
  return new DvsError('ENOTCONN', `cannot reach ${origin}: ${err.code ?? err.message}${hint}`, undefined, {
    cause: e,
  });
}
