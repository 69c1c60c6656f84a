/**
 * Send-cycle detection (the prototype defined EDVSLOCKED and never used it).
 *
 * Every endpoint has at most one outgoing wait-for edge: "blocked sending to X" (`sendTo`) or "waiting for
 * a reply from X" (`replyFrom`). A send from `caller` that would block adds the edge caller -> dst; it closes
 * a cycle iff following the chain from dst reaches the caller.
 *
 * What this node can see: its local endpoints' edges; remote senders whose message is queued here (their
 * `sendTo` is the local destination); remote clients whose request a local server took (`replyFrom`); and
 * local endpoints blocked on a remote destination. That is enough to catch every cycle of length 2 across
 * two nodes at the node where it closes (and every purely local cycle). Longer cycles through endpoints of
 * several other nodes are NOT detected: they need a distributed probe (Chandy-Misra-Haas), left for later;
 * the callers' timeouts break them.
 */
import { type DcState, NONE } from './state.js';
import type { Endpoint } from './types.js';

/** True if the chain of wait-for edges starting at `from` reaches `target`. */
export function reachesCaller(dc: DcState, from: Endpoint, target: Endpoint): boolean {
  let cur = from;
  // Every endpoint has one outgoing edge, so a chain longer than the table is a cycle not through target.
  for (let steps = dc.eps.size; steps >= 0; steps--) {
    if (cur === target) return true;
    const e = dc.eps.get(cur);
    if (e === undefined) return false;
    const next = e.sendTo !== NONE ? e.sendTo : e.replyFrom;
    if (next === NONE) return false;
    cur = next;
  }
  return false;
}
