// A server with a state of N bytes (argv[2]) that moves with it: the program `npm run bench` migrates back
// and forth to measure the freeze time against the state's size. Answers requests with its state's length.
import { connect } from 'dvs';

const bytes = Number(process.argv[2] ?? 1024);
const dvk = await connect();
let state = new Uint8Array(bytes).fill(7);
await dvk.onMigrate({
  export: () => state,
  import: (s) => {
    state = s;
  },
});
const reply = new Uint8Array(4);
let req = await dvk.receiveRequest();
for (;;) {
  new DataView(reply.buffer).setUint32(0, state.length, true);
  req = await dvk.replyReceive(req.source, { type: 1, payload: reply });
}
