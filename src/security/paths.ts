/**
 * File names of the cluster CA directory and of a node's TLS directory (the layout is drawn in
 * src/security/ca-dir.ts and docs/security.md). No crypto here: the daemon and the CLI import it cheaply.
 */
import { join } from 'node:path';

export const CA_CERT_FILE = 'ca.crt';
export const CA_KEY_FILE = 'ca.key';
export const NODE_CERT_FILE = 'node.crt';
export const NODE_KEY_FILE = 'node.key';

/** Paths of one node's TLS credentials (NodeOptions.tls). */
export interface TlsPaths {
  /** The cluster CA certificate, PEM. */
  ca: string;
  /** This node's certificate, PEM. */
  cert: string;
  /** This node's private key, PEM. */
  key: string;
}

/** The CA directory of a cluster state directory. */
export function caDirOf(clusterDir: string): string {
  return join(clusterDir, 'ca');
}

/** The credential paths inside a node TLS directory. */
export function tlsPathsIn(tlsDir: string): TlsPaths {
  return {
    ca: join(tlsDir, CA_CERT_FILE),
    cert: join(tlsDir, NODE_CERT_FILE),
    key: join(tlsDir, NODE_KEY_FILE),
  };
}
