import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InvalidArgumentError } from '@commander-js/extra-typings';
import fc from 'fast-check';
import { nodeOptionsOf } from '../../../src/cli/commands/node.js';
import {
  dcNameArg,
  dcRefArg,
  exitCodeOf,
  formatDuration,
  formatHostPort,
  intArg,
  parseHostPort,
  parseNodeList,
  parsePeers,
  resolveClusterDir,
  signalArg,
} from '../../../src/cli/parse.js';

const invalid = (e: unknown) => e instanceof InvalidArgumentError;

describe('cli parse - integers', () => {
  it('accepts integers in range and rejects the rest', () => {
    const p = intArg(1, 10);
    assert.equal(p('1'), 1);
    assert.equal(p(' 10 '), 10);
    for (const bad of ['0', '11', '1.5', 'x', '', '1e3', '-1']) assert.throws(() => p(bad), invalid, bad);
  });

  it('round-trips every in-range integer', () => {
    const p = intArg(-5, 1000);
    fc.assert(fc.property(fc.integer({ min: -5, max: 1000 }), (n) => p(String(n)) === n));
  });
});

describe('cli parse - node lists', () => {
  it('accepts lists and ranges, sorted and unique', () => {
    assert.deepEqual(parseNodeList('2,0,1'), [0, 1, 2]);
    assert.deepEqual(parseNodeList('0-2,5,1'), [0, 1, 2, 5]);
    assert.deepEqual(parseNodeList('7'), [7]);
  });

  it('rejects empty items, reversed ranges and out-of-range ids', () => {
    for (const bad of ['', '1,,2', '3-1', '65536', 'a', '1-'])
      assert.throws(() => parseNodeList(bad), invalid, bad);
  });

  it('returns exactly the ids given, for any set', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.integer({ min: 0, max: 65535 }), { minLength: 1, maxLength: 20 }),
        (ids) => {
          const expected = [...ids].sort((a, b) => a - b);
          assert.deepEqual(parseNodeList(ids.join(',')), expected);
        },
      ),
    );
  });
});

describe('cli parse - addresses and peers', () => {
  it('parses host:port, including IPv6 in brackets', () => {
    assert.deepEqual(parseHostPort('127.0.0.1:7000'), { host: '127.0.0.1', port: 7000 });
    assert.deepEqual(parseHostPort('[::1]:0'), { host: '::1', port: 0 });
    assert.equal(formatHostPort({ host: '::1', port: 9 }), '[::1]:9');
    for (const bad of ['127.0.0.1', ':80', 'host:70000', 'a b:1', '::1:80']) {
      assert.throws(() => parseHostPort(bad), invalid, bad);
    }
  });

  it('parses peers with default and explicit names', () => {
    assert.deepEqual(parsePeers('0=127.0.0.1:7000,1=alpha@127.0.0.1:7001'), [
      { id: 0, name: 'node0', address: '127.0.0.1:7000' },
      { id: 1, name: 'alpha', address: '127.0.0.1:7001' },
    ]);
    assert.deepEqual(parsePeers(''), []);
    for (const bad of ['0=127.0.0.1:1,0=127.0.0.1:2', 'x=127.0.0.1:1', '0:127.0.0.1:1', '0=127.0.0.1']) {
      assert.throws(() => parsePeers(bad), invalid, bad);
    }
  });

  it('node start drops itself from the shared peer list', () => {
    const opts = nodeOptionsOf({
      nodeId: 1,
      listen: '127.0.0.1:7001',
      socket: '/s',
      data: '/d',
      peers: parsePeers('0=127.0.0.1:7000,1=127.0.0.1:7001,2=127.0.0.1:7002'),
      heartbeatMs: 100,
    });
    assert.deepEqual(
      opts.peers.map((p) => p.id),
      [0, 2],
    );
    assert.equal(opts.dataDir, '/d');
    assert.equal(opts.heartbeatMs, 100);
    assert.equal('metrics' in opts, false);
  });
});

describe('cli parse - names, signals, exit codes', () => {
  it('validates DC names and refs', () => {
    assert.equal(dcNameArg('demo-1.a_b'), 'demo-1.a_b');
    for (const bad of ['1abc', '', 'a/b', 'a b', 'x'.repeat(33)])
      assert.throws(() => dcNameArg(bad), invalid, bad);
    assert.equal(dcRefArg('7'), 7);
    assert.equal(dcRefArg('demo'), 'demo');
    assert.throws(() => dcRefArg('0'), invalid);
  });

  it('normalises signal names and numbers', () => {
    assert.equal(signalArg('term'), 'SIGTERM');
    assert.equal(signalArg('SIGINT'), 'SIGINT');
    assert.equal(signalArg('9'), 'SIGKILL');
    for (const bad of ['SIGNOPE', '999', '']) assert.throws(() => signalArg(bad), invalid, bad);
  });

  it('maps exits to shell exit codes', () => {
    assert.equal(exitCodeOf({ code: 3, signal: null }), 3);
    assert.equal(exitCodeOf({ code: null, signal: 'SIGKILL' }), 137);
    assert.equal(exitCodeOf({ code: null, signal: 'SIGTERM' }), 143);
    assert.equal(exitCodeOf(null), 1);
  });

  it('formats durations', () => {
    assert.equal(formatDuration(950), '950ms');
    assert.equal(formatDuration(12_340), '12.3s');
    assert.equal(formatDuration(245_000), '4m05s');
    assert.equal(formatDuration(7_380_000), '2h03m');
    assert.equal(formatDuration(3 * 86_400_000 + 4 * 3_600_000), '3d04h');
  });
});

describe('cli parse - cluster directory', () => {
  it('prefers --dir, then DVS_HOME, then XDG_STATE_HOME, then HOME', () => {
    const env = { DVS_HOME: '/h/dvs', XDG_STATE_HOME: '/x', HOME: '/home/u' };
    assert.equal(resolveClusterDir('/d', env, '/cwd'), '/d');
    assert.equal(resolveClusterDir('rel', env, '/cwd'), '/cwd/rel');
    assert.equal(resolveClusterDir(undefined, env, '/cwd'), '/h/dvs');
    assert.equal(resolveClusterDir(undefined, { XDG_STATE_HOME: '/x', HOME: '/home/u' }, '/cwd'), '/x/dvs');
    assert.equal(resolveClusterDir(undefined, { HOME: '/home/u' }, '/cwd'), '/home/u/.local/state/dvs');
  });
});
