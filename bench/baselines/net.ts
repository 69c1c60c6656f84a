/**
 * Addresses of the raw baselines: a Unix socket path or a loopback TCP port, chosen by `--transport`.
 * Sockets get TCP_NODELAY so TCP round trips are not held back by Nagle's algorithm (dvs links do the same).
 */
import net from 'node:net';

export type Transport = 'uds' | 'tcp';

/** Listen on `path` (uds) or an ephemeral 127.0.0.1 port (tcp); resolves with the port (0 for uds). */
export function listen(server: net.Server, transport: Transport, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    const done = () => {
      const a = server.address();
      resolve(typeof a === 'object' && a !== null ? a.port : 0);
    };
    if (transport === 'uds') server.listen(path, done);
    else server.listen(0, '127.0.0.1', done);
  });
}

/** Connect to a baseline server. */
export function dial(transport: Transport, path: string, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = transport === 'uds' ? net.connect(path) : net.connect(port, '127.0.0.1');
    s.once('error', reject);
    s.once('connect', () => {
      s.off('error', reject);
      s.setNoDelay(true);
      resolve(s);
    });
  });
}

export function transportOf(v: string | undefined): Transport {
  if (v === 'uds' || v === 'tcp') return v;
  throw new Error(`--transport must be uds or tcp, not ${v}`);
}

/** Resolves on the next 'drain' of `s` (used when write() reports a full buffer). */
export function drained(s: net.Socket): Promise<void> {
  return new Promise((r) => s.once('drain', r));
}
