/**
 * A linearizability checker: Wing & Gong's search, with Lowe's memoization of (linearized set, state) as in
 * Porcupine (Athalye, github.com/anishathalye/porcupine), and P-compositionality (a model may split a
 * history into independent parts, e.g. one per key, checked one by one).
 *
 * A history is a list of completed or pending operations, each with the client that issued it, its input,
 * its output (undefined when the outcome is unknown: the call failed ambiguously or never returned), and its
 * call and return times (return = Infinity when unknown). It is linearizable if some total order of the
 * operations (1) respects real time: an operation that returned before another was called comes first, and
 * (2) is a legal run of the sequential model, each operation producing its recorded output. An operation with
 * an unknown outcome may take effect at any point after its call, or never (equivalently: at the very end).
 *
 * The search (Lowe, "Testing for linearizability", 2017, §3): events are sorted by time (a call before a
 * return at the same instant: equal timestamps count as concurrent) into a doubly linked list. Walking it, a
 * call whose operation the model accepts from the current state is linearized: it and its return are lifted
 * out of the list, the choice is pushed on a stack, and the walk restarts from the head. Reaching a return
 * means the operation it closes cannot be put off any longer: backtrack (pop, unlift, try the next
 * alternative). A (set of linearized operations, state) pair already explored is skipped: that cache is what
 * makes the search practical. The history is linearizable when the list empties.
 */

/** One operation of a history. */
export interface Operation<I, O> {
  client: number | string;
  input: I;
  /** undefined: unknown outcome (ambiguous failure, or no reply). */
  output: O | undefined;
  /** When the call was made (any monotonic clock, same for all clients). */
  call: number;
  /** When it returned; Infinity if its outcome is unknown. */
  return: number;
}

/** A sequential specification. States must be treated as immutable. */
export interface Model<S, I, O> {
  init(): S;
  /**
   * The states `input` may lead to from `state` when it produced `output` (undefined = any output): none if
   * that output is impossible from `state`, several if the model is nondeterministic.
   */
  step(state: S, input: I, output: O | undefined, client: number | string): S[];
  /** A string that is equal for equal states (the memoization key). */
  key(state: S): string;
  /** Independent sub-histories (e.g. one per key of a map); default: the whole history. */
  partition?(history: Operation<I, O>[]): Operation<I, O>[][];
  /** For reports. */
  describe?(op: Operation<I, O>): string;
}

/** What {@link checkLinearizable} found. */
export interface CheckResult {
  /** 'unknown': the step budget ran out before a verdict. */
  outcome: 'ok' | 'illegal' | 'unknown';
  /** For 'illegal': which partition failed, and the longest linearizable prefix found in it. */
  partition?: number;
  longestPrefix?: string[];
  /** Search steps taken (all partitions). */
  steps: number;
}

interface Node<I, O> {
  /** Operation index (its bit in the linearized set). */
  id: number;
  isCall: boolean;
  op: Operation<I, O> | undefined;
  /** The call's return node. */
  match: Node<I, O> | undefined;
  prev: Node<I, O> | undefined;
  next: Node<I, O> | undefined;
}

/** Check `history` against `model`. `maxSteps` bounds the search (default 5 000 000). */
export function checkLinearizable<S, I, O>(
  model: Model<S, I, O>,
  history: Operation<I, O>[],
  opts: { maxSteps?: number } = {},
): CheckResult {
  for (const op of history) {
    if (!(op.call <= op.return)) throw new Error(`operation returns before its call: ${JSON.stringify(op)}`);
  }
  const parts = model.partition ? model.partition(history) : [history];
  let steps = 0;
  let unknown = false;
  for (let i = 0; i < parts.length; i++) {
    const r = checkPart(model, parts[i]!, (opts.maxSteps ?? 5_000_000) - steps);
    steps += r.steps;
    if (r.outcome === 'illegal') {
      return { outcome: 'illegal', partition: i, longestPrefix: r.longestPrefix ?? [], steps };
    }
    if (r.outcome === 'unknown') unknown = true;
  }
  return { outcome: unknown ? 'unknown' : 'ok', steps };
}

function checkPart<S, I, O>(model: Model<S, I, O>, ops: Operation<I, O>[], budget: number): CheckResult {
  // Events in time order; at equal times calls first (concurrent), then by operation for determinism.
  const events: { t: number; isCall: boolean; id: number }[] = [];
  ops.forEach((op, id) => {
    events.push({ t: op.call, isCall: true, id });
    events.push({ t: op.return, isCall: false, id });
  });
  events.sort((a, b) => a.t - b.t || (a.isCall === b.isCall ? a.id - b.id : a.isCall ? -1 : 1));

  const head: Node<I, O> = {
    id: -1,
    isCall: false,
    op: undefined,
    match: undefined,
    prev: undefined,
    next: undefined,
  };
  const calls: Node<I, O>[] = [];
  let tail = head;
  for (const ev of events) {
    const n: Node<I, O> = {
      id: ev.id,
      isCall: ev.isCall,
      op: ops[ev.id],
      match: undefined,
      prev: tail,
      next: undefined,
    };
    tail.next = n;
    tail = n;
    if (ev.isCall) calls[ev.id] = n;
    else calls[ev.id]!.match = n;
  }

  const lift = (e: Node<I, O>) => {
    e.prev!.next = e.next;
    if (e.next) e.next.prev = e.prev;
    const m = e.match!;
    m.prev!.next = m.next;
    if (m.next) m.next.prev = m.prev;
  };
  const unlift = (e: Node<I, O>) => {
    const m = e.match!;
    m.prev!.next = m;
    if (m.next) m.next.prev = m;
    e.prev!.next = e;
    if (e.next) e.next.prev = e;
  };

  const words = new Uint32Array(Math.ceil(ops.length / 32) || 1);
  const setBit = (i: number) => {
    words[i >>> 5]! |= 1 << (i & 31);
  };
  const clearBit = (i: number) => {
    words[i >>> 5]! &= ~(1 << (i & 31));
  };
  const cache = new Set<string>();
  const stack: { node: Node<I, O>; state: S; alt: number }[] = [];
  let best: Node<I, O>[] = [];

  let state = model.init();
  let entry = head.next;
  let alt = 0;
  let steps = 0;
  while (head.next !== undefined) {
    if (++steps > budget) return { outcome: 'unknown', steps };
    const e = entry!;
    if (e.isCall) {
      const op = e.op!;
      const nexts = model.step(state, op.input, op.output, op.client);
      let moved = false;
      for (let a = alt; a < nexts.length; a++) {
        const s2 = nexts[a]!;
        setBit(e.id);
        const k = `${words.join(',')}|${model.key(s2)}`;
        if (!cache.has(k)) {
          cache.add(k);
          stack.push({ node: e, state, alt: a });
          state = s2;
          lift(e);
          entry = head.next;
          alt = 0;
          moved = true;
          if (stack.length > best.length) best = stack.map((x) => x.node);
          break;
        }
        clearBit(e.id);
      }
      if (!moved) {
        entry = e.next;
        alt = 0;
      }
    } else {
      // A return reached: the operation it closes had to be linearized before this point. Backtrack.
      const top = stack.pop();
      if (top === undefined) {
        return {
          outcome: 'illegal',
          longestPrefix: best.map((n) => describe(model, n.op!)),
          steps,
        };
      }
      state = top.state;
      clearBit(top.node.id);
      unlift(top.node);
      entry = top.node;
      alt = top.alt + 1;
    }
  }
  return { outcome: 'ok', steps };
}

function describe<S, I, O>(model: Model<S, I, O>, op: Operation<I, O>): string {
  if (model.describe) return model.describe(op);
  return `${String(op.client)}: ${JSON.stringify(op.input)} -> ${op.output === undefined ? '?' : JSON.stringify(op.output)} [${op.call}, ${op.return}]`;
}

/**
 * Brute force, for testing the checker itself on small histories: every order consistent with real time,
 * every nondeterministic branch. Exponential; keep histories under ~8 operations.
 */
export function bruteForceLinearizable<S, I, O>(model: Model<S, I, O>, history: Operation<I, O>[]): boolean {
  const n = history.length;
  const done = new Array<boolean>(n).fill(false);
  const go = (state: S, count: number): boolean => {
    if (count === n) return true;
    for (let i = 0; i < n; i++) {
      if (done[i]) continue;
      const op = history[i]!;
      // i can go next only if no other pending operation returned before i was called.
      let minimal = true;
      for (let j = 0; j < n; j++) {
        if (j !== i && !done[j] && history[j]!.return < op.call) {
          minimal = false;
          break;
        }
      }
      if (!minimal) continue;
      for (const s2 of model.step(state, op.input, op.output, op.client)) {
        done[i] = true;
        const ok = go(s2, count + 1);
        done[i] = false;
        if (ok) return true;
      }
    }
    return false;
  };
  return go(model.init(), 0);
}

// ------------------------------------------------------------------------------------------------ models

/** Input of the key/value map model. Values are strings (tests encode bytes); null = absent. */
export type KvInput =
  | { op: 'get'; key: string }
  | { op: 'put'; key: string; value: string }
  | { op: 'delete'; key: string }
  /** Compare the value (null = must be absent), then write `value` (null = delete). */
  | { op: 'cas'; key: string; expect: string | null; value: string | null };

/** Output of the key/value map model (per op: get → value, delete → deleted, cas → succeeded, put → {}). */
export interface KvOutput {
  value?: string | null;
  deleted?: boolean;
  succeeded?: boolean;
}

/**
 * A map of registers, one per key, partitioned by key (operations on different keys commute, so each key's
 * sub-history is checked alone: P-compositionality). The state of a partition is its key's value.
 */
export const kvModel: Model<string | null, KvInput, KvOutput> = {
  init: () => null,
  step(s, input, out) {
    switch (input.op) {
      case 'get':
        return out === undefined || out.value === s ? [s] : [];
      case 'put':
        return [input.value];
      case 'delete':
        return out?.deleted === undefined || out.deleted === (s !== null) ? [null] : [];
      case 'cas': {
        const match = s === input.expect;
        if (out?.succeeded !== undefined && out.succeeded !== match) return [];
        return [match ? input.value : s];
      }
    }
  },
  key: (s) => (s === null ? '\u0000' : `=${s}`),
  partition(history) {
    const byKey = new Map<string, Operation<KvInput, KvOutput>[]>();
    for (const op of history) {
      const list = byKey.get(op.input.key);
      if (list === undefined) byKey.set(op.input.key, [op]);
      else list.push(op);
    }
    return [...byKey.values()];
  },
  describe: (op) =>
    `c${String(op.client)} ${op.input.op}(${op.input.key}${'value' in op.input ? `, ${String(op.input.value)}` : ''}${
      op.input.op === 'cas' ? ` if ${String(op.input.expect)}` : ''
    }) -> ${op.output === undefined ? '?' : JSON.stringify(op.output)} [${op.call}, ${op.return}]`,
};

/** Input of the lock model; the client is the operation's client. */
export type LockInput =
  | { op: 'acquire' }
  | { op: 'release'; token: number }
  /** Is `token` the current holder's? (checkFence) */
  | { op: 'check'; token: number }
  /** The holder with `token` lost the lock without releasing (the test revoked its lease). */
  | { op: 'expire'; token: number };

/** Output of the lock model: acquire → token; release/check → ok (false = ENOTOWNER / ESTALE). */
export interface LockOutput {
  token?: number;
  ok?: boolean;
}

/** State of the lock model: who holds it with which token, and the highest token ever handed out. */
export interface LockState {
  holder: number | string | null;
  token: number;
  last: number;
}

/**
 * A mutual-exclusion lock with fencing tokens: one holder at a time, every acquire gets a token higher than
 * any before, release succeeds only for the holder's token, check succeeds only for the holder's token.
 * An acquire with an unknown outcome is taken as not acquired: the service's acquire that fails (timeout,
 * abort) leaves the queue, so at most it held the lock for an instant inside its own interval.
 */
export const lockModel: Model<LockState, LockInput, LockOutput> = {
  init: () => ({ holder: null, token: 0, last: 0 }),
  step(s, input, out, client) {
    const free: LockState = { holder: null, token: 0, last: s.last };
    switch (input.op) {
      case 'acquire': {
        if (out?.token === undefined) return [s];
        if (s.holder !== null || !(out.token > s.last)) return [];
        return [{ holder: client, token: out.token, last: out.token }];
      }
      case 'release': {
        const held = s.holder === client && s.token === input.token;
        if (out?.ok === undefined) return held ? [free, s] : [s];
        if (out.ok !== held) return [];
        return [held ? free : s];
      }
      case 'check': {
        const current = s.holder !== null && s.token === input.token;
        return out?.ok === undefined || out.ok === current ? [s] : [];
      }
      case 'expire':
        return s.holder !== null && s.token === input.token ? [free] : [s];
    }
  },
  key: (s) => `${String(s.holder)}|${s.token}|${s.last}`,
};

/** A history recorder for tests: `record(client, input, fn)` times the call and keeps its outcome. */
export class HistoryRecorder<I, O> {
  readonly ops: Operation<I, O>[] = [];
  private readonly t0 = performance.now();

  now(): number {
    return performance.now() - this.t0;
  }

  /**
   * Run `fn`, record the operation with `toOutput(result)`. If `fn` throws, `onError(e)` decides: an output
   * (a definite failure, e.g. ENOTOWNER → {ok: false}), 'unknown' (recorded with unknown outcome), or
   * 'drop' (the operation certainly had no effect and is left out); the error is rethrown either way.
   */
  async record<R>(
    client: number | string,
    input: I,
    fn: () => Promise<R>,
    toOutput: (r: R) => O,
    onError: (e: unknown) => O | 'unknown' | 'drop' = () => 'unknown',
  ): Promise<R> {
    const call = this.now();
    try {
      const r = await fn();
      this.ops.push({ client, input, output: toOutput(r), call, return: this.now() });
      return r;
    } catch (e) {
      const o = onError(e);
      if (o === 'unknown') this.ops.push({ client, input, output: undefined, call, return: Infinity });
      else if (o !== 'drop') this.ops.push({ client, input, output: o, call, return: this.now() });
      throw e;
    }
  }
}
