// A participant that never receives: a snapshot of its DC cannot complete (its markers stay queued).
import { connect } from 'dvs';

const dvk = await connect();
await dvk.onSnapshot({ save: () => new Uint8Array(0) });
console.log(`deaf at endpoint ${dvk.endpoint}`);
setInterval(() => {}, 1 << 30);
