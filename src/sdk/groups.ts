/**
 * Process groups (docs/gcs.md): `dvk.join(name)` makes this process a member of a group of its DC; the
 * returned {@link Group} multicasts in fifo / causal / agreed / safe order and is an async iterator of what
 * the group delivers: membership views and messages, under virtual synchrony.
 *
 * Flow control: the daemon counts every delivery against this member until the process has *read* it from
 * the iterator; the SDK reports what was read (`group.consumed`, batched). A member that stops reading is
 * expelled from all its groups once it is `maxBacklog` deliveries behind (the daemon's bound, default 1024):
 * the others get a view with reason `expel`, and this iterator ends with EEXPELLED.
 *
 * @example
 * const g = await dvk.join('chat');
 * await g.multicast('hello', { order: 'agreed' });
 * for await (const ev of g) {
 *   if (ev.kind === 'view') console.log('members', ev.view.members);
 *   else console.log(ev.sender, new TextDecoder().decode(ev.payload));
 * }
 */
import type { Member, Order, ViewId, ViewReason } from '../gcs/types.js';
import type { GroupEventWire } from '../node/gcs-wiring.js';
import { DvsError } from '../protocol/errors.js';
import type { CallOptions } from './client.js';
import type { ServiceCaller } from './services.js';

export type { Member, Order, ViewId, ViewReason } from '../gcs/types.js';

/** A membership view of a group: endpoints (of this DC) and their nodes. */
export interface GroupView {
  id: ViewId;
  group: string;
  members: Member[];
  reason: ViewReason;
}

/** What a group delivers. */
export type GroupEvent =
  | { kind: 'view'; view: GroupView }
  | {
      kind: 'message';
      sender: Member;
      order: Order;
      payload: Uint8Array;
      /** Position in the total order of the node configuration. */
      seq: number;
      /** The view it is delivered in. */
      view: ViewId;
      /** A safe message delivered while a view closes after a failure (see docs/gcs.md). */
      transitional?: true;
    };

/** Options of {@link joinGroup}. */
export interface JoinOptions extends CallOptions {}

/** Options of {@link Group.multicast}. */
export interface MulticastOptions extends CallOptions {
  /** Delivery order (default agreed). */
  order?: Order;
}

/** Deliveries read but not yet reported are sent back at this count (or when the reader catches up). */
const REPORT_EVERY = 64;

/** A joined group. Iterate it to read views and messages; leave() (or closing the connection) ends it. */
export class Group implements AsyncIterableIterator<GroupEvent> {
  readonly name: string;
  /** This member. */
  readonly self: Member;
  private readonly c: ServiceCaller;
  private readonly sub: number;
  private readonly queue: GroupEvent[] = [];
  private waiter: { resolve(r: IteratorResult<GroupEvent>): void; reject(e: unknown): void } | null = null;
  private ended: DvsError | 'done' | null = null;
  private unreported = 0;
  private lastView: GroupView | undefined;
  private firstView: (() => void) | null = null;

  /** @internal use {@link joinGroup}. */
  constructor(c: ServiceCaller, name: string, self: Member, sub: number) {
    this.c = c;
    this.name = name;
    this.self = self;
    this.sub = sub;
  }

  /** The latest view delivered (read or not). */
  get view(): GroupView | undefined {
    return this.lastView;
  }

  /** Multicast `msg` (bytes, or a string as UTF-8) to the group. Resolves once the daemon accepted it. */
  async multicast(msg: Uint8Array | string, opts: MulticastOptions = {}): Promise<void> {
    if (this.ended !== null) throw this.endError();
    const payload = typeof msg === 'string' ? new TextEncoder().encode(msg) : msg;
    const { order = 'agreed', ...call } = opts;
    await this.c.service('group.multicast', { name: this.name, order, payload }, call);
  }

  /** Leave the group: the others get a view with reason leave; the iterator ends. */
  async leave(opts?: CallOptions): Promise<void> {
    if (this.ended !== null) return;
    this.finish('done');
    await this.c.service('group.leave', { name: this.name }, opts);
  }

  next(): Promise<IteratorResult<GroupEvent>> {
    const ev = this.queue.shift();
    if (ev !== undefined) {
      this.read();
      return Promise.resolve({ value: ev, done: false });
    }
    if (this.ended === 'done') return Promise.resolve({ value: undefined, done: true });
    if (this.ended !== null) return Promise.reject(this.ended);
    if (this.waiter !== null) return Promise.reject(new DvsError('EBUSY', 'one reader at a time'));
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }

  /** `break` out of `for await` leaves the group. */
  async return(): Promise<IteratorResult<GroupEvent>> {
    await this.leave().catch(() => {});
    return { value: undefined, done: true };
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  /** @internal an EVENT frame of this group's subscription. */
  onEvent(data: unknown): void {
    if (this.ended !== null) return;
    const w = data as GroupEventWire;
    let ev: GroupEvent;
    if (w.t === 'expelled') {
      this.finish(new DvsError('EEXPELLED', `expelled from group ${this.name}: ${w.reason}`));
      return;
    }
    if (w.t === 'view') {
      ev = { kind: 'view', view: w.view };
      this.lastView = w.view;
      const f = this.firstView;
      this.firstView = null;
      f?.();
    } else {
      ev = {
        kind: 'message',
        sender: w.sender,
        order: w.order,
        payload: w.payload,
        seq: w.seq,
        view: w.view,
      };
      if (w.transitional) ev.transitional = true;
    }
    const wt = this.waiter;
    if (wt !== null) {
      this.waiter = null;
      this.read();
      wt.resolve({ value: ev, done: false });
    } else this.queue.push(ev);
  }

  /** @internal resolves at the first view (the join is ordered). */
  firstViewed(): Promise<void> {
    if (this.lastView !== undefined) return Promise.resolve();
    return new Promise((resolve) => {
      this.firstView = resolve;
    });
  }

  /** @internal the connection or the daemon ended this membership. */
  finish(why: DvsError | 'done'): void {
    if (this.ended !== null) return;
    this.ended = why;
    this.c.unsubscribe(this.sub);
    const w = this.waiter;
    this.waiter = null;
    if (w !== null) {
      if (why === 'done') w.resolve({ value: undefined, done: true });
      else w.reject(why);
    }
  }

  /** One delivery read by the application: report it (batched) so the daemon's backlog follows. */
  private read(): void {
    this.unreported++;
    if (this.unreported >= REPORT_EVERY || this.queue.length === 0) {
      const n = this.unreported;
      this.unreported = 0;
      this.c.service('group.consumed', { n }).catch(() => {});
    }
  }

  private endError(): DvsError {
    return this.ended instanceof DvsError ? this.ended : new DvsError('ENOENT', `left group ${this.name}`);
  }
}

/**
 * Join group `name` of the caller's DC. Resolves with the group once the join is ordered and the first view
 * (which contains this process) is delivered; that view is also the first event the iterator yields.
 * Errors: EINVAL (bad name), EPERM (another DC's group, or a reserved name), EEXIST (already a member).
 */
export async function joinGroup(c: ServiceCaller, name: string, opts: JoinOptions = {}): Promise<Group> {
  let group: Group | undefined;
  const early: unknown[] = [];
  const sub = c.subscribe((d) => {
    if (group) group.onEvent(d);
    else early.push(d);
  });
  let r: { name: string; member: Member };
  try {
    r = (await c.service('group.join', { name, sub }, opts)) as { name: string; member: Member };
  } catch (e) {
    c.unsubscribe(sub);
    throw e;
  }
  group = new Group(c, r.name, r.member, sub);
  for (const d of early) group.onEvent(d);
  const timeout = opts.timeout ?? 10_000;
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      group.firstViewed(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new DvsError('ETIMEDOUT', `no first view of group ${name}`)),
          timeout,
        );
        opts.signal?.addEventListener('abort', () => reject(new DvsError('EABORTED')), { once: true });
      }),
    ]);
  } catch (e) {
    await group.leave().catch(() => {});
    throw e;
  } finally {
    if (timer) clearTimeout(timer);
  }
  return group;
}
