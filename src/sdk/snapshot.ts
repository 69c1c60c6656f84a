/**
 * The process side of distributed snapshots (Chandy–Lamport; docs/snapshots.md): the SDK records this
 * process's state through the application's {@link SnapshotHooks}, posts a marker to every other
 * participant, and records the messages it hands to the application on each incoming channel until that
 * channel's marker arrives. Markers never reach the application.
 *
 * A marker is a post of type {@link SNAPSHOT_MARKER_TYPE} whose payload is (little-endian):
 * ```
 *   0        1        2                 4                                8
 *   +--------+--------+-----------------+--------------------------------+
 *   | ver=1  | flags=0| count (u16)     | run (u32)                      |
 *   +--------+--------+-----------------+--------------------------------+
 *   | participant endpoint (u32) × count ...                             |
 *   +--------------------------------------------------------------------+
 * ```
 * It carries the participants so that a process whose first news of a snapshot is a peer's marker (the
 * daemon's push to it may come later) records its state and sends its own markers at once, as the algorithm
 * requires.
 */
import type { Endpoint, Received } from '../kernel/types.js';
import { DvsError } from '../protocol/errors.js';

/** Message type of a snapshot marker (a post; the SDK consumes it). Applications must not use it. */
export const SNAPSHOT_MARKER_TYPE = -0x534e4150;

const MARKER_VERSION = 1;
const MARKER_HEADER = 8;

/** What a marker says: which snapshot run, and who takes part in it. */
export interface Marker {
  run: number;
  participants: Endpoint[];
}

/** Encode a marker's payload (see the module header for the layout). */
export function encodeMarker(m: Marker): Uint8Array {
  if (m.participants.length > 0xffff) throw new DvsError('EMSGSIZE', 'too many snapshot participants');
  const b = new Uint8Array(MARKER_HEADER + 4 * m.participants.length);
  const v = new DataView(b.buffer);
  v.setUint8(0, MARKER_VERSION);
  v.setUint8(1, 0);
  v.setUint16(2, m.participants.length, true);
  v.setUint32(4, m.run >>> 0, true);
  m.participants.forEach((ep, i) => {
    v.setUint32(MARKER_HEADER + 4 * i, ep, true);
  });
  return b;
}

/** Decode a marker's payload; EPROTO if it is not one. */
export function decodeMarker(payload: Uint8Array): Marker {
  const v = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  if (payload.length < MARKER_HEADER || v.getUint8(0) !== MARKER_VERSION)
    throw new DvsError('EPROTO', 'bad snapshot marker');
  const count = v.getUint16(2, true);
  if (payload.length !== MARKER_HEADER + 4 * count)
    throw new DvsError('EPROTO', 'bad snapshot marker length');
  const participants: Endpoint[] = [];
  for (let i = 0; i < count; i++) participants.push(v.getUint32(MARKER_HEADER + 4 * i, true));
  return { run: v.getUint32(4, true), participants };
}

/** Is `m` a snapshot marker (a post of the reserved type)? */
export function isMarker(m: Received): boolean {
  return m.kind === 'post' && m.type === SNAPSHOT_MARKER_TYPE;
}

/**
 * How a process takes part in snapshots of its DC (see {@link Dvk.onSnapshot}).
 *
 * `save()` is called synchronously while the application waits in an SDK call, or right after it hands the
 * SDK its next message or starts its next receive. A message handed over counts as sent before the cut, so
 * update the state first (`held--; await dvk.send(...)`), never after the call returns. `load()` runs in a
 * process started again from a snapshot (restore, fork) before onSnapshot resolves.
 */
export interface SnapshotHooks {
  save(): Uint8Array;
  load?(state: Uint8Array): void | Promise<void>;
}

/** What a restored process gets back from the daemon. */
export interface RestoredState {
  state: Uint8Array | null;
  /** Messages in flight towards this process at the cut, per source in order (delivered before any other). */
  channels: Received[];
}

/** The slice of the SDK client an agent needs. */
export interface SnapshotHost {
  readonly endpoint: Endpoint;
  post(dst: Endpoint, msg: { type: number; payload: Uint8Array }): Promise<void>;
  service(method: string, params: Record<string, unknown>): Promise<unknown>;
  /** True while the application waits in an SDK call (its state is then consistent by contract). */
  busy(): boolean;
}

/** A run this process recorded its state for and whose channels are still open. */
interface Recording {
  run: number;
  state: Uint8Array;
  /** Participants whose marker has not arrived yet: messages from them are in flight at the cut. */
  waiting: Set<Endpoint>;
  channels: Map<Endpoint, Received[]>;
}

/** Runs remembered as finished, so that a late marker of one is dropped rather than starting it again. */
const FINISHED_KEEP = 64;

/** @internal the per-process snapshot state machine, driven by the client's receive paths and daemon pushes. */
export class SnapshotAgent {
  /** Runs announced by the daemon, to record at the next SDK call (the application was not in one). */
  private readonly armed = new Map<number, Endpoint[]>();
  private readonly runs = new Map<number, Recording>();
  private readonly finished: number[] = [];

  constructor(
    private readonly host: SnapshotHost,
    private readonly hooks: SnapshotHooks,
  ) {}

  /** True when a run waits for the application's next SDK call to record the state. */
  get pending(): boolean {
    return this.armed.size > 0;
  }

  /** A push of the daemon: `{op: 'begin', run, participants}` or `{op: 'abort', run}`. */
  command(d: unknown): void {
    const c = (d ?? {}) as { op?: unknown; run?: unknown; participants?: unknown };
    if (typeof c.run !== 'number') return;
    const run = c.run;
    if (c.op === 'abort') {
      this.armed.delete(run);
      if (this.runs.delete(run)) this.finish(run);
      return;
    }
    if (c.op !== 'begin' || !Array.isArray(c.participants)) return;
    if (this.runs.has(run) || this.finished.includes(run) || this.armed.has(run)) return;
    this.armed.set(run, c.participants as Endpoint[]);
    // After the current turn's microtasks: a receive that completed in the same socket read has then been
    // taken into the application's state. If the application is waiting in the SDK, record now; otherwise
    // just before its next call.
    setImmediate(() => {
      if (this.host.busy()) this.fire();
    });
  }

  /** Record every armed run now (the application is in, or entering, an SDK call). */
  fire(): void {
    if (this.armed.size === 0) return;
    const armed = [...this.armed];
    this.armed.clear();
    for (const [run, participants] of armed) this.record(run, participants);
  }

  /**
   * A message about to be handed to the application. True if it was a marker (consumed here); otherwise
   * it is recorded on its channel if that channel is open in a run.
   */
  filter(m: Received): boolean {
    if (isMarker(m)) {
      this.marker(m);
      return true;
    }
    for (const r of this.runs.values()) {
      if (!r.waiting.has(m.source)) continue;
      let ch = r.channels.get(m.source);
      if (ch === undefined) {
        ch = [];
        r.channels.set(m.source, ch);
      }
      ch.push({ ...m, payload: m.payload.slice() });
    }
    return false;
  }

  private marker(m: Received): void {
    let mk: Marker;
    try {
      mk = decodeMarker(m.payload);
    } catch {
      return;
    }
    if (this.finished.includes(mk.run)) return;
    if (!this.runs.has(mk.run)) {
      // First news of the run: record now (we are inside a receive), the channel from the sender is empty.
      this.armed.delete(mk.run);
      this.record(mk.run, mk.participants);
    }
    const r = this.runs.get(mk.run);
    if (r === undefined) return;
    r.waiting.delete(m.source);
    if (r.waiting.size === 0) this.complete(r);
  }

  private record(run: number, participants: Endpoint[]): void {
    let state: Uint8Array;
    try {
      state = this.hooks.save();
      if (!(state instanceof Uint8Array))
        throw new DvsError('EINVAL', 'onSnapshot save() must return a Uint8Array');
    } catch (e) {
      this.finish(run);
      void this.host
        .service('snapshot.report', { run, error: DvsError.from(e).toWire() })
        .catch(() => undefined);
      return;
    }
    const others = participants.filter((p) => p !== this.host.endpoint);
    const r: Recording = { run, state: state.slice(), waiting: new Set(others), channels: new Map() };
    this.runs.set(run, r);
    // Markers leave before anything the application sends after this point: post() keeps per-pair order,
    // and a later send waits for posts still queued for credit.
    const payload = encodeMarker({ run, participants });
    for (const p of others) {
      this.host.post(p, { type: SNAPSHOT_MARKER_TYPE, payload }).catch((e: unknown) => {
        if (this.runs.delete(run)) {
          this.finish(run);
          void this.host
            .service('snapshot.report', { run, error: DvsError.from(e).toWire() })
            .catch(() => undefined);
        }
      });
    }
    if (r.waiting.size === 0) this.complete(r);
  }

  private complete(r: Recording): void {
    this.runs.delete(r.run);
    this.finish(r.run);
    const channels = [...r.channels].map(([src, msgs]) => ({ src, msgs }));
    void this.host
      .service('snapshot.report', { run: r.run, state: r.state, channels })
      .catch(() => undefined);
  }

  private finish(run: number): void {
    this.finished.push(run);
    if (this.finished.length > FINISHED_KEEP) this.finished.shift();
  }
}
