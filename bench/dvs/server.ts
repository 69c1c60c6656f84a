/**
 * The passive end of a dvs case, bound with the SDK on one node of the bench cluster.
 *
 * - `--role sendrec`: receiveRequest, then replyReceive with the same payload, forever.
 * - `--role post`: counts posted messages; a START (payload u32 LE n) opens a run, after n DATA messages it
 *   sends DONE to the poster, which stops its clock there.
 * - `--role vcopy`: grants a 1 MiB buffer (rw) and answers every request with the grant id (u32 LE).
 *
 * `--socket S --dc NAME --ep N`.
 */
import { ANY, connect, type Received } from '../../src/sdk/index.js';
import { arg, args, exitWithStdin, ready } from '../lib/worker.js';
import { T_DATA, T_DONE, T_START, VCOPY_BYTES } from './proto.js';

const a = args();
const role = arg(a, 'role');
const dvk = await connect({
  socket: arg(a, 'socket'),
  dc: arg(a, 'dc'),
  endpoint: Number(arg(a, 'ep')),
  timeout: 10_000,
});
let stopping = false;
exitWithStdin(async () => {
  stopping = true;
  await dvk.close();
});

async function loop(step: () => Promise<void>): Promise<void> {
  try {
    for (;;) await step();
  } catch (e) {
    if (!stopping) {
      process.stderr.write(`${role} server: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exit(1);
    }
  }
}

if (role === 'sendrec') {
  ready({ node: dvk.node });
  // The fast server loop: reply and take the next request in one call (replyReceive).
  let q: Received | undefined;
  await loop(async () => {
    q =
      q === undefined
        ? await dvk.receiveRequest()
        : await dvk.replyReceive(q.source, { type: q.type, payload: q.payload });
  });
} else if (role === 'post') {
  let want = 0;
  let count = 0;
  ready({ node: dvk.node });
  await loop(async () => {
    const m = await dvk.receive(ANY);
    if (m.type === T_DATA) {
      if (++count === want) await dvk.send(m.source, { type: T_DONE });
    } else if (m.type === T_START) {
      want = new DataView(m.payload.buffer, m.payload.byteOffset, m.payload.byteLength).getUint32(0, true);
      count = 0;
    }
  });
} else if (role === 'vcopy') {
  const buf = new Uint8Array(VCOPY_BYTES);
  for (let i = 0; i < buf.length; i++) buf[i] = i & 0xff;
  const g = await dvk.grant(buf, 'rw');
  const id = new Uint8Array(4);
  new DataView(id.buffer).setUint32(0, g.id, true);
  ready({ node: dvk.node, grant: g.id });
  await loop(async () => {
    const q = await dvk.receiveRequest();
    await dvk.reply(q.source, { type: 0, payload: id });
  });
} else {
  throw new Error(`unknown --role ${role}`);
}
