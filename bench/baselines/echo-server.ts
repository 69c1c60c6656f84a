/**
 * Raw echo server for the ping-pong baselines: writes every chunk it reads back to its sender.
 * `--transport uds|tcp --path P`; reports `{ready, port}`.
 */
import net from 'node:net';
import { arg, args, exitWithStdin, ready } from '../lib/worker.js';
import { listen, transportOf } from './net.js';

const a = args();
const transport = transportOf(a.get('transport'));
const server = net.createServer((s) => {
  s.setNoDelay(true);
  s.on('data', (chunk) => s.write(chunk));
  s.on('error', () => s.destroy());
});
const port = await listen(server, transport, arg(a, 'path'));
ready({ port });
exitWithStdin(() => {
  server.close();
});
