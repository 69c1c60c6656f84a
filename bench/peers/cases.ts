/**
 * Peer systems (NATS, ZeroMQ, gRPC), for the DESIGN.md §12 targets "local sendrec <= 0.5x NATS
 * request-reply" and "post() >= 1.5x NATS publish". Not measured yet (a later issue): each case looks for
 * the peer and reports itself skipped, saying whether the peer is missing or only its bench is. To add
 * one, replace its setup with one that starts the peer's server and a client pair, as the baselines do.
 */
import { accessSync, constants } from 'node:fs';
import { createRequire } from 'node:module';
import { delimiter, join } from 'node:path';
import type { BenchCase, CaseContext, Driver, Unit } from '../lib/case.js';
import { SkipError } from '../lib/case.js';

/** True when `bin` is an executable on PATH. */
function onPath(bin: string): boolean {
  for (const d of (process.env.PATH ?? '').split(delimiter)) {
    try {
      accessSync(join(d, bin), constants.X_OK);
      return true;
    } catch {}
  }
  return false;
}

/** True when the npm package `pkg` resolves from the repo. */
function hasPackage(root: string, pkg: string): boolean {
  try {
    createRequire(join(root, 'package.json')).resolve(pkg);
    return true;
  } catch {
    return false;
  }
}

function peer(name: string, unit: Unit, what: string, need: { bins: string[]; pkgs: string[] }): BenchCase {
  return {
    name,
    group: 'peer',
    unit,
    what,
    initialWork: 1,
    async setup(ctx: CaseContext): Promise<Driver> {
      const missing = [
        ...need.bins.filter((b) => !onPath(b)),
        ...need.pkgs.filter((p) => !hasPackage(ctx.root, p)).map((p) => `npm ${p}`),
      ];
      if (missing.length > 0) throw new SkipError(`peer not installed (${missing.join(', ')})`);
      throw new SkipError('peer installed, but its benchmark is not written yet');
    },
  };
}

export const peerCases: BenchCase[] = [
  peer(
    'peer.nats.request',
    'us',
    'NATS request-reply RTT, 64 B (requester -> server -> responder -> server)',
    {
      bins: ['nats-server'],
      pkgs: ['nats'],
    },
  ),
  peer('peer.nats.publish', 'msg/s', 'NATS publish -> subscriber in another process, 64 B', {
    bins: ['nats-server'],
    pkgs: ['nats'],
  }),
  peer('peer.zeromq.reqrep', 'us', 'ZeroMQ REQ/REP RTT over ipc://, 64 B', { bins: [], pkgs: ['zeromq'] }),
  peer('peer.grpc.unary', 'us', 'gRPC unary RTT (grpc-js, identity serializers), 64 B', {
    bins: [],
    pkgs: ['@grpc/grpc-js'],
  }),
];
