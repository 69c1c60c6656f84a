// A token ring: every process passes each token it receives on to the next endpoint of the ring. The number
// of tokens in the DC never changes, which makes it the test bed of distributed snapshots: in every snapshot
// the tokens held by the processes plus the tokens in flight on the channels add up to the number injected.
//
// Run one process per endpoint of the ring; the first argument lists the ring in order, the second how many
// tokens this process injects at start (not when it is restored from a snapshot):
//   dvs run --dc ring --ep 100 -- node examples/token-ring.js 100,101,102 3
//   dvs run --dc ring --ep 101 --node 1 -- node examples/token-ring.js 100,101,102
//   dvs run --dc ring --ep 102 --node 2 -- node examples/token-ring.js 100,101,102
//   dvs snapshot create --dc ring --name cut1
//   dvs snapshot fork --snapshot cut1 --as ring2
// TR_MODE=post passes tokens with post() instead of send(); TR_DELAY_MS holds each token a while (default 2).
import { ANY, connect } from 'dvs';

const TOKEN = 1;
const ring = (process.argv[2] ?? '').split(',').filter(Boolean).map(Number);
const inject = Number(process.argv[3] ?? 0);
const mode = process.env.TR_MODE === 'post' ? 'post' : 'send';
const delayMs = Number(process.env.TR_DELAY_MS ?? 2);

const dvk = await connect();
const me = ring.indexOf(dvk.endpoint);
if (me < 0) throw new Error(`endpoint ${dvk.endpoint} is not in the ring ${ring.join(',')}`);
const next = ring[(me + 1) % ring.length];

// The state: tokens held and tokens passed so far. A token leaves `held` before it is sent: a send still
// blocked at the cut is a message in flight (the receiver records it), never also a token held here.
let held = 0;
let passes = 0;
const { restored } = await dvk.onSnapshot({
  save: () => new TextEncoder().encode(JSON.stringify({ held, passes })),
  load: (state) => {
    ({ held, passes } = JSON.parse(new TextDecoder().decode(state)));
  },
});
if (!restored) held += inject;
console.log(
  `token ring: endpoint ${dvk.endpoint} -> ${next}, ${restored ? 'restored' : 'started'} held=${held} passes=${passes}`,
);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// The injected tokens go out with send() whatever the mode: it fails at once while the next process is not
// bound yet, and returns once that process has the token. A post() to it would fail later, reported by a
// later post(), and the token it carried would be gone from the ring.
for (let first = restored ? 0 : inject; first > 0; ) {
  held--;
  try {
    await dvk.send(next, { type: TOKEN });
    passes++;
    first--;
  } catch (e) {
    held++;
    console.log(`first pass to ${next} failed (${e.code ?? e}), retrying`);
    await sleep(100);
  }
}
for (;;) {
  while (held > 0) {
    held--;
    try {
      if (mode === 'post') await dvk.post(next, { type: TOKEN });
      else await dvk.send(next, { type: TOKEN });
      passes++;
    } catch (e) {
      // The next process is not there (yet): keep the token and try again.
      held++;
      console.log(`pass to ${next} failed (${e.code ?? e}), retrying`);
      await sleep(100);
    }
  }
  const m = await dvk.receive(ANY);
  if (m.type !== TOKEN) {
    console.error(`unexpected message type ${m.type} (${m.kind}) from ${m.source}`);
    process.exit(2);
  }
  held++;
  if (delayMs > 0) await sleep(delayMs);
}
