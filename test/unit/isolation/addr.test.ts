import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  containerMac,
  dcNames,
  dcOfName,
  formatIpv4,
  nextFreeAddress,
  parseIpv4,
  parsePrefix,
  prefixesOverlap,
  validateLanPrefix,
} from '../../../src/isolation/addr.js';
import { DvsError } from '../../../src/protocol/errors.js';

function rejects(f: () => unknown, code: string, pattern: RegExp): void {
  assert.throws(f, (e: unknown) => e instanceof DvsError && e.code === code && pattern.test(e.message));
}

describe('names', () => {
  it('derives short per-node names that fit the 15-character interface limit', () => {
    const n = dcNames('d12ab', 16_777_215);
    for (const name of Object.values(n)) assert.ok(name.length <= 15, name);
    assert.deepEqual(dcNames('d3', 5), {
      bridge: 'd3b5',
      vxlan: 'd3x5',
      veth: 'd3v5',
      ifb: 'd3i5',
      netns: 'd3c5',
      cgroup: 'd3c5',
    });
  });

  it('maps names back to DC ids, and only our own', () => {
    assert.equal(dcOfName('d3', 'x', 'd3x42'), 42);
    assert.equal(dcOfName('d3', 'x', 'd31x42'), undefined);
    assert.equal(dcOfName('d3', 'x', 'd3b42'), undefined);
    assert.equal(dcOfName('d3', 'c', 'd3c042'), undefined);
    assert.equal(dcOfName('d3', 'c', 'eth0'), undefined);
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 16_777_215 }),
        (dc) => dcOfName('ab', 'v', dcNames('ab', dc).veth) === dc,
      ),
    );
  });

  it('refuses bad prefixes and DC ids', () => {
    rejects(() => dcNames('D3', 1), 'EINVAL', /name prefix/);
    rejects(() => dcNames('toolong', 1), 'EINVAL', /name prefix/);
    rejects(() => dcNames('d3', 16_777_216), 'EINVAL', /DC id/);
    rejects(() => dcNames('d3', 0), 'EINVAL', /DC id/);
  });
});

describe('IPv4 prefixes', () => {
  it('parses and formats addresses', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 2 ** 32 - 1 }), (n) => parseIpv4(formatIpv4(n)) === n));
    rejects(() => parseIpv4('1.2.3.256'), 'EINVAL', /not an IPv4 address/);
    rejects(() => parsePrefix('172.31.5.1/24'), 'EINVAL', /host bits set \(did you mean 172.31.5.0\/24\?\)/);
    assert.deepEqual(parsePrefix('172.31.5.1/24', { strict: false }), parsePrefix('172.31.5.0/24'));
  });

  it('detects overlaps', () => {
    assert.ok(prefixesOverlap(parsePrefix('10.0.0.0/8'), parsePrefix('10.9.0.0/16')));
    assert.ok(!prefixesOverlap(parsePrefix('172.31.5.0/24'), parsePrefix('172.31.6.0/24')));
  });

  it('refuses a LAN overlapping another DC or the host', () => {
    rejects(
      () => validateLanPrefix('172.31.5.0/24', { web: '172.31.0.0/16' }),
      'EINVAL',
      /overlaps 172.31.0.0\/16 of DC web/,
    );
    rejects(
      () => validateLanPrefix('10.99.0.0/16', {}, ['10.99.0.11/24']),
      'EINVAL',
      /overlaps the host network 10.99.0.11\/24/,
    );
    rejects(() => validateLanPrefix('172.31.5.0/31'), 'EINVAL', /between \/8 and \/30/);
    rejects(() => validateLanPrefix('127.1.0.0/16'), 'EINVAL', /not a usable unicast range/);
    assert.deepEqual(validateLanPrefix('172.31.5.0/24', { db: '172.31.6.0/24' }, ['10.0.0.0/24']), {
      network: parseIpv4('172.31.5.0'),
      length: 24,
    });
  });
});

describe('nextFreeAddress', () => {
  it('picks the lowest free host address', () => {
    assert.equal(nextFreeAddress('172.31.5.0/24', []), '172.31.5.1');
    assert.equal(nextFreeAddress('172.31.5.0/24', ['172.31.5.1', '172.31.5.3', '10.0.0.2']), '172.31.5.2');
  });

  it('never returns a used, network or broadcast address, and says when the prefix is full', () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer({ min: 1, max: 6 }), { maxLength: 5 }), (hosts) => {
        const used = hosts.map((h) => `10.1.1.${h}`);
        const a = nextFreeAddress('10.1.1.0/29', used);
        const last = Number(a.split('.')[3]);
        assert.ok(!used.includes(a));
        assert.ok(last >= 1 && last <= 6);
      }),
    );
    rejects(() => nextFreeAddress('10.1.1.0/30', ['10.1.1.1', '10.1.1.2']), 'ENOSPC', /no free address/);
  });
});

describe('containerMac', () => {
  it('is locally administered, unicast and unique per (dc, node)', () => {
    assert.equal(containerMac(5, 3), '02:00:00:05:00:03');
    assert.equal(containerMac(16_777_215, 65_535), '02:ff:ff:ff:ff:ff');
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 16_777_215 }),
        fc.integer({ min: 0, max: 65_535 }),
        fc.integer({ min: 1, max: 16_777_215 }),
        fc.integer({ min: 0, max: 65_535 }),
        (d1, n1, d2, n2) => (containerMac(d1, n1) === containerMac(d2, n2)) === (d1 === d2 && n1 === n2),
      ),
    );
  });
});
