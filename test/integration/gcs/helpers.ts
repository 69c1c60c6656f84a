/**
 * Helpers of the group integration tests: a member that reads its group in the background into a log, and
 * checks over those logs (agreed order, fifo, views).
 */
import type { Dvk, Group, GroupEvent, GroupView } from '../../../src/sdk/index.js';
import { check } from '../harness.js';

const dec = new TextDecoder();

/** A joined process that reads every delivery (or none: `reading: false`, a slow reader). */
export class Reader {
  readonly log: GroupEvent[] = [];
  error: unknown;
  private done: Promise<void> | undefined;

  constructor(
    readonly dvk: Dvk,
    readonly group: Group,
    reading = true,
  ) {
    if (reading) this.resume();
  }

  /** Start reading (again). */
  resume(): void {
    this.done ??= (async () => {
      try {
        for await (const ev of this.group) this.log.push(ev);
      } catch (e) {
        this.error = e;
      }
    })();
  }

  get views(): GroupView[] {
    return this.log.flatMap((e) => (e.kind === 'view' ? [e.view] : []));
  }

  get lastView(): GroupView | undefined {
    return this.views.at(-1);
  }

  /** Message payloads as text, in delivery order. */
  texts(filter?: (e: Extract<GroupEvent, { kind: 'message' }>) => boolean): string[] {
    return this.log.flatMap((e) =>
      e.kind === 'message' && (filter === undefined || filter(e)) ? [dec.decode(e.payload)] : [],
    );
  }

  /** Wait until the last view lists exactly `n` members (and satisfies `pred`). */
  async waitView(n: number, pred: (v: GroupView) => boolean = () => true, ms = 15_000): Promise<GroupView> {
    return check<GroupView | false>(
      () => {
        const v = this.lastView;
        return v !== undefined && v.members.length === n && pred(v) ? v : false;
      },
      ms,
      `a view of ${n} members at ${this.dvk.node}.${this.dvk.endpoint}`,
    ) as Promise<GroupView>;
  }

  async waitMessages(n: number, ms = 20_000): Promise<void> {
    await check(() => this.texts().length >= n, ms, `${n} messages at ${this.dvk.node}.${this.dvk.endpoint}`);
  }
}

/** `a` and `b` deliver their common messages in the same relative order. */
export function sameRelativeOrder(a: string[], b: string[]): boolean {
  const inB = new Set(b);
  const inA = new Set(a);
  const x = a.filter((m) => inB.has(m));
  const y = b.filter((m) => inA.has(m));
  return x.length === y.length && x.every((m, i) => m === y[i]);
}

/** Messages `prefix<k>` of each sender appear in increasing k. */
export function fifoHolds(texts: string[], senders: string[]): boolean {
  for (const s of senders) {
    const ks = texts.filter((t) => t.startsWith(`${s}:`)).map((t) => Number(t.split(':')[2]));
    for (let i = 1; i < ks.length; i++) if ((ks[i] as number) <= (ks[i - 1] as number)) return false;
  }
  return true;
}
