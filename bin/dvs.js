#!/usr/bin/env node
// The `dvs` command. The CLI is TypeScript compiled by `npm run build` into dist/.
import { main } from '../dist/src/cli/main.js';

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    process.stderr.write(`dvs: error: ${e instanceof Error ? e.message : String(e)} (EINTERNAL)\n`);
    process.exitCode = 1;
  },
);
