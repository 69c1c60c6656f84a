/**
 * `dvs ca init`, `dvs ca token` and `dvs node join`: the cluster CA, one-time join tokens, and a node's
 * certificate, from the CA directory or over the network (docs/security.md). The certificate code (@peculiar/x509) is loaded only by these commands.
 */
import { isIP } from 'node:net';
import { resolve } from 'node:path';
import { InvalidArgumentError } from '@commander-js/extra-typings';
import { DvsError } from '../../protocol/errors.js';
import { caDirOf } from '../../security/paths.js';
import { parseDuration } from '../../security/tokens.js';
import type { Ctx } from '../context.js';

/** `--ttl 30m|1h|7d` for commander. */
export function durationArg(value: string): number {
  try {
    return parseDuration(value);
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
}

/** `--ip 10.0.0.2,127.0.0.1` for commander: EINVAL on a bad address. */
export function ipListArg(value: string): string[] {
  const ips = value.split(',').map((s) => s.trim());
  for (const ip of ips) if (isIP(ip) === 0) throw new InvalidArgumentError(`bad IP address ${ip}`);
  return ips;
}

/** `--dns a.example,b.example` for commander (checked when the request is made). */
export function nameListArg(value: string): string[] {
  return value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

function caDir(ctx: Ctx, given: string | undefined): string {
  return given === undefined ? caDirOf(ctx.dir()) : resolve(ctx.out.io.cwd, given);
}

export interface CaInitOptions {
  caDir?: string;
  json: boolean;
}

/** `dvs ca init`: create the cluster CA (EEXIST if there is one). */
export async function caInit(ctx: Ctx, o: CaInitOptions): Promise<number> {
  const { initCa } = await import('../../security/ca-dir.js');
  const info = await initCa(caDir(ctx, o.caDir));
  if (o.json) {
    ctx.out.json(info);
    return 0;
  }
  ctx.out.line(`cluster CA created in ${info.dir}`);
  ctx.out.line(`  certificate  ${info.cert}  (give it to every node)`);
  ctx.out.line(`  private key  ${info.key}  (mode 0600; never copy it)`);
  ctx.out.line(`  fingerprint  ${info.fingerprint}`);
  ctx.out.line(`  valid until  ${info.notAfter}`);
  ctx.out.note('next: dvs ca token   (a one-time token for dvs node join)');
  return 0;
}

export interface CaTokenOptions {
  caDir?: string;
  ttlMs: number;
  /** Bind the token to this node id (a join as another id is refused). */
  nodeId?: number;
  json: boolean;
}

/**
 * `dvs ca token`: a one-time join token that pins the CA (`dvsjt1-<id>.<secret>.<fingerprint>`), good for
 * both `dvs node join --via` and `--ca-dir`. The token alone goes to stdout, for `$(dvs ca token)`.
 */
export async function caToken(ctx: Ctx, o: CaTokenOptions): Promise<number> {
  const { loadCa } = await import('../../security/ca-dir.js');
  const { createPinnedToken } = await import('../../security/join-token.js');
  const dir = caDir(ctx, o.caDir);
  // Only where a CA exists: a token nobody can spend would only confuse.
  const ca = await loadCa(dir);
  const t = await createPinnedToken(dir, ca.info.fingerprint, o.ttlMs, {
    ...(o.nodeId !== undefined ? { nodeId: o.nodeId } : {}),
  });
  const expiresAt = new Date(t.expiresAt).toISOString();
  if (o.json) {
    ctx.out.json({
      token: t.token,
      id: t.id,
      expiresAt,
      caDir: dir,
      caFingerprint: ca.info.fingerprint,
      ...(t.nodeId !== undefined ? { nodeId: t.nodeId } : {}),
    });
    return 0;
  }
  ctx.out.line(t.token);
  const who = t.nodeId === undefined ? 'any node id' : `node ${t.nodeId} only`;
  ctx.out.note(
    `one-time join token ${t.id} for ${who}, valid until ${expiresAt}; pins CA ${ca.info.fingerprint}`,
  );
  ctx.out.note(
    `use: dvs node join --token <TOKEN> --node-id ${t.nodeId ?? '<N>'} --via https://<CA node API> --tls-dir <DIR>   (http:// if that API runs with --api-tls off)`,
  );
  return 0;
}

export interface NodeJoinOptions {
  token: string;
  nodeId: number;
  /** Base URL of the API of the node holding the CA: the network join. */
  via?: string;
  caDir?: string;
  tlsDir?: string;
  name?: string;
  ip?: string[];
  dns?: string[];
  json: boolean;
}

/**
 * `dvs node join`: make this node's key and CSR here, then either send the CSR with a proof of the token to
 * the node holding the CA (`--via`, docs/security.md "Network join") or spend the token at a CA directory
 * this host can read (`--ca-dir`); write the certificate, the key and the CA certificate to the node's TLS
 * directory.
 */
export async function nodeJoin(ctx: Ctx, o: NodeJoinOptions): Promise<number> {
  const { joinOverNetwork, joinWithCaDir } = await import('../../security/join-client.js');
  if (o.via !== undefined && o.caDir !== undefined) {
    throw new DvsError('EINVAL', '--via and --ca-dir are two ways to join: give one');
  }
  const tlsDir =
    o.tlsDir === undefined ? resolve(ctx.dir(), `node${o.nodeId}`, 'tls') : resolve(ctx.out.io.cwd, o.tlsDir);
  const name = o.name ?? `node${o.nodeId}`;
  const names = { ips: o.ip ?? ['127.0.0.1'], dns: o.dns ?? [name] };
  const r =
    o.via !== undefined
      ? await joinOverNetwork(o.token, { via: o.via, nodeId: o.nodeId, tlsDir, names })
      : await joinWithCaDir(o.token, { caDir: caDir(ctx, o.caDir), nodeId: o.nodeId, tlsDir, names });
  if (o.json) {
    ctx.out.json({ ...r, tlsDir, ...(o.via !== undefined ? { via: o.via } : {}) });
    return 0;
  }
  ctx.out.line(
    `node ${o.nodeId} joined${o.via !== undefined ? ` via ${o.via}` : ''}: certificate for node-${o.nodeId} in ${tlsDir}`,
  );
  ctx.out.line(`  certificate  ${r.cert}  (fingerprint ${r.fingerprint}, valid until ${r.notAfter})`);
  ctx.out.line(`  private key  ${r.key}  (mode 0600; made here, never sent)`);
  ctx.out.line(`  CA           ${r.ca}  (fingerprint ${r.caFingerprint})`);
  ctx.out.note(`start it with: dvs node start --node-id ${o.nodeId} --tls-dir ${tlsDir} ...`);
  return 0;
}

/**
 * For `dvs up --tls`: the cluster CA in DIR/ca (created if missing, reused otherwise) and a fresh
 * certificate for each node in DIR/node<N>/tls. Returns the TLS directory of each node id.
 */
export async function prepareClusterTls(
  ctx: Ctx,
  clusterDir: string,
  ids: number[],
): Promise<Map<number, string>> {
  const { initCa, issueNodeTls } = await import('../../security/ca-dir.js');
  const { exists } = await import('../../security/fsutil.js');
  const { CA_KEY_FILE } = await import('../../security/paths.js');
  const dir = caDirOf(clusterDir);
  if (!(await exists(resolve(dir, CA_KEY_FILE)))) {
    const info = await initCa(dir);
    ctx.out.note(`cluster CA created in ${dir} (fingerprint ${info.fingerprint})`);
  }
  const dirs = new Map<number, string>();
  for (const id of ids) {
    const tlsDir = resolve(clusterDir, `node${id}`, 'tls');
    await issueNodeTls({ caDir: dir, nodeId: id, tlsDir, names: { ips: ['127.0.0.1'], dns: [`node${id}`] } });
    dirs.set(id, tlsDir);
  }
  return dirs;
}
