// An echo server: answers every request with the same payload, upper-cased, until it is killed.
// Run it in a DC:  dvs run --dc web --ep 100 -- node examples/echo-server.js
import { connect } from 'dvs';

const dvk = await connect(); // DVS_SOCKET, DVS_DC and DVS_ENDPOINT are set by `dvs run`
console.log(`echo server bound at endpoint ${dvk.endpoint} of DC ${dvk.dcName} on node ${dvk.node}`);
const decoder = new TextDecoder();
const encoder = new TextEncoder();
// replyReceive answers one request and waits for the next in a single round trip to the daemon.
let req = await dvk.receiveRequest();
for (;;) {
  const text = decoder.decode(req.payload);
  console.log(`request from ${req.source}: ${text}`);
  req = await dvk.replyReceive(req.source, { type: req.type, payload: encoder.encode(text.toUpperCase()) });
}
