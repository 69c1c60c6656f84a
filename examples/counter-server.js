// A counter server that survives live migration: every request gets the next value of the counter, and the
// counter moves with the endpoint (`dvs migrate --dc app --ep 100 --to 1`).
// Run it in a DC:  dvs run --dc app --ep 100 -- node examples/counter-server.js
import { connect } from 'dvs';

const dvk = await connect(); // DVS_SOCKET, DVS_DC and DVS_ENDPOINT are set by `dvs run`
let counter = 0;
// export() runs at the source once the server is between requests; import() at the destination, before
// onMigrate resolves there. The state here is the counter as 8 bytes.
const { migrated } = await dvk.onMigrate({
  export: () => {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setFloat64(0, counter, true);
    return b;
  },
  import: (state) => {
    counter = new DataView(state.buffer, state.byteOffset, 8).getFloat64(0, true);
  },
});
console.log(
  `counter server at endpoint ${dvk.endpoint} on node ${dvk.node}${migrated ? `, migrated in at ${counter}` : ''}`,
);
const reply = new Uint8Array(8);
const view = new DataView(reply.buffer);
let req = await dvk.receiveRequest();
for (;;) {
  counter++;
  view.setFloat64(0, counter, true);
  req = await dvk.replyReceive(req.source, { type: 1, payload: reply });
}
