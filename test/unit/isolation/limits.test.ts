import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  formatLimits,
  mergeLimits,
  parseLimit,
  parseLimits,
  validateLimits,
} from '../../../src/isolation/limits.js';
import { DvsError } from '../../../src/protocol/errors.js';

const node = { cpus: 2, memoryBytes: 8 * 1024 ** 3 };

function rejects(f: () => unknown, code: string, pattern: RegExp): void {
  assert.throws(f, (e: unknown) => e instanceof DvsError && e.code === code && pattern.test(e.message));
}

describe('parseLimit', () => {
  it('reads memory and io sizes in binary units', () => {
    assert.equal(parseLimit('memory', '256M'), 256 * 1024 ** 2);
    assert.equal(parseLimit('memory', '1g'), 1024 ** 3);
    assert.equal(parseLimit('memory', '512KiB'), 512 * 1024);
    assert.equal(parseLimit('memory', 4096), 4096);
    assert.equal(parseLimit('io-bps', '10M'), 10 * 1024 ** 2);
  });

  it('reads net-bps in decimal bits like tc', () => {
    assert.equal(parseLimit('net-bps', '50M'), 50_000_000);
    assert.equal(parseLimit('net-bps', '1.5G'), 1_500_000_000);
    assert.equal(parseLimit('net-bps', '800k'), 800_000);
  });

  it('reads cpus as a number or a percentage, pids as a whole number', () => {
    assert.equal(parseLimit('cpus', '0.5'), 0.5);
    assert.equal(parseLimit('cpus', '25%'), 0.25);
    assert.equal(parseLimit('pids', '128'), 128);
  });

  it('takes 0, max and none as "no limit"', () => {
    for (const v of ['0', 'max', 'none', 'MAX']) assert.equal(parseLimit('memory', v), null);
  });

  it('refuses what it cannot parse with EINVAL naming the key', () => {
    rejects(() => parseLimit('memory', '10x'), 'EINVAL', /memory: cannot parse "10x"/);
    rejects(() => parseLimit('memory', '-5M'), 'EINVAL', /memory/);
    rejects(() => parseLimit('net-bps', '5MiB'), 'EINVAL', /net-bps/);
    rejects(() => parseLimit('pids', '1.5'), 'EINVAL', /pids: "1.5" is not a whole number/);
    rejects(() => parseLimit('cpus', 'half'), 'EINVAL', /cpus/);
    rejects(() => parseLimit('disk', '1G'), 'EINVAL', /unknown limit "disk"/);
  });
});

describe('parseLimits / validateLimits', () => {
  it('parses a key=value list and an object alike', () => {
    const want = { memoryBytes: 256 * 1024 ** 2, cpus: 0.5, pids: 128, ioBps: 10 * 1024 ** 2, netBps: 50e6 };
    assert.deepEqual(parseLimits('memory=256M, cpus=0.5,pids=128,io-bps=10M,net-bps=50M', node), want);
    assert.deepEqual(
      parseLimits({ memory: '256M', cpus: 0.5, pids: '128', 'io-bps': '10M', 'net-bps': '50M' }, node),
      want,
    );
  });

  it('refuses a CPU quota above the node cores', () => {
    rejects(() => parseLimits('cpus=3', node), 'EINVAL', /cpus: 3 is more than the node's 2 CPUs/);
    rejects(() => validateLimits({ cpus: 2.01 }, node), 'EINVAL', /more than the node's 2 CPUs/);
    validateLimits({ cpus: 2 }, node);
  });

  it('refuses impossible values', () => {
    rejects(() => validateLimits({ memoryBytes: 16 * 1024 ** 3 }, node), 'EINVAL', /more than the node's 8G/);
    rejects(() => validateLimits({ memoryBytes: 1024 }, node), 'EINVAL', /below the minimum/);
    rejects(() => validateLimits({ pids: 0.5 }, node), 'EINVAL', /not a whole number/);
    rejects(() => validateLimits({ cpus: Number.NaN }, node), 'EINVAL', /not a positive number/);
    rejects(() => validateLimits({ netBps: 100 }, node), 'EINVAL', /net-bps: 100 is below/);
    rejects(() => parseLimits('memory', node), 'EINVAL', /not key=value/);
  });

  it('merges updates: absent keeps, null removes', () => {
    const base = { memoryBytes: 1 << 30, cpus: 1 };
    assert.deepEqual(mergeLimits(base, { cpus: null, pids: 64 }), {
      memoryBytes: 1 << 30,
      cpus: null,
      pids: 64,
    });
  });

  it('formats limits so that they parse back to the same values', () => {
    const arb = fc.record(
      {
        memoryBytes: fc.oneof(fc.constant(null), fc.integer({ min: 4 * 1024 ** 2, max: 8 * 1024 ** 3 })),
        cpus: fc.oneof(
          fc.constant(null),
          fc.integer({ min: 1, max: 200 }).map((n) => n / 100),
        ),
        pids: fc.oneof(fc.constant(null), fc.integer({ min: 1, max: 100_000 })),
        ioBps: fc.oneof(fc.constant(null), fc.integer({ min: 4096, max: 2 ** 40 })),
        netBps: fc.oneof(fc.constant(null), fc.integer({ min: 8000, max: 1e11 })),
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(arb, (limits) => {
        assert.deepEqual(parseLimits(formatLimits(limits), node), { ...limits });
      }),
    );
    assert.equal(
      formatLimits({ memoryBytes: 256 * 1024 ** 2, netBps: 50e6, cpus: null }),
      'memory=256M,cpus=max,net-bps=50M',
    );
  });
});
