// An echo client: sends its arguments to the echo server and prints the reply and the round trip time.
// Run it in a DC:  dvs run --dc web --ep 200 --wait -- node examples/echo-client.js 100 hello world
import { connect } from 'dvs';

const [server = '100', ...words] = process.argv.slice(2);
const dvk = await connect();
const text = words.join(' ') || 'hello';
const t0 = process.hrtime.bigint();
const reply = await dvk.sendrec(
  Number(server),
  { type: 1, payload: new TextEncoder().encode(text) },
  { timeout: 5000 },
);
const us = Number(process.hrtime.bigint() - t0) / 1000;
console.log(`reply from ${reply.source}: ${new TextDecoder().decode(reply.payload)} (${us.toFixed(0)} µs)`);
await dvk.close();
