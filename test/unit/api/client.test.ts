/**
 * What an HTTPS client of a node API accepts as the server's identity once the chain verified against the
 * cluster CA (src/api/client.ts): a node certificate (CN node-<id>), that very node when the caller says
 * which one it dials; the host name is not consulted. Pure: no sockets.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { apiRequest, checkNodeIdentity, clusterTlsOptions } from '../../../src/api/client.js';
import { DvsError } from '../../../src/protocol/errors.js';

const cert = (cn: string | undefined) => ({ subject: (cn === undefined ? {} : { CN: cn }) as never });

describe('checkNodeIdentity', () => {
  test('a node certificate is accepted whatever the host, and only for the node expected', () => {
    assert.equal(checkNodeIdentity('10.9.8.7', cert('node-3')), undefined);
    assert.equal(checkNodeIdentity('example.org', cert('node-3'), 3), undefined);
    const other = checkNodeIdentity('127.0.0.1', cert('node-3'), 4);
    assert.match(String(other?.message), /node-3's, not node-4's/);
    assert.equal((other as NodeJS.ErrnoException).code, 'ERR_TLS_CERT_ALTNAME_INVALID');
  });

  test('anything but a node CN is refused', () => {
    for (const cn of [undefined, 'dvs cluster CA', 'node-70000', 'node-01', 'node-1 ', '127.0.0.1']) {
      assert.ok(checkNodeIdentity('127.0.0.1', cert(cn)) instanceof Error, String(cn));
    }
  });

  test('client options: the cluster CA only, TLS >= 1.2, SNI for names but not for IP addresses', () => {
    const o = clusterTlsOptions({ ca: 'PEM' }, '127.0.0.1');
    assert.equal(o.ca, 'PEM');
    assert.equal(o.rejectUnauthorized, true);
    assert.equal(o.minVersion, 'TLSv1.2');
    assert.equal(o.servername, undefined);
    assert.equal(clusterTlsOptions({ ca: 'PEM' }, 'node1.example').servername, 'node1.example');
  });

  test('an https URL without the cluster CA is refused before connecting', async () => {
    await assert.rejects(apiRequest('https://127.0.0.1:1/api/v1/cluster'), (e: unknown) => {
      assert.ok(e instanceof DvsError);
      assert.equal(e.code, 'EINVAL');
      return true;
    });
    await assert.rejects(
      apiRequest('ftp://x/'),
      (e: unknown) => e instanceof DvsError && e.code === 'EINVAL',
    );
  });
});
