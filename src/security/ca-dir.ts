/**
 * The cluster CA and node credentials on disk (docs/security.md has the threat model).
 *
 * ```
 * <clusterDir>/ca/            0700  the CA directory (`dvs ca init`); only on the host that issues certificates
 *   ca.crt                    0644  the CA certificate: copied to every node
 *   ca.key                    0600  the CA private key: never leaves this directory
 *   tokens.json               0600  hashes of unspent join tokens (src/security/tokens.ts)
 * <tlsDir>/                   0700  one node's credentials (`dvs node join`; `dvs up --tls`: DIR/node<N>/tls)
 *   ca.crt                    0644  the cluster CA certificate (the trust anchor of its links)
 *   node.crt                  0644  the node's certificate, CN node-<id>
 *   node.key                  0600  the node's private key: made on the node, never sent anywhere
 * ```
 */
import { X509Certificate } from 'node:crypto';
import { chmod, mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { NodeId } from '../kernel/types.js';
import { DvsError } from '../protocol/errors.js';
import { checkPrivate, exists, writeFileAtomic } from './fsutil.js';
import { CA_CERT_FILE, CA_KEY_FILE, type TlsPaths, tlsPathsIn } from './paths.js';
import {
  type CreateCaOptions,
  createCa,
  createNodeRequest,
  fingerprintOf,
  type NodeNames,
  type PemPair,
  signNodeRequest,
} from './pki.js';
import { consumeJoinToken, type TokenOptions } from './tokens.js';

/** What `dvs ca init` reports. */
export interface CaInfo {
  dir: string;
  cert: string;
  key: string;
  /** SHA-256 fingerprint of the CA certificate (compare it out of band when copying ca.crt to a node). */
  fingerprint: string;
  /** Expiry, ISO 8601. */
  notAfter: string;
}

/** Create a cluster CA in `dir`. EEXIST if one is there already (a second CA would split the cluster). */
export async function initCa(dir: string, opts: CreateCaOptions = {}): Promise<CaInfo> {
  const cert = join(dir, CA_CERT_FILE);
  const key = join(dir, CA_KEY_FILE);
  if ((await exists(cert)) || (await exists(key))) {
    throw new DvsError('EEXIST', `a cluster CA already exists in ${dir}`);
  }
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  const ca = await createCa(opts);
  // The key first: a crash in between leaves no certificate without its key.
  await writeFileAtomic(key, ca.keyPem, 0o600);
  await writeFileAtomic(cert, ca.certPem, 0o644);
  return infoOf(dir, ca.certPem);
}

/** The CA in `dir` (certificate and key). ENOENT if there is none; EAUTH if its key is readable by others. */
export async function loadCa(dir: string): Promise<PemPair & { info: CaInfo }> {
  const keyPath = join(dir, CA_KEY_FILE);
  const certPem = await readOrEnoent(join(dir, CA_CERT_FILE), `no cluster CA in ${dir} (run dvs ca init)`);
  const keyPem = await readOrEnoent(keyPath, `no CA key in ${dir}`);
  await checkPrivate(keyPath);
  return { certPem, keyPem, info: infoOf(dir, certPem) };
}

/** Where `dvs node join` put a node's credentials. */
export interface JoinResult extends TlsPaths {
  nodeId: NodeId;
  /** Fingerprint of the node certificate. */
  fingerprint: string;
  /** Fingerprint of the CA certificate the node now trusts. */
  caFingerprint: string;
  notAfter: string;
}

/** Options of {@link joinWithToken} and {@link issueNodeTls}. */
export interface JoinOptions extends TokenOptions {
  caDir: string;
  nodeId: NodeId;
  /** Where the node's credentials go (created 0700). */
  tlsDir: string;
  /** SAN entries of the certificate. */
  names?: NodeNames;
  validDays?: number;
}

/**
 * The file flow of `dvs node join` (the CA directory is reachable from this host): make the node's key pair
 * and CSR here, spend `token` (EAUTH if unknown, used or expired), have the CA sign the CSR, write the key,
 * the certificate and the CA certificate to `tlsDir`. The token is spent before signing, so a token is
 * never good for two certificates even if two joins race.
 */
export async function joinWithToken(token: string, opts: JoinOptions): Promise<JoinResult> {
  const ca = await loadCa(opts.caDir);
  const req = await createNodeRequest(opts.nodeId, opts.names);
  await consumeJoinToken(opts.caDir, token, opts);
  return finish(ca, req.keyPem, req.csrPem, opts);
}

/**
 * Issue credentials for node `nodeId` without a token: for whoever owns the CA directory already (`dvs up
 * --tls` for its own nodes). The key pair is still made apart from the CA and only the CSR is signed.
 */
export async function issueNodeTls(opts: JoinOptions): Promise<JoinResult> {
  const ca = await loadCa(opts.caDir);
  const req = await createNodeRequest(opts.nodeId, opts.names);
  return finish(ca, req.keyPem, req.csrPem, opts);
}

async function finish(ca: PemPair, keyPem: string, csrPem: string, opts: JoinOptions): Promise<JoinResult> {
  const certPem = await signNodeRequest(ca, csrPem, {
    nodeId: opts.nodeId,
    ...(opts.validDays !== undefined ? { validDays: opts.validDays } : {}),
  });
  await mkdir(opts.tlsDir, { recursive: true, mode: 0o700 });
  await chmod(opts.tlsDir, 0o700);
  const paths = tlsPathsIn(opts.tlsDir);
  await writeFileAtomic(paths.key, keyPem, 0o600);
  await writeFileAtomic(paths.cert, certPem, 0o644);
  await writeFileAtomic(paths.ca, ca.certPem, 0o644);
  return {
    ...paths,
    nodeId: opts.nodeId,
    fingerprint: fingerprintOf(certPem),
    caFingerprint: fingerprintOf(ca.certPem),
    notAfter: new Date(new X509Certificate(certPem).validTo).toISOString(),
  };
}

function infoOf(dir: string, certPem: string): CaInfo {
  const x = new X509Certificate(certPem);
  return {
    dir,
    cert: join(dir, CA_CERT_FILE),
    key: join(dir, CA_KEY_FILE),
    fingerprint: x.fingerprint256,
    notAfter: new Date(x.validTo).toISOString(),
  };
}

async function readOrEnoent(path: string, message: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new DvsError('ENOENT', message);
    throw e;
  }
}
