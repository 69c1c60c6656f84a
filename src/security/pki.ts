/**
 * Certificates of the cluster (DESIGN.md §10): a cluster CA and one leaf certificate per node, ECDSA P-256
 * with SHA-256, built with @peculiar/x509 over node:crypto's webcrypto. Pure with respect to files: PEM
 * strings in, PEM strings out (src/security/files.ts keeps them on disk).
 *
 * - CA: self-signed, BasicConstraints cA (critical, path length 0), KeyUsage keyCertSign+cRLSign (critical).
 * - Node: the node makes its key pair and a PKCS#10 request (CSR) itself, so its private key never leaves
 *   it; the CA signs the request after checking its signature and that its CN is `node-<id>` for the id the
 *   join token was spent on. The leaf gets BasicConstraints cA=false, KeyUsage digitalSignature, EKU
 *   serverAuth+clientAuth (every node is both a TLS server and a TLS client on its links) and the SAN the
 *   request asked for (IP addresses and DNS names only).
 */
// @peculiar/x509 v2 resolves its services through tsyringe, which needs the Reflect polyfill loaded first.
import 'reflect-metadata';
import { randomBytes, webcrypto, X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import * as x509 from '@peculiar/x509';
import type { NodeId } from '../kernel/types.js';
import { DvsError } from '../protocol/errors.js';
import { nodeCommonName, parseNodeCommonName } from './names.js';

/** Key and signature algorithm of every key in the cluster. */
export const KEY_ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

/** Default lifetime of the CA certificate, days. */
export const CA_VALID_DAYS = 3650;
/** Default lifetime of a node certificate, days. */
export const NODE_VALID_DAYS = 365;

const DAY_MS = 86_400_000;
// webcrypto's Crypto and the DOM Crypto type x509 declares are the same object, typed twice.
const crypto = webcrypto as unknown as NonNullable<
  Parameters<typeof x509.X509CertificateGenerator.create>[1]
>;
type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

/** A CA or node identity as PEM text. */
export interface PemPair {
  /** The certificate, PEM. */
  certPem: string;
  /** The PKCS#8 private key, PEM. Secret. */
  keyPem: string;
}

/** Options of {@link createCa}. */
export interface CreateCaOptions {
  /** Subject CN (default `dvs cluster CA`). */
  commonName?: string;
  validDays?: number;
  /** Start of validity (default now). */
  now?: Date;
}

/** A new self-signed cluster CA. */
export async function createCa(opts: CreateCaOptions = {}): Promise<PemPair> {
  const now = opts.now ?? new Date();
  const keys = await generateKeys();
  const cert = await x509.X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: serialNumber(),
      name: new x509.Name([{ CN: [opts.commonName ?? 'dvs cluster CA'] }, { O: ['dvs'] }]),
      notBefore: backdated(now),
      notAfter: new Date(now.getTime() + (opts.validDays ?? CA_VALID_DAYS) * DAY_MS),
      signingAlgorithm: KEY_ALGORITHM,
      keys,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto),
      ],
    },
    crypto,
  );
  return { certPem: cert.toString('pem'), keyPem: await exportKey(keys.privateKey) };
}

/** Names a node certificate is valid for, besides its CN. */
export interface NodeNames {
  /** IP addresses (v4 or v6) the node is reached at. */
  ips?: string[];
  /** DNS names of the node. */
  dns?: string[];
}

/** A node's new key pair and the request the CA signs. */
export interface NodeRequest {
  /** PKCS#8 private key, PEM. Stays on the node. */
  keyPem: string;
  /** PKCS#10 certificate request, PEM. Safe to send anywhere. */
  csrPem: string;
}

/** Make node `nodeId`'s key pair and a CSR for CN `node-<id>` with `names` as SAN. EINVAL for bad names. */
export async function createNodeRequest(nodeId: NodeId, names: NodeNames = {}): Promise<NodeRequest> {
  const cn = nodeCommonName(nodeId);
  const san = sanOf(names);
  const keys = await generateKeys();
  const csr = await x509.Pkcs10CertificateRequestGenerator.create(
    {
      name: new x509.Name([{ CN: [cn] }, { O: ['dvs'] }]),
      keys,
      signingAlgorithm: KEY_ALGORITHM,
      extensions: san.length > 0 ? [new x509.SubjectAlternativeNameExtension(san)] : [],
    },
    crypto,
  );
  return { keyPem: await exportKey(keys.privateKey), csrPem: csr.toString('pem') };
}

/** Options of {@link signNodeRequest}. */
export interface SignOptions {
  /** The node id the request must be for (the one the join token was spent on). */
  nodeId: NodeId;
  validDays?: number;
  now?: Date;
}

/**
 * Sign a node's CSR with the CA. Throws EAUTH if the request's signature is bad or it names another node,
 * EINVAL if it is not a CSR or asks for SAN entries other than IP addresses and DNS names.
 */
export async function signNodeRequest(ca: PemPair, csrPem: string, opts: SignOptions): Promise<string> {
  const csr = parse(() => new x509.Pkcs10CertificateRequest(csrPem), 'certificate request');
  if (!(await csr.verify(crypto))) throw new DvsError('EAUTH', 'certificate request signature is invalid');
  const cn = csr.subjectName.getField('CN');
  const id = cn.length === 1 ? parseNodeCommonName(cn[0]) : null;
  if (id !== opts.nodeId) {
    throw new DvsError(
      'EAUTH',
      `certificate request is for ${cn.join(',') || 'no CN'}, not node-${opts.nodeId}`,
    );
  }
  const san: x509.JsonGeneralName[] = [];
  const requested = csr.extensions.find((e) => e instanceof x509.SubjectAlternativeNameExtension);
  for (const n of requested?.names.toJSON() ?? []) {
    if (n.type !== 'ip' && n.type !== 'dns') {
      throw new DvsError(
        'EINVAL',
        `certificate request asks for a ${n.type} name; only ip and dns are allowed`,
      );
    }
    san.push({ type: n.type, value: n.value });
  }
  const caCert = parse(() => new x509.X509Certificate(ca.certPem), 'CA certificate');
  const caKey = await importKey(ca.keyPem);
  const now = opts.now ?? new Date();
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber: serialNumber(),
      subject: csr.subjectName,
      issuer: caCert.subjectName,
      notBefore: backdated(now),
      notAfter: new Date(now.getTime() + (opts.validDays ?? NODE_VALID_DAYS) * DAY_MS),
      signingAlgorithm: KEY_ALGORITHM,
      publicKey: csr.publicKey,
      signingKey: caKey,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([
          x509.ExtendedKeyUsage.serverAuth,
          x509.ExtendedKeyUsage.clientAuth,
        ]),
        ...(san.length > 0 ? [new x509.SubjectAlternativeNameExtension(san)] : []),
        await x509.SubjectKeyIdentifierExtension.create(await csr.publicKey.export(crypto), false, crypto),
        await x509.AuthorityKeyIdentifierExtension.create(caCert, false, crypto),
      ],
    },
    crypto,
  );
  return cert.toString('pem');
}

/** SHA-256 fingerprint of a certificate, `AB:CD:...` (as openssl and node:crypto print it). EINVAL if not one. */
export function fingerprintOf(certPem: string): string {
  return parse(() => new X509Certificate(certPem), 'certificate').fingerprint256;
}

function sanOf(names: NodeNames): x509.JsonGeneralName[] {
  const out: x509.JsonGeneralName[] = [];
  for (const ip of names.ips ?? []) {
    if (isIP(ip) === 0) throw new DvsError('EINVAL', `bad IP address ${ip}`);
    out.push({ type: 'ip', value: ip });
  }
  for (const name of names.dns ?? []) {
    if (
      !/^(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/.test(
        name,
      )
    ) {
      throw new DvsError('EINVAL', `bad DNS name ${name}`);
    }
    out.push({ type: 'dns', value: name });
  }
  return out;
}

function generateKeys(): Promise<CryptoKeyPair> {
  return webcrypto.subtle.generateKey(KEY_ALGORITHM, true, ['sign', 'verify']);
}

async function exportKey(key: CryptoKey): Promise<string> {
  return x509.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', key), 'PRIVATE KEY');
}

async function importKey(pem: string): Promise<CryptoKey> {
  try {
    return await webcrypto.subtle.importKey(
      'pkcs8',
      x509.PemConverter.decodeFirst(pem),
      KEY_ALGORITHM,
      false,
      ['sign'],
    );
  } catch (e) {
    throw new DvsError('EINVAL', 'CA key is not a PKCS#8 ECDSA P-256 key', undefined, { cause: e });
  }
}

/** Random positive 128-bit serial (RFC 5280: at most 20 octets, positive). */
function serialNumber(): string {
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x01;
  return b.toString('hex');
}

/** Validity starts a minute early: clocks of a cluster's nodes are never exactly in step. */
function backdated(now: Date): Date {
  return new Date(now.getTime() - 60_000);
}

function parse<T>(fn: () => T, what: string): T {
  try {
    return fn();
  } catch (e) {
    throw new DvsError('EINVAL', `not a PEM ${what}`, undefined, { cause: e });
  }
}
