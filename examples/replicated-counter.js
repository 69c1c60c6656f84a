// A counter replicated primary-backup: every request gets the next value, and the counter survives the
// death of the primary's process or node (the lowest live backup takes over; clients only see a pause).
// Run it in a DC of 3 nodes:  dvs run --dc app --ep 100 --replicas 3 --mode primary-backup -- node examples/replicated-counter.js
// Clients use sendrecOnce (a request id in front of the payload) so a request in flight at the crash is
// counted exactly once.
import { connect } from 'dvs';

const dvk = await connect(); // DVS_SOCKET, DVS_DC, DVS_ENDPOINT (and DVS_REPLICA_*) are set by `dvs run`
let counter = 0;
const encode = (n) => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setFloat64(0, n, true);
  return b;
};
const rep = await dvk.onReplica({
  apply: (state) => {
    counter = new DataView(state.buffer, state.byteOffset, 8).getFloat64(0, true);
  },
  promoted: () => console.log(`promoted to primary on node ${dvk.node} at ${counter}`),
});
console.log(`replicated counter at endpoint ${dvk.endpoint} on node ${dvk.node}: ${rep.role}`);
// serve() waits until this process is the primary, then: count, ship the state (and the reply cache) to
// every live backup, reply.
await rep.serve(() => {
  counter++;
  const b = encode(counter);
  return { reply: { type: 1, payload: b }, state: b };
});
