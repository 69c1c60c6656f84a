/**
 * `etcd://h1:2379,h2:2379,h3:2379` store URLs, as users type them (`--store etcd://...`).
 *
 * Only plain-text gRPC endpoints for now (`etcd://`); TLS to etcd (`etcds://`) is not wired yet and is
 * refused with ENOTSUP rather than silently downgraded.
 */
import { DvsError } from '../../protocol/errors.js';

/** Default etcd client port, used when an endpoint gives no port. */
export const ETCD_DEFAULT_PORT = 2379;

const HOST_RE = /^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)$/;

/**
 * Parse an etcd store URL into `host:port` endpoints (the form EtcdStore takes).
 *
 * @throws DvsError EINVAL with a message naming the bad part; ENOTSUP for `etcds://`.
 * @example parseEtcdUrl('etcd://10.0.0.1:2379,10.0.0.2') // ['10.0.0.1:2379', '10.0.0.2:2379']
 */
export function parseEtcdUrl(url: string): string[] {
  const bad = (why: string): DvsError =>
    new DvsError('EINVAL', `bad etcd URL ${JSON.stringify(url)}: ${why}`, { url });
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/(.*)$/.exec(url.trim());
  if (m === null) throw bad('expected etcd://host:port[,host:port...]');
  const scheme = m[1]!.toLowerCase();
  const rest = m[2]!;
  if (scheme === 'etcds') {
    throw new DvsError('ENOTSUP', `etcd over TLS (${url}) is not supported yet`, { url });
  }
  if (scheme !== 'etcd') throw bad(`scheme must be etcd://, got ${scheme}://`);
  // A trailing slash is harmless; a path, query or credentials are not something we would honour.
  const list = rest.endsWith('/') ? rest.slice(0, -1) : rest;
  if (/[/?#@]/.test(list)) throw bad('no path, query, fragment or credentials allowed');
  if (list === '') throw bad('no endpoints');
  const endpoints: string[] = [];
  for (const part of list.split(',')) {
    const ep = part.trim();
    if (ep === '') throw bad('empty endpoint in the list');
    let host: string;
    let portText: string | undefined;
    if (ep.startsWith('[')) {
      const close = ep.indexOf(']');
      if (close < 0) throw bad(`unterminated IPv6 address in ${JSON.stringify(ep)}`);
      host = ep.slice(0, close + 1);
      const after = ep.slice(close + 1);
      if (after !== '' && !after.startsWith(':')) throw bad(`bad endpoint ${JSON.stringify(ep)}`);
      portText = after === '' ? undefined : after.slice(1);
    } else {
      const colon = ep.lastIndexOf(':');
      host = colon < 0 ? ep : ep.slice(0, colon);
      portText = colon < 0 ? undefined : ep.slice(colon + 1);
    }
    if (!HOST_RE.test(host)) throw bad(`bad host ${JSON.stringify(host)}`);
    let port = ETCD_DEFAULT_PORT;
    if (portText !== undefined) {
      if (!/^\d{1,5}$/.test(portText))
        throw bad(`bad port ${JSON.stringify(portText)} in ${JSON.stringify(ep)}`);
      port = Number(portText);
      if (port < 1 || port > 65535) throw bad(`port ${port} out of range in ${JSON.stringify(ep)}`);
    }
    const norm = `${host}:${port}`;
    if (endpoints.includes(norm)) throw bad(`endpoint ${norm} listed twice`);
    endpoints.push(norm);
  }
  return endpoints;
}
