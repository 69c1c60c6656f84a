/**
 * Length-prefixed framing shared by both wire protocols (process <-> daemon and node <-> node).
 *
 * A stream is a sequence of frames; each frame is a little-endian u32 body length followed by the body:
 * ```
 *  0       4                      4 + length
 *  +-------+----------------------+-------+------ ...
 *  | len   | body (len bytes)     | len   | body
 *  | u32LE | first byte: a tag    | u32LE |
 *  +-------+----------------------+-------+------ ...
 * ```
 * `len` is never 0 (every body starts with a tag byte) and never above the decoder's `maxFrameBytes`.
 * A bad length means the stream is garbage or hostile: the decoder throws DvsError EPROTO and the owner
 * closes the connection (there is no way to resynchronise a length-prefixed stream).
 *
 * Encoding goes through {@link FrameWriter}, which appends many frames into one slab so a whole batch leaves
 * in one socket write.
 */
import { DvsError } from './errors.js';

/** Bytes of the length prefix. */
export const FRAME_HEADER_BYTES = 4;

/**
 * Default largest frame body: the largest payload a DC may configure (1 MiB, MAX_PAYLOAD_LIMIT in
 * src/kernel/types.ts) plus room for headers and control fields.
 */
export const DEFAULT_MAX_FRAME_BYTES = (1 << 20) + (64 << 10);

/** Options of a {@link FrameDecoder}. */
export interface FrameDecoderOptions {
  /** Largest accepted frame body, bytes (default {@link DEFAULT_MAX_FRAME_BYTES}). */
  maxFrameBytes?: number;
}

/**
 * Splits a byte stream, delivered in arbitrary chunks, into frame bodies.
 *
 * Frames that lie entirely inside one pushed chunk are returned as views of that chunk (no copy), so the
 * caller must not reuse a chunk's memory after pushing it (socket reads hand out fresh buffers). A frame
 * spanning chunks is assembled into a new buffer.
 *
 * @example
 * const dec = new FrameDecoder({ maxFrameBytes: 1 << 16 });
 * socket.on('data', (chunk) => { for (const f of dec.push(chunk)) handle(f); });
 */
export class FrameDecoder {
  readonly maxFrameBytes: number;
  /** Bytes of a partial length prefix (at most 3 of them). */
  private readonly lenBuf = new Uint8Array(4);
  private lenHave = 0;
  /** Frame being assembled across chunks, or null between frames. */
  private partial: Uint8Array | null = null;
  private partialHave = 0;

  constructor(opts: FrameDecoderOptions = {}) {
    const max = opts.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    if (!Number.isInteger(max) || max < 1 || max > 0xffffffff) {
      throw new DvsError('EINVAL', `bad maxFrameBytes ${max}`);
    }
    this.maxFrameBytes = max;
  }

  /** True when no partial frame is buffered (the stream ended on a frame boundary). */
  get idle(): boolean {
    return this.lenHave === 0 && this.partial === null;
  }

  /** Push a chunk; returns the frames it completed, in order. Throws EPROTO on a bad length. */
  push(chunk: Uint8Array): Uint8Array[] {
    const out: Uint8Array[] = [];
    this.feed(chunk, (f) => out.push(f));
    return out;
  }

  /**
   * Push a chunk and call `onFrame` for every frame it completes (no array allocated: the hot path).
   * Throws EPROTO on a bad length; frames before the bad one have been delivered.
   */
  feed(chunk: Uint8Array, onFrame: (frame: Uint8Array) => void): void {
    let pos = 0;
    const end = chunk.length;
    while (pos < end) {
      if (this.partial !== null) {
        const want = this.partial.length - this.partialHave;
        const n = Math.min(want, end - pos);
        this.partial.set(chunk.subarray(pos, pos + n), this.partialHave);
        this.partialHave += n;
        pos += n;
        if (this.partialHave === this.partial.length) {
          const f = this.partial;
          this.partial = null;
          this.partialHave = 0;
          onFrame(f);
        }
        continue;
      }
      let len: number;
      if (this.lenHave === 0 && end - pos >= 4) {
        // Fast path: the whole prefix is in this chunk.
        len =
          (chunk[pos]! | (chunk[pos + 1]! << 8) | (chunk[pos + 2]! << 16) | (chunk[pos + 3]! << 24)) >>> 0;
        pos += 4;
      } else {
        while (this.lenHave < 4 && pos < end) this.lenBuf[this.lenHave++] = chunk[pos++]!;
        if (this.lenHave < 4) return;
        const b = this.lenBuf;
        len = (b[0]! | (b[1]! << 8) | (b[2]! << 16) | (b[3]! << 24)) >>> 0;
        this.lenHave = 0;
      }
      if (len === 0 || len > this.maxFrameBytes) {
        throw new DvsError('EPROTO', `bad frame length ${len}`, { length: len, max: this.maxFrameBytes });
      }
      if (end - pos >= len) {
        const f = chunk.subarray(pos, pos + len);
        pos += len;
        onFrame(f);
      } else {
        this.partial = new Uint8Array(len);
        this.partialHave = 0;
      }
    }
  }

  /** Forget any partial frame (after the connection it belonged to closed). */
  reset(): void {
    this.lenHave = 0;
    this.partial = null;
    this.partialHave = 0;
  }
}

/** Options of a {@link FrameWriter}. */
export interface FrameWriterOptions {
  /** Size of each slab, bytes (default 64 KiB). Larger frames get a slab of their own. */
  slabBytes?: number;
  /** Largest frame body the writer accepts (default {@link DEFAULT_MAX_FRAME_BYTES}); larger ones throw EMSGSIZE. */
  maxFrameBytes?: number;
}

/**
 * Appends frames into a slab buffer; {@link take} hands out everything appended since the last take as one
 * Buffer (a view of the slab, never rewritten afterwards), ready for a single socket write.
 *
 * Encoders write bodies in place: `const o = w.begin(max)`, write at `w.buf[o...]`, then `w.end(used)`.
 *
 * @example
 * const w = new FrameWriter();
 * w.frame(a); w.frame(b);
 * socket.write(w.take()!);   // both frames, one write
 */
export class FrameWriter {
  private readonly slabBytes: number;
  readonly maxFrameBytes: number;
  private slab: Buffer;
  /** Start of the bytes not yet taken. */
  private start = 0;
  /** End of the bytes written. */
  private pos = 0;
  /** Offset of the length prefix of the frame begun and not yet ended, or -1. */
  private open = -1;
  private openMax = 0;
  private count = 0;

  constructor(opts: FrameWriterOptions = {}) {
    this.slabBytes = opts.slabBytes ?? 64 << 10;
    this.maxFrameBytes = opts.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    this.slab = Buffer.allocUnsafe(this.slabBytes);
  }

  /** The buffer bodies are written into (valid between begin() and end()). */
  get buf(): Buffer {
    return this.slab;
  }

  /** Bytes appended and not yet taken. */
  get length(): number {
    return this.pos - this.start;
  }

  /** Frames appended and not yet taken. */
  get frames(): number {
    return this.count;
  }

  /**
   * Begin a frame whose body takes at most `maxBody` bytes; returns the offset in {@link buf} where the
   * body starts. Must be followed by end() before the next begin()/frame()/take().
   */
  begin(maxBody: number): number {
    if (this.open !== -1) throw new DvsError('EINTERNAL', 'FrameWriter.begin inside an open frame');
    if (maxBody > this.maxFrameBytes) {
      throw new DvsError('EMSGSIZE', `frame of ${maxBody} bytes exceeds ${this.maxFrameBytes}`);
    }
    this.ensure(FRAME_HEADER_BYTES + maxBody);
    this.open = this.pos;
    this.openMax = maxBody;
    this.pos += FRAME_HEADER_BYTES;
    return this.pos;
  }

  /** End the open frame with its actual body size (1..maxBody given to begin()). */
  end(bodyBytes: number): void {
    const at = this.open;
    if (at === -1) throw new DvsError('EINTERNAL', 'FrameWriter.end without begin');
    this.open = -1;
    if (bodyBytes < 1 || bodyBytes > this.openMax) {
      this.pos = at;
      throw new DvsError('EINTERNAL', `frame body of ${bodyBytes} bytes outside 1..${this.openMax}`);
    }
    this.slab.writeUInt32LE(bodyBytes, at);
    this.pos = at + FRAME_HEADER_BYTES + bodyBytes;
    this.count++;
  }

  /** Abandon the open frame (its encoder failed); what was appended before stays. */
  abort(): void {
    if (this.open === -1) return;
    this.pos = this.open;
    this.open = -1;
  }

  /** Append one frame with body `body` (1..maxFrameBytes bytes). */
  frame(body: Uint8Array): void {
    if (body.length === 0) throw new DvsError('EINVAL', 'empty frame');
    const o = this.begin(body.length);
    this.slab.set(body, o);
    this.end(body.length);
  }

  /** Everything appended since the last take, as one Buffer, or undefined if nothing was. */
  take(): Buffer | undefined {
    if (this.open !== -1) throw new DvsError('EINTERNAL', 'FrameWriter.take inside an open frame');
    if (this.pos === this.start) return undefined;
    const out = this.slab.subarray(this.start, this.pos);
    this.start = this.pos;
    this.count = 0;
    return out;
  }

  /** Make room for `n` more bytes after the untaken ones, moving them into a new slab if needed. */
  private ensure(n: number): void {
    if (this.pos + n <= this.slab.length) return;
    const pending = this.pos - this.start;
    // Grow geometrically: a big batch appended frame by frame must not be copied once per frame.
    const size = Math.max(this.slabBytes, (pending + n) * 2);
    const next = Buffer.allocUnsafe(size);
    // The old slab may still be referenced by a taken Buffer in flight: copy, never reuse it.
    this.slab.copy(next, 0, this.start, this.pos);
    this.slab = next;
    this.start = 0;
    this.pos = pending;
  }
}

/** Encode frame bodies into one Buffer (convenience for tests and cold paths). */
export function encodeFrames(bodies: readonly Uint8Array[], opts?: FrameWriterOptions): Buffer {
  const w = new FrameWriter(opts);
  for (const b of bodies) w.frame(b);
  return w.take() ?? Buffer.alloc(0);
}
