// A process whose migration export takes seconds: its DC stays "being migrated" meanwhile.
import { ANY, connect } from 'dvs';

const dvk = await connect();
await dvk.onMigrate({
  export: async () => {
    console.log('exporting');
    await new Promise((r) => setTimeout(r, 3000));
    return new Uint8Array(0);
  },
});
console.log('ready');
for (;;) await dvk.receive(ANY);
