/**
 * Loading a node's TLS credentials for its links (node:crypto only: a daemon with TLS does not load the
 * certificate builder). The checks here turn a misconfiguration into one clear error at start-up instead of
 * handshakes that fail later for a reason only the peer logs.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { NodeId } from '../kernel/types.js';
import { DvsError } from '../protocol/errors.js';
import { checkPrivate } from './fsutil.js';
import { commonNameOf, parseNodeCommonName } from './names.js';
import type { TlsPaths } from './paths.js';

/** A node's credentials in memory, ready for tls.createServer / tls.connect. */
export interface TlsCredentials {
  /** The cluster CA certificate, PEM: the only trust anchor of node links. */
  ca: string;
  /** This node's certificate, PEM. */
  cert: string;
  /** This node's private key, PEM. */
  key: string;
  /** The node id in the certificate's CN. */
  nodeId: NodeId;
  /** SHA-256 fingerprint of the node certificate. */
  fingerprint: string;
}

/**
 * Read and check `paths`: the certificate is issued by the CA (signature checked), is for a node (CN
 * `node-<id>`), is within its validity period, matches the key; the key file is private (0600).
 * Throws ENOENT for a missing file, EAUTH for anything else wrong.
 */
export async function loadTlsCredentials(paths: TlsPaths, now = Date.now()): Promise<TlsCredentials> {
  const [ca, cert, key] = await Promise.all([paths.ca, paths.cert, paths.key].map(readPem));
  await checkPrivate(paths.key);
  const caX = x509Of(ca!, paths.ca);
  const certX = x509Of(cert!, paths.cert);
  if (!caX.ca) throw new DvsError('EAUTH', `${paths.ca} is not a CA certificate`);
  if (!certX.checkIssued(caX) || !certX.verify(caX.publicKey)) {
    throw new DvsError('EAUTH', `${paths.cert} was not issued by the CA in ${paths.ca}`);
  }
  const nodeId = parseNodeCommonName(commonNameOf(certX.subject));
  if (nodeId === null) throw new DvsError('EAUTH', `${paths.cert} is not a node certificate (CN node-<id>)`);
  if (now < Date.parse(certX.validFrom) || now > Date.parse(certX.validTo)) {
    throw new DvsError(
      'EAUTH',
      `${paths.cert} is not valid now (valid ${certX.validFrom} to ${certX.validTo})`,
    );
  }
  let matches: boolean;
  try {
    matches = certX.checkPrivateKey(createPrivateKey(key!));
  } catch (e) {
    throw new DvsError('EAUTH', `${paths.key} is not a private key`, undefined, { cause: e });
  }
  if (!matches) throw new DvsError('EAUTH', `${paths.key} does not belong to ${paths.cert}`);
  return { ca: ca!, cert: cert!, key: key!, nodeId, fingerprint: certX.fingerprint256 };
}

async function readPem(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new DvsError('ENOENT', `no such file ${path}`);
    throw e;
  }
}

function x509Of(pem: string, path: string): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch (e) {
    throw new DvsError('EAUTH', `${path} is not a PEM certificate`, undefined, { cause: e });
  }
}
