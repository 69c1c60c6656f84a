/**
 * The joining side of `dvs node join`: over the network (`--via`, to a node serving the join route with the
 * CA) or, as before, from a CA directory this host can read (`--ca-dir`, the file flow).
 *
 * Network join, HTTP/JSON (src/api/join.ts serves it; pinned by test/unit/security/join-token.test.ts,
 * join-route.test.ts and test/integration/security/join-network.test.ts):
 *
 * ```
 * 1. GET  /api/v1/join/ca                                   → 200 {"ca": "<PEM>", "fingerprint": "AB:CD:.."}
 *    the CA's fingerprint must equal the token's, else EAUTH and the token is not used (wrong --via, or a
 *    man in the middle).
 * 2. POST /api/v1/join  {"version": 1, "tokenId": "<8>", "nodeId": N, "csr": "<PEM>", "proof": "<64 hex>"}
 *                                                           → 200 {"cert": "<PEM>", "ca": "<PEM>"}
 *                                                           → 4xx {"error": {"code", "message"}}
 *    proof = HMAC-SHA256(SHA-256("dvsjt1:" + id + "." + secret), "dvs-join-v1\n" + N + "\n" + csr)
 * 3. check: ca's fingerprint = the token's; cert issued and signed by ca, CN node-N, for our key, valid now.
 * 4. write <tlsDir>/node.key (0600), node.crt, ca.crt (0644), atomically; tlsDir 0700.
 * ```
 *
 * The token's secret never leaves this host and the private key never leaves it either: the wire carries
 * the CSR and a proof good only for that CSR and node id, once.
 *
 * Over HTTPS (`--via https://...`, the CA node's API with its TLS credentials, docs/security.md), step 0
 * comes first: one TLS handshake that sends nothing and looks in the chain the server presents for the CA
 * whose SHA-256 the token pins (EAUTH if there is none); steps 1 and 2 then run over connections verified
 * against that CA (src/api/client.ts), so neither the proof nor the CSR goes to a server that is not a
 * node certified by the pinned CA. Nothing is accepted on the strength of the connection alone: steps 1
 * and 3 still check the CA and certificate received.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { chmod, mkdir } from 'node:fs/promises';
import { type ApiResponse, type ApiTrust, apiRequest, fetchPinnedCa } from '../api/client.js';
import type { NodeId } from '../kernel/types.js';
import { DvsError, ERROR_CODES, type ErrorCode } from '../protocol/errors.js';
import { issueNodeTls, type JoinOptions, type JoinResult, joinWithToken, loadCa } from './ca-dir.js';
import { writeFileAtomic } from './fsutil.js';
import {
  colonFingerprint,
  compactFingerprint,
  isPinnedToken,
  joinProof,
  parsePinnedToken,
  pinnedTokenHash,
  spendPinnedToken,
} from './join-token.js';
import { commonNameOf, parseNodeCommonName } from './names.js';
import { tlsPathsIn } from './paths.js';
import { createNodeRequest, type NodeNames } from './pki.js';

/** Path of the join route under an API base URL. */
export const JOIN_PATH = '/api/v1/join';
/** Path of the CA certificate route (public). */
export const JOIN_CA_PATH = '/api/v1/join/ca';
/** Version of the join request body. */
export const JOIN_WIRE_VERSION = 1;

/** Options of {@link joinOverNetwork}. */
export interface NetworkJoinOptions {
  /** Base URL of a node's REST API that holds the CA: `https://10.0.0.1:8080` (or `http://` if its API is plain). */
  via: string;
  nodeId: NodeId;
  /** Where the credentials go (created 0700). */
  tlsDir: string;
  /** SAN entries of the certificate. */
  names?: NodeNames;
  /** Per HTTP request, ms (default 10000). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/**
 * Join over the network with a pinned token (see the file comment). EAUTH: CA fingerprint mismatch, token
 * refused, certificate not what was asked for; EINVAL: bad token, URL or names; ENOTCONN: the node is not
 * reachable; ETIMEDOUT; EPROTO: not a dvs API; ENOENT: that node issues no certificates.
 */
export async function joinOverNetwork(token: string, opts: NetworkJoinOptions): Promise<JoinResult> {
  const t = parsePinnedToken(token);
  const base = baseUrl(opts.via);
  // 0. Over HTTPS, the only trust anchor is the CA the token pins, found in the server's own chain.
  const trust = base.startsWith('https:')
    ? { ca: await fetchPinnedCa(base, t.caFingerprint, opts) }
    : undefined;
  const callOpts = { ...opts, ...(trust ? { trust } : {}) };
  // 1. Before anything is sent that depends on the token: is this the CA the token pins?
  const served = await call<{ ca?: unknown }>(base, JOIN_CA_PATH, undefined, callOpts);
  if (typeof served.ca !== 'string')
    throw new DvsError('EPROTO', `${base}${JOIN_CA_PATH} sent no CA certificate`);
  checkPinned(served.ca, t.caFingerprint, base);
  // 2. Key pair here; only the CSR and a proof bound to it travel.
  const req = await createNodeRequest(opts.nodeId, opts.names);
  const body = {
    version: JOIN_WIRE_VERSION,
    tokenId: t.id,
    nodeId: opts.nodeId,
    csr: req.csrPem,
    proof: joinProof(pinnedTokenHash(t), opts.nodeId, req.csrPem),
  };
  const answer = await call<{ cert?: unknown; ca?: unknown }>(base, JOIN_PATH, body, callOpts);
  if (typeof answer.cert !== 'string' || typeof answer.ca !== 'string') {
    throw new DvsError('EPROTO', `${base}${JOIN_PATH} answered without cert and ca`);
  }
  // 3. Trust nothing in the answer until it checks out against the token and our own key.
  checkPinned(answer.ca, t.caFingerprint, base);
  const cert = checkIssued(answer.cert, answer.ca, opts.nodeId, req.keyPem);
  // 4.
  return writeCredentials(opts.tlsDir, opts.nodeId, req.keyPem, answer.cert, answer.ca, cert);
}

/**
 * The file flow with either token form: a pinned token is checked against the CA directory's certificate
 * (EAUTH on mismatch) and its node binding, spent, then the certificate is issued here; a plain token goes
 * through {@link joinWithToken} as before.
 */
export async function joinWithCaDir(token: string, opts: JoinOptions): Promise<JoinResult> {
  if (!isPinnedToken(token)) return joinWithToken(token.trim(), opts);
  const t = parsePinnedToken(token);
  const ca = await loadCa(opts.caDir);
  if (compactFingerprint(ca.info.fingerprint) !== t.caFingerprint) {
    throw new DvsError(
      'EAUTH',
      `CA fingerprint mismatch: ${opts.caDir} holds CA ${ca.info.fingerprint}, the token pins ${colonFingerprint(t.caFingerprint)}`,
    );
  }
  await spendPinnedToken(opts.caDir, { kind: 'token', token: t, nodeId: opts.nodeId }, opts);
  return issueNodeTls(opts);
}

/** EAUTH unless `caPem` is a CA certificate whose SHA-256 fingerprint is `pinned` (64 hex). */
export function checkPinned(caPem: string, pinned: string, from: string): X509Certificate {
  const ca = parseCert(caPem, `the CA certificate from ${from}`);
  const got = compactFingerprint(ca.fingerprint256);
  if (got !== pinned) {
    throw new DvsError(
      'EAUTH',
      `CA fingerprint mismatch: ${from} serves CA ${ca.fingerprint256}, the token pins ${colonFingerprint(pinned)} (wrong --via, or someone in the middle)`,
    );
  }
  if (!ca.ca) throw new DvsError('EAUTH', `the certificate from ${from} is not a CA certificate`);
  return ca;
}

/**
 * EAUTH unless `certPem` was issued and signed by `caPem`, names node `nodeId`, is for the key `keyPem`
 * and is valid at `now`.
 */
export function checkIssued(
  certPem: string,
  caPem: string,
  nodeId: NodeId,
  keyPem: string,
  now = Date.now(),
): X509Certificate {
  const cert = parseCert(certPem, 'the node certificate');
  const ca = parseCert(caPem, 'the CA certificate');
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) {
    throw new DvsError('EAUTH', 'the node certificate received is not signed by the pinned CA');
  }
  const id = parseNodeCommonName(commonNameOf(cert.subject));
  if (id !== nodeId) {
    throw new DvsError(
      'EAUTH',
      `node id mismatch: the certificate received is for ${commonNameOf(cert.subject) ?? 'no CN'}, not node-${nodeId}`,
    );
  }
  if (!cert.checkPrivateKey(createPrivateKey(keyPem))) {
    throw new DvsError('EAUTH', 'the certificate received is not for the key made here');
  }
  if (Date.parse(cert.validFrom) > now || Date.parse(cert.validTo) <= now) {
    throw new DvsError(
      'EAUTH',
      `the certificate received is not valid now (${cert.validFrom} .. ${cert.validTo})`,
    );
  }
  return cert;
}

async function writeCredentials(
  tlsDir: string,
  nodeId: NodeId,
  keyPem: string,
  certPem: string,
  caPem: string,
  cert: X509Certificate,
): Promise<JoinResult> {
  await mkdir(tlsDir, { recursive: true, mode: 0o700 });
  await chmod(tlsDir, 0o700);
  const paths = tlsPathsIn(tlsDir);
  // The key first: a crash in between leaves no certificate without its key.
  await writeFileAtomic(paths.key, keyPem, 0o600);
  await writeFileAtomic(paths.cert, certPem, 0o644);
  await writeFileAtomic(paths.ca, caPem, 0o644);
  return {
    ...paths,
    nodeId,
    fingerprint: cert.fingerprint256,
    caFingerprint: new X509Certificate(caPem).fingerprint256,
    notAfter: new Date(cert.validTo).toISOString(),
  };
}

function parseCert(pem: string, what: string): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch (e) {
    throw new DvsError('EPROTO', `${what} is not a PEM certificate`, undefined, { cause: e });
  }
}

function baseUrl(via: string): string {
  let u: URL;
  try {
    u = new URL(via);
  } catch {
    throw new DvsError('EINVAL', `bad --via URL ${via} (want https://HOST:PORT or http://HOST:PORT)`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new DvsError('EINVAL', `bad --via URL ${via}: http:// or https:// only`);
  }
  return `${u.protocol}//${u.host}`;
}

/** One JSON request; DvsError for every failure (the server's own code when it sent one). */
async function call<T>(
  base: string,
  path: string,
  body: unknown,
  opts: Pick<NetworkJoinOptions, 'timeoutMs' | 'signal'> & { trust?: ApiTrust },
): Promise<T> {
  const url = `${base}${path}`;
  let res: ApiResponse;
  try {
    res = await apiRequest(url, {
      method: body === undefined ? 'GET' : 'POST',
      ...(body === undefined ? {} : { body }),
      ...(opts.trust ? { trust: opts.trust } : {}),
      timeoutMs: opts.timeoutMs ?? 10_000,
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
  } catch (e) {
    if (e instanceof DvsError && e.code === 'EABORTED')
      throw new DvsError('EABORTED', `join via ${base} aborted`);
    throw e;
  }
  let json: unknown;
  try {
    json = JSON.parse(res.text);
  } catch {
    throw new DvsError('EPROTO', `${url} is not a dvs API (HTTP ${res.status}, not JSON)`);
  }
  if (res.status >= 200 && res.status < 300) return json as T;
  const err = (json as { error?: { code?: unknown; message?: unknown } }).error;
  // Without --ca-dir the join paths are not exempt from the API token, nor routed: 401 or 404.
  if ((res.status === 404 || res.status === 401) && path === JOIN_CA_PATH) {
    throw new DvsError(
      'ENOENT',
      `${base} does not serve the network join (start the CA's node with --ca-dir and --api)`,
    );
  }
  const code = typeof err?.code === 'string' && err.code in ERROR_CODES ? (err.code as ErrorCode) : 'EPROTO';
  const message = typeof err?.message === 'string' ? err.message : `HTTP ${res.status}`;
  throw new DvsError(code, `join refused by ${base}: ${message}`);
}
