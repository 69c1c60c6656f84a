/**
 * Echo end of the thesis' pipe and FIFO ping-pong: writes back every chunk it reads.
 *
 * - `--in 0 --out 1` (pipe case): stdin and stdout are the two anonymous pipes a shell `coproc` made; the
 *   process exits at EOF on stdin, i.e. when the driver holding the other ends exits.
 * - `--in PATH --out PATH` (FIFO case): two FIFOs made with mkfifo, opened O_RDWR so neither open blocks
 *   waiting for the other side (Linux semantics); it reports ready on stdout and exits when stdin closes.
 *
 * Both ends are wrapped in net.Socket, i.e. libuv pipe handles driven by epoll, as Node reads a piped stdin.
 */

/**
 * Echo end of the thesis' pipe and FIFO ping-pong: writes back every chunk it reads.
 *
 * - `--in 0 --out 1` (pipe case): stdin and stdout are the two anonymous pipes a shell `coproc` made; the
 *   process exits at EOF on stdin, i.e. when the driver holding the other ends exits.
 * - `--in PATH --out PATH` (FIFO case): two FIFOs made with mkfifo, opened O_RDWR so neither open blocks
 *   waiting for the other side (Linux semantics); it reports ready on stdout and exits when stdin closes.
 *
 * Both ends are wrapped in net.Socket, i.e. libuv pipe handles driven by epoll, as Node reads a piped stdin.
 */
import fs, { openSync } from 'node:fs';
import net from 'node:net';
import { arg, args, exitWithStdin, ready } from '../lib/worker.js';

const a = args();
const inArg = arg(a, 'in');
const outArg = arg(a, 'out');
const isFd = /^\d+$/.test(inArg);
const open = (v: string) => (/^\d+$/.test(v) ? Number(v) : openSync(v, fs.constants.O_RDWR));
const input = new net.Socket({ fd: open(inArg), readable: true, writable: false });
const output = new net.Socket({ fd: open(outArg), readable: false, writable: true });
input.on('data', (chunk: Buffer) => output.write(chunk));
output.on('error', () => process.exit(0));
if (isFd) {
  input.on('end', () => process.exit(0));
} else {
  ready();
  exitWithStdin();
}
