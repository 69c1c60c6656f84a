/**
 * Distributed shared memory for processes (docs/dsm.md): a named byte segment of the process's DC, readable
 * and writable from processes on any node. Accesses are linearizable (hence sequentially consistent): each
 * read returns the latest write, in one order every process agrees on. An access that fits in one page
 * (4 KiB; every aligned scalar does) is atomic; a longer one is a series of per-page accesses, so take the
 * segment's lock when several values must change together or for read-modify-write.
 *
 * @example
 * const seg = await dvk.shm('counters', 4096);          // created zeroed by the first caller
 * await seg.set('u32', 0, 7);
 * const n = await seg.get('u32', 0);                     // 7, from any node
 * await seg.update(8, 8, (b) => {                        // locked read-modify-write
 *   new DataView(b.buffer, b.byteOffset).setFloat64(0, new DataView(b.buffer, b.byteOffset).getFloat64(0, true) + 1, true);
 * });
 * await seg.read(4096, 10);                              // out of bounds (size 4096): DvsError EFAULT
 */
import { randomBytes } from 'node:crypto';
import { DvsError } from '../protocol/errors.js';
import type { CallOptions } from './client.js';
import type { ServiceCaller, ServiceScope } from './services.js';

/** What the daemon says about a segment. */
export interface SegmentInfo {
  dc: number;
  name: string;
  /** Bytes. */
  size: number;
  /** Bytes of one page: the unit of coherence and of atomicity. */
  pageSize: number;
  /** Node that manages the segment's pages and locks. */
  home: number;
  /** Incarnation (changes when the segment is removed and created again). */
  gen: string;
}

/** Scalar types of {@link Segment.get} / {@link Segment.set}, little-endian. */
export type ScalarType = 'u8' | 'i8' | 'u16' | 'i16' | 'u32' | 'i32' | 'f32' | 'f64' | 'u64' | 'i64';

/** Typed array constructors {@link Segment.readArray} accepts. */
export type TypedArrayCtor =
  | Uint8ArrayConstructor
  | Int8ArrayConstructor
  | Uint16ArrayConstructor
  | Int16ArrayConstructor
  | Uint32ArrayConstructor
  | Int32ArrayConstructor
  | Float32ArrayConstructor
  | Float64ArrayConstructor
  | BigUint64ArrayConstructor
  | BigInt64ArrayConstructor;

/** A held segment lock. */
export interface SegmentLock {
  /** Strictly increasing across the holders of the segment's locks. */
  readonly token: number;
  unlock(opts?: CallOptions): Promise<void>;
}

/** Options of {@link Segment.lock}. */
export interface SegmentLockOptions extends CallOptions {
  /** Lock name within the segment (default `default`): several locks can guard different parts. */
  lock?: string;
}

const SIZES: Record<ScalarType, number> = {
  u8: 1,
  i8: 1,
  u16: 2,
  i16: 2,
  u32: 4,
  i32: 4,
  f32: 4,
  f64: 8,
  u64: 8,
  i64: 8,
};

/** A shared segment (see the module doc). Obtain one with `dvk.shm(name, bytes)`. */
export class Segment {
  readonly name: string;
  readonly size: number;
  readonly pageSize: number;
  readonly home: number;

  constructor(
    private readonly caller: ServiceCaller,
    info: SegmentInfo,
    private readonly scope: ServiceScope = {},
  ) {
    this.name = info.name;
    this.size = info.size;
    this.pageSize = info.pageSize;
    this.home = info.home;
  }

  /** Read `length` bytes at `offset` (EFAULT if outside the segment). */
  async read(offset: number, length: number, opts?: CallOptions): Promise<Uint8Array> {
    this.check(offset, length);
    const r = await this.call('dsm.read', { offset, length }, opts);
    if (!(r instanceof Uint8Array)) throw new DvsError('EPROTO', 'dsm.read did not return bytes');
    return r;
  }

  /** Write `data` at `offset` (EFAULT if it does not fit: nothing is written). */
  async write(offset: number, data: Uint8Array | ArrayBufferView, opts?: CallOptions): Promise<void> {
    const bytes =
      data instanceof Uint8Array ? data : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    this.check(offset, bytes.length);
    await this.call('dsm.write', { offset, data: bytes }, opts);
  }

  /** Read one little-endian scalar. */
  async get(type: ScalarType, offset: number, opts?: CallOptions): Promise<number | bigint> {
    const b = await this.read(offset, SIZES[type], opts);
    return scalar(new DataView(b.buffer, b.byteOffset, b.byteLength), type);
  }

  /** Write one little-endian scalar (bigint for u64 / i64). */
  async set(type: ScalarType, offset: number, value: number | bigint, opts?: CallOptions): Promise<void> {
    const b = new Uint8Array(SIZES[type]);
    setScalar(new DataView(b.buffer), type, value);
    await this.write(offset, b, opts);
  }

  /** Read `count` elements of a typed array at `offset` (a typed view of the segment's bytes). */
  async readArray<C extends TypedArrayCtor>(
    ctor: C,
    offset: number,
    count: number,
    opts?: CallOptions,
  ): Promise<InstanceType<C>> {
    const b = await this.read(offset, count * ctor.BYTES_PER_ELEMENT, opts);
    // Copied into a fresh, aligned buffer: the received bytes may sit at any offset.
    return new ctor(b.slice().buffer) as InstanceType<C>;
  }

  /**
   * Take the segment's lock (FIFO; default name `default`). Held until unlock(), or until this process
   * exits or its node dies. Use it around read-modify-write and multi-page updates.
   */
  async lock(opts: SegmentLockOptions = {}): Promise<SegmentLock> {
    const lock = opts.lock ?? 'default';
    const ref = randomBytes(8).toString('hex');
    const r = (await this.call('dsm.lock', { lock, ref, ...timeoutParam(opts) }, stripTimeout(opts))) as {
      token: number;
    };
    return {
      token: r.token,
      unlock: (o?: CallOptions) => this.call('dsm.unlock', { lock, token: r.token }, o).then(() => undefined),
    };
  }

  /**
   * Locked read-modify-write of `length` bytes at `offset`: `fn` gets the current bytes and returns the new
   * ones (or changes them in place and returns nothing). Resolves with what was written.
   */
  async update(
    offset: number,
    length: number,
    fn: (current: Uint8Array) => Uint8Array | undefined | Promise<Uint8Array | undefined>,
    opts: SegmentLockOptions = {},
  ): Promise<Uint8Array> {
    this.check(offset, length);
    const l = await this.lock(opts);
    try {
      const cur = await this.read(offset, length, opts);
      const next = (await fn(cur)) ?? cur;
      if (next.length !== length) {
        throw new DvsError('EINVAL', `update: fn returned ${next.length} bytes, expected ${length}`);
      }
      await this.write(offset, next, opts);
      return next;
    } finally {
      await l.unlock().catch(() => undefined);
    }
  }

  /** Remove the segment for every process of the DC (its data is gone). */
  async unlink(opts?: CallOptions): Promise<void> {
    await this.call('dsm.unlink', {}, opts);
  }

  private call(method: string, params: Record<string, unknown>, opts?: CallOptions): Promise<unknown> {
    return this.caller.service(method, { ...this.scope, name: this.name, ...params }, opts);
  }

  /** The daemon checks too; checking here saves a round trip and gives the same error. */
  private check(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || length < 0) {
      throw new DvsError('EINVAL', `bad range: offset ${offset}, length ${length}`);
    }
    if (offset < 0 || offset + length > this.size) {
      throw new DvsError(
        'EFAULT',
        `segment '${this.name}' has ${this.size} bytes: [${offset}, ${offset + length}) is out of bounds`,
        { offset, length, size: this.size },
      );
    }
  }
}

/**
 * Open segment `name` of the caller's DC, creating it zeroed with `size` bytes if it does not exist (without
 * `size`: it must exist, else ENOENT; with another size than the existing one: EINVAL).
 */
export async function openSegment(
  caller: ServiceCaller,
  name: string,
  size: number | undefined,
  opts?: CallOptions,
  scope: ServiceScope = {},
): Promise<Segment> {
  const info = (await caller.service(
    'dsm.open',
    { ...scope, name, ...(size === undefined ? {} : { size }) },
    opts,
  )) as SegmentInfo;
  return new Segment(caller, info, scope);
}

function scalar(v: DataView, t: ScalarType): number | bigint {
  switch (t) {
    case 'u8':
      return v.getUint8(0);
    case 'i8':
      return v.getInt8(0);
    case 'u16':
      return v.getUint16(0, true);
    case 'i16':
      return v.getInt16(0, true);
    case 'u32':
      return v.getUint32(0, true);
    case 'i32':
      return v.getInt32(0, true);
    case 'f32':
      return v.getFloat32(0, true);
    case 'f64':
      return v.getFloat64(0, true);
    case 'u64':
      return v.getBigUint64(0, true);
    case 'i64':
      return v.getBigInt64(0, true);
  }
}

function setScalar(v: DataView, t: ScalarType, x: number | bigint): void {
  const n = () => {
    if (typeof x !== 'number') throw new DvsError('EINVAL', `${t} takes a number`);
    return x;
  };
  const b = () => {
    if (typeof x !== 'bigint') throw new DvsError('EINVAL', `${t} takes a bigint`);
    return x;
  };
  switch (t) {
    case 'u8':
      v.setUint8(0, n());
      return;
    case 'i8':
      v.setInt8(0, n());
      return;
    case 'u16':
      v.setUint16(0, n(), true);
      return;
    case 'i16':
      v.setInt16(0, n(), true);
      return;
    case 'u32':
      v.setUint32(0, n(), true);
      return;
    case 'i32':
      v.setInt32(0, n(), true);
      return;
    case 'f32':
      v.setFloat32(0, n(), true);
      return;
    case 'f64':
      v.setFloat64(0, n(), true);
      return;
    case 'u64':
      v.setBigUint64(0, b(), true);
      return;
    case 'i64':
      v.setBigInt64(0, b(), true);
      return;
  }
}

/** The lock wait goes to the daemon as `timeout` (it waits that long); the call itself gets a margin. */
function timeoutParam(o: CallOptions): { timeout?: number } {
  return o.timeout === undefined ? {} : { timeout: o.timeout };
}

function stripTimeout(o: CallOptions): CallOptions {
  return {
    ...(o.signal ? { signal: o.signal } : {}),
    ...(o.timeout !== undefined ? { timeout: o.timeout + 5_000 } : { timeout: 35_000 }),
  };
}
