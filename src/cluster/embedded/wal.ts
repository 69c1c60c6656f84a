/**
 * On-disk format of the embedded store: checksummed records in log segments, and snapshots.
 *
 *   segment  wal-<first seq, 16 hex>.log   = MAGIC "DVSWAL01" (8 bytes) record*
 *   snapshot snap-<seq, 16 hex>.snap       = MAGIC "DVSSNAP1" (8 bytes) record   (exactly one)
 *   record                                 = u32le length | u32le crc32(payload) | payload (MessagePack)
 *
 * Replay is torn-tail tolerant: in the last segment, a record that runs past the end of the file, or a bad
 * record followed only by zero bytes or nothing, is what a crash in the middle of a write leaves, and is
 * dropped (the caller truncates it away). Anything else that does not check out is corruption and an error
 * naming the file and the offset: silently skipping a record in the middle would lose acknowledged writes.
 */
import { open, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { pack, unpack } from 'msgpackr';
import { DvsError } from '../../protocol/errors.js';

export const WAL_MAGIC = Buffer.from('DVSWAL01');
export const SNAP_MAGIC = Buffer.from('DVSSNAP1');
const HEADER = 8;
/** A record larger than this is corruption, not data (keeps a bad length from allocating gigabytes). */
export const MAX_RECORD_BYTES = 64 * 1024 * 1024;

/** One mutation of a transaction: a put (value set) or a delete (value null). */
export type Mutation = [key: string, value: Uint8Array | null, lease: string | undefined];

/** A log record: one write transaction, lease grant or lease end, in commit order. */
export interface WalRecord {
  seq: number;
  /** Revision the record created, 0 if it did not bump the revision (lease grant, revoke of a bare lease). */
  rev: number;
  muts: Mutation[];
  /** Lease granted: [id, ttl seconds]. */
  grant?: [string, number];
  /** Lease ended (revoked or expired); its keys' deletions are in `muts`. */
  revoke?: string;
}

/** The whole state at `seq`: what a snapshot file holds. */
export interface SnapshotData {
  seq: number;
  rev: number;
  nextLease: number;
  /** [key, value, createRevision, modRevision, version, lease]. */
  kvs: [string, Uint8Array, number, number, number, string | undefined][];
  /** [id, ttl seconds]. */
  leases: [string, number][];
}

/** Encode one record frame (length, checksum, payload). */
export function encodeRecord(body: unknown): Buffer {
  const payload = pack(body);
  const out = Buffer.allocUnsafe(8 + payload.length);
  out.writeUInt32LE(payload.length, 0);
  out.writeUInt32LE(crc32(payload), 4);
  payload.copy(out, 8);
  return out;
}

export const segmentName = (firstSeq: number): string => `wal-${firstSeq.toString(16).padStart(16, '0')}.log`;
export const snapshotName = (seq: number): string => `snap-${seq.toString(16).padStart(16, '0')}.snap`;

/** Files of a store directory, each list sorted by sequence number. */
export async function listFiles(
  dir: string,
): Promise<{ segments: { name: string; seq: number }[]; snapshots: { name: string; seq: number }[] }> {
  const segments: { name: string; seq: number }[] = [];
  const snapshots: { name: string; seq: number }[] = [];
  for (const name of await readdir(dir)) {
    const m = /^(wal|snap)-([0-9a-f]{16})\.(log|snap)$/.exec(name);
    if (!m) continue;
    const seq = Number.parseInt(m[2]!, 16);
    (m[1] === 'wal' ? segments : snapshots).push({ name, seq });
  }
  segments.sort((a, b) => a.seq - b.seq);
  snapshots.sort((a, b) => a.seq - b.seq);
  return { segments, snapshots };
}

/** The result of scanning one segment. */
export interface SegmentScan {
  records: WalRecord[];
  /** Length of the valid prefix of the file (where a torn tail starts). */
  goodLength: number;
  /** Bytes dropped as a torn tail (0 if the file ended cleanly). */
  tornBytes: number;
}

function corrupt(file: string, offset: number, why: string): DvsError {
  return new DvsError('EINTERNAL', `cluster store: corrupt record in ${file} at offset ${offset}: ${why}`, {
    file,
    offset,
  });
}

function allZero(buf: Buffer, from: number): boolean {
  for (let i = from; i < buf.length; i++) if (buf[i] !== 0) return false;
  return true;
}

/**
 * Parse a segment. `last` says whether it is the newest segment, the only one allowed a torn tail.
 */
export function scanSegment(file: string, buf: Buffer, last: boolean): SegmentScan {
  const torn = (offset: number, why: string): SegmentScan => {
    if (!last) throw corrupt(file, offset, `${why} (not the last segment)`);
    return { records, goodLength: offset, tornBytes: buf.length - offset };
  };
  const records: WalRecord[] = [];
  if (buf.length < HEADER) return torn(0, 'short header');
  if (!buf.subarray(0, HEADER).equals(WAL_MAGIC)) throw corrupt(file, 0, 'bad magic');
  let off = HEADER;
  while (off < buf.length) {
    if (off + 8 > buf.length) return torn(off, 'truncated record header');
    const len = buf.readUInt32LE(off);
    const sum = buf.readUInt32LE(off + 4);
    const end = off + 8 + len;
    if (len === 0 || len > MAX_RECORD_BYTES) {
      if (allZero(buf, off)) return torn(off, 'zero-filled tail');
      throw corrupt(file, off, `bad length ${len}`);
    }
    if (end > buf.length) return torn(off, 'truncated record');
    const payload = buf.subarray(off + 8, end);
    if (crc32(payload) !== sum) {
      // A bad record with nothing after it is a torn write; with valid data after it, it is corruption.
      if (end === buf.length || allZero(buf, end)) return torn(off, 'checksum mismatch at the tail');
      throw corrupt(file, off, 'checksum mismatch');
    }
    let rec: WalRecord;
    try {
      rec = unpack(payload) as WalRecord;
    } catch (e) {
      throw corrupt(file, off, `undecodable payload: ${(e as Error).message}`);
    }
    if (typeof rec?.seq !== 'number' || !Array.isArray(rec.muts))
      throw corrupt(file, off, 'malformed record');
    records.push(rec);
    off = end;
  }
  return { records, goodLength: off, tornBytes: 0 };
}

/** Read and verify a snapshot file. A bad snapshot is always an error (it was fsynced before its rename). */
export async function readSnapshot(dir: string, name: string): Promise<SnapshotData> {
  const file = join(dir, name);
  const buf = await readFile(file);
  if (buf.length < HEADER + 8 || !buf.subarray(0, HEADER).equals(SNAP_MAGIC)) {
    throw corrupt(file, 0, 'bad snapshot header');
  }
  const len = buf.readUInt32LE(HEADER);
  const sum = buf.readUInt32LE(HEADER + 4);
  const payload = buf.subarray(HEADER + 8);
  if (payload.length !== len || crc32(payload) !== sum) throw corrupt(file, HEADER, 'snapshot checksum');
  return unpack(payload) as SnapshotData;
}

/** fsync a directory, so that file creations, renames and deletions in it are durable. */
export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
