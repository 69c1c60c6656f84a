// A counter replicated as a state machine: every replica applies every request in the same total order
// (GCS agreed delivery), the client gets one reply, and a replica that crashed is replaced by one that
// first receives a state transfer. Run it in a DC of 3 (or more) nodes:
//   dvs run --dc app --ep 100 --replicas 3 --mode state-machine -- node examples/smr-counter.js
//   dvs ep ls --dc app          # one `replica` row per node
// Clients use sendrecOnce (a request id in front of the payload) so a request replayed after its contact
// replica died is applied exactly once. Request type 1 adds the payload's first byte (default 1) and
// answers the new value (f64 LE); type 2 reads it.
import { connect } from 'dvs';

const dvk = await connect(); // DVS_SOCKET, DVS_DC, DVS_ENDPOINT, DVS_REPLICA_ROLE=replica from `dvs run`
let counter = 0;
const encode = (n) => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setFloat64(0, n, true);
  return b;
};
const sm = await dvk.onStateMachine({
  apply(req) {
    if (req.type === 1) counter += req.payload.length > 0 ? req.payload[0] : 1;
    return { type: 1, payload: encode(counter) };
  },
  snapshot: () => encode(counter),
  restore(state) {
    counter = new DataView(state.buffer, state.byteOffset, 8).getFloat64(0, true);
    console.log(`replica on node ${dvk.node}: state transferred, counter at ${counter}`);
  },
});
console.log(`state-machine replica of endpoint ${dvk.endpoint} on node ${dvk.node}`);
await sm.serve();
