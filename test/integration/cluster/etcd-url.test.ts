/**
 * parseEtcdUrl: the `etcd://h1:2379,h2:2379` store URLs users type. Pure (no etcd needed); it sits with the
 * other etcd tests because the etcd backend owns this directory's etcd* files.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseEtcdUrl } from '../../../src/cluster/etcd/url.js';
import { DvsError, type ErrorCode } from '../../../src/protocol/errors.js';

function fails(url: string, code: ErrorCode, mentions: RegExp): void {
  assert.throws(
    () => parseEtcdUrl(url),
    (e: unknown) => {
      assert.ok(e instanceof DvsError, String(e));
      assert.equal(e.code, code);
      assert.match(e.message, mentions);
      return true;
    },
  );
}

describe('parseEtcdUrl', () => {
  it('parses lists of hosts, IPv4, IPv6 and names, with the default port where none is given', () => {
    assert.deepEqual(parseEtcdUrl('etcd://10.0.0.1:2379,10.0.0.2:32379'), [
      '10.0.0.1:2379',
      '10.0.0.2:32379',
    ]);
    assert.deepEqual(parseEtcdUrl('etcd://node-a,node-b.example:4001/'), [
      'node-a:2379',
      'node-b.example:4001',
    ]);
    assert.deepEqual(parseEtcdUrl('ETCD://[::1]:2379,[fe80::1]'), ['[::1]:2379', '[fe80::1]:2379']);
    assert.deepEqual(parseEtcdUrl(' etcd://127.0.0.1:1 '), ['127.0.0.1:1']);
  });

  it('rejects malformed URLs with EINVAL naming the bad part', () => {
    fails('127.0.0.1:2379', 'EINVAL', /expected etcd:\/\//);
    fails('http://127.0.0.1:2379', 'EINVAL', /scheme must be etcd/);
    fails('etcd://', 'EINVAL', /no endpoints/);
    fails('etcd://a:2379,,b:2379', 'EINVAL', /empty endpoint/);
    fails('etcd://a:http', 'EINVAL', /bad port "http"/);
    fails('etcd://a:0', 'EINVAL', /port 0 out of range/);
    fails('etcd://a:70000', 'EINVAL', /port 70000 out of range/);
    fails('etcd://bad_host:1', 'EINVAL', /bad host "bad_host"/);
    fails('etcd://[::1:2379', 'EINVAL', /unterminated IPv6/);
    fails('etcd://a:1/path', 'EINVAL', /no path/);
    fails('etcd://user@a:1', 'EINVAL', /credentials/);
    fails('etcd://a:1,a:1', 'EINVAL', /listed twice/);
    fails('etcd://a,a:2379', 'EINVAL', /listed twice/);
  });

  it('refuses TLS URLs with ENOTSUP instead of downgrading them', () => {
    fails('etcds://a:2379', 'ENOTSUP', /TLS/);
  });
});
