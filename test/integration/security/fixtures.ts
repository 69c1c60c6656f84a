/** Certificates for tests: a CA and node credentials made in memory (no files), as the real commands make them. */
import { createCa, createNodeRequest, type PemPair, signNodeRequest } from '../../../src/security/pki.js';
import type { TlsConfig } from '../../../src/transport/tls.js';

/** A new cluster CA. */
export function testCa(): Promise<PemPair> {
  return createCa({ commonName: 'dvs test CA' });
}

/** Credentials of node `id` issued by `ca` (SAN 127.0.0.1 and localhost). */
export async function nodeCreds(ca: PemPair, id: number): Promise<TlsConfig> {
  const req = await createNodeRequest(id, { ips: ['127.0.0.1'], dns: ['localhost'] });
  const cert = await signNodeRequest(ca, req.csrPem, { nodeId: id });
  return { ca: ca.certPem, cert, key: req.keyPem };
}
