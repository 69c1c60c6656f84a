/**
 * A gRPC process of the peer cases (@grpc/grpc-js, pure JS HTTP/2). One unary method `/bench.Bench/Echo`
 * with identity serializers (a raw Buffer each way), so no protobuf cost is measured, over a Unix socket
 * (`unix:` address, like dvs's local path). `--path P --role R`:
 *
 * - `server`: serves Echo, answering with the request bytes;
 * - `client`: driver; one run = `work` unary calls of 64 B (mean µs; p50/p99 in extra).
 */
import * as grpc from '@grpc/grpc-js';
import { arg, args, latencySummary, msSince, nowNs, ready, serveRuns } from '../lib/worker.js';

const MSG = 64;
const TIMEOUT = 10_000;
const METHOD = '/bench.Bench/Echo';
const identity = (b: Buffer) => b;

const a = args();
const role = arg(a, 'role');
const address = `unix:${arg(a, 'path')}`;
const payload = Buffer.alloc(MSG, 9);

if (role === 'server') {
  const server = new grpc.Server();
  const service: grpc.ServiceDefinition = {
    Echo: {
      path: METHOD,
      requestStream: false,
      responseStream: false,
      requestSerialize: identity,
      requestDeserialize: identity,
      responseSerialize: identity,
      responseDeserialize: identity,
    },
  };
  server.addService(service, {
    Echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) =>
      cb(null, call.request),
  });
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (e) => (e ? reject(e) : resolve())),
  );
  ready();
  process.stdin.resume();
  process.stdin.on('end', () => {
    server.forceShutdown();
    process.exit(0);
  });
} else if (role === 'client') {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  const call = () =>
    new Promise<Buffer>((resolve, reject) => {
      client.makeUnaryRequest(
        METHOD,
        identity,
        identity,
        payload,
        new grpc.Metadata(),
        { deadline: Date.now() + TIMEOUT },
        (e, r) => (e || r === undefined ? reject(e ?? new Error('empty reply')) : resolve(r)),
      );
    });
  const echo = await call();
  if (echo.length !== MSG || echo[0] !== 9) throw new Error('grpc unary check: bad echo');
  let samples = new Float64Array(0);
  ready();
  serveRuns(
    async (work) => {
      if (samples.length < work) samples = new Float64Array(work);
      const t0 = nowNs();
      let prev = t0;
      for (let i = 0; i < work; i++) {
        await call();
        const t = nowNs();
        samples[i] = Number(t - prev);
        prev = t;
      }
      return latencySummary(samples, work, msSince(t0));
    },
    async () => client.close(),
  );
} else {
  throw new Error(`unknown --role ${role}`);
}
