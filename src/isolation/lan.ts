/**
 * The DC LAN on one node (containers.md 4): per DC a bridge and a VXLAN device (VNI = DC id) over the
 * node's underlay, the container on a veth with a DC-private address, and bandwidth caps with tc.
 *
 * ```
 *   node netns                                                     container netns (<prefix>c<dc>)
 *   underlay dev (eth0, 10.0.0.11) <── UDP 4789 ──> other nodes
 *        │
 *   <prefix>x<dc>  vxlan id <dc> nolearning ──┐
 *                                             ├── <prefix>b<dc> bridge
 *   <prefix>v<dc>  veth, tbf (into the ctr) ──┘        │ veth pair
 *        └─ ingress: mirred -> <prefix>i<dc> (ifb, tbf: out of the ctr)     eth0 172.31.5.2/24 mtu 1450
 * ```
 * Forwarding is static (no learning, no flooding of unicast, containers.md 4.3): the caller (the daemon,
 * from the cluster store) gives {@link LanPeers}: the underlay address of every other node hosting the DC
 * (all-zero FDB entries: broadcast and ARP go to each) and the MAC of every remote container with its
 * node (one permanent entry each). {@link DcLanManager.setPeers} reconciles to exactly that set.
 *
 * Isolation: each DC has its own bridge and VNI, so DCs are apart at L2 and may even reuse a subnet; the
 * container has no default route, so neither the host nor the underlay is reachable from inside.
 * Every operation is idempotent: `ensureDc` and `attach` can be called again after a daemon restart.
 */
import type { Logger } from 'pino';
import { DvsError, dvsError } from '../protocol/errors.js';
import { dcNames, dcOfName, formatPrefix, parseIpv4 } from './addr.js';
import { type RunOptions, runTool, tryTool } from './run.js';

/** VXLAN overhead on an IPv4 underlay with a 1500 MTU: the container MTU (containers.md 4.2). */
export const DEFAULT_LAN_MTU = 1450;
/** IANA VXLAN port. */
export const VXLAN_PORT = 4789;

/** Options of a {@link DcLanManager}. */
export interface LanOptions {
  /** Per-node name prefix (see addr.ts). */
  prefix: string;
  /** The node's underlay: the device and address VXLAN packets leave from. */
  underlay: { dev: string; localIp: string };
  /**
   * Network namespace playing "the node" (tests, where nodes are namespaces); default: the namespace the
   * daemon runs in. Container namespaces are named and global either way.
   */
  nodeNetns?: string;
  /** UDP port of VXLAN (default 4789). */
  port?: number;
  logger: Logger;
}

/** Where the other members of a DC LAN are. */
export interface LanPeers {
  /** Underlay addresses of the other nodes hosting the DC (broadcast/ARP is replicated to each). */
  nodes: string[];
  /** MAC of each remote container and the underlay address of its node. */
  macs: { mac: string; node: string }[];
}

/** A container's place on its DC LAN. */
export interface LanAttachment {
  /** Container network namespace (must exist). */
  netns: string;
  /** `172.31.5.2`. */
  address: string;
  /** Prefix length of the DC LAN (24). */
  prefixLength: number;
  /** The container's MAC (`containerMac(dc, node)`). */
  mac: string;
  /** Default {@link DEFAULT_LAN_MTU}. */
  mtu?: number;
  /** Bandwidth cap in bits/s, each direction; null/absent = none. */
  netBps?: number | null;
}

/** A kernel object of ours found in the node namespace. */
export interface LanObject {
  dc: number;
  kind: 'bridge' | 'vxlan' | 'veth' | 'ifb';
  name: string;
}

/** Per-node manager of DC LANs. */
export class DcLanManager {
  private readonly opts: LanOptions;
  private readonly log: Logger;

  constructor(opts: LanOptions) {
    parseIpv4(opts.underlay.localIp);
    dcNames(opts.prefix, 1); // validates the prefix
    this.opts = opts;
    this.log = opts.logger.child({ component: 'lan' });
  }

  private ip(args: string[], run?: RunOptions): Promise<string> {
    return runTool('ip', this.opts.nodeNetns ? ['-n', this.opts.nodeNetns, ...args] : args, run);
  }

  /**
   * Deletes a link of the node namespace. One already gone is no error: a veth goes with its peer when the
   * container's namespace is deleted, asynchronously, so it may vanish between our listing and our delete.
   */
  private async delLink(name: string, run: RunOptions): Promise<void> {
    try {
      await this.ip(['link', 'del', name], run);
    } catch (e) {
      const text = e instanceof DvsError ? `${e.message} ${String(e.details?.stderr ?? '')}` : String(e);
      if (/Cannot find device/.test(text)) return;
      throw e;
    }
  }

  private tc(args: string[], run?: RunOptions): Promise<string> {
    return runTool('tc', this.opts.nodeNetns ? ['-n', this.opts.nodeNetns, ...args] : args, run);
  }

  private bridge(args: string[], run?: RunOptions): Promise<string> {
    return runTool('bridge', this.opts.nodeNetns ? ['-n', this.opts.nodeNetns, ...args] : args, run);
  }

  private async links(run?: RunOptions): Promise<Map<string, { kind?: string }>> {
    const out = JSON.parse((await this.ip(['-j', '-d', 'link', 'show'], run)) || '[]') as {
      ifname: string;
      linkinfo?: { info_kind?: string };
    }[];
    return new Map(
      out.map((l) => [l.ifname, { ...(l.linkinfo?.info_kind ? { kind: l.linkinfo.info_kind } : {}) }]),
    );
  }

  /** Creates the DC's bridge and VXLAN device if missing, and brings them up. */
  async ensureDc(dc: number, run: RunOptions = {}): Promise<void> {
    const n = dcNames(this.opts.prefix, dc);
    const links = await this.links(run);
    if (!links.has(n.bridge)) await this.ip(['link', 'add', n.bridge, 'type', 'bridge'], run);
    if (!links.has(n.vxlan)) {
      // Static forwarding only (nolearning): learning would let any frame from the underlay claim a MAC.
      const { dev, localIp } = this.opts.underlay;
      const port = String(this.opts.port ?? VXLAN_PORT);
      await this.ip(
        [
          'link',
          'add',
          n.vxlan,
          'type',
          'vxlan',
          'id',
          String(dc),
          'dstport',
          port,
          'local',
          localIp,
          'dev',
          dev,
          'nolearning',
        ],
        run,
      );
    }
    await this.ip(['link', 'set', n.vxlan, 'master', n.bridge], run);
    await this.ip(['link', 'set', n.vxlan, 'up'], run);
    await this.ip(['link', 'set', n.bridge, 'up'], run);
    this.log.debug({ dc }, 'DC LAN ready');
  }

  /** Reconciles the VXLAN forwarding table to exactly `peers` (adds missing entries, removes stale ones). */
  async setPeers(dc: number, peers: LanPeers, run: RunOptions = {}): Promise<void> {
    const { vxlan } = dcNames(this.opts.prefix, dc);
    const zero = '00:00:00:00:00:00';
    const want = new Map<string, string>(); // "mac dst" -> mac
    for (const node of peers.nodes) {
      parseIpv4(node);
      want.set(`${zero} ${node}`, zero);
    }
    for (const { mac, node } of peers.macs) {
      if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(mac)) throw dvsError('EINVAL', `bad MAC ${mac}`, { mac });
      parseIpv4(node);
      want.set(`${mac.toLowerCase()} ${node}`, mac.toLowerCase());
    }
    const have = JSON.parse((await this.bridge(['-j', 'fdb', 'show', 'dev', vxlan], run)) || '[]') as {
      mac: string;
      dst?: string;
    }[];
    const present = new Set<string>();
    for (const e of have) {
      if (e.dst === undefined) continue; // the bridge's own entries
      const key = `${e.mac} ${e.dst}`;
      if (want.has(key)) present.add(key);
      else await this.bridge(['fdb', 'del', e.mac, 'dev', vxlan, 'dst', e.dst, 'self'], run);
    }
    for (const [key, mac] of want) {
      if (present.has(key)) continue;
      const dst = key.split(' ')[1] ?? '';
      // The all-zero MAC takes one entry per destination (append); a unicast MAC lives on one node (replace).
      const verb = mac === zero ? 'append' : 'replace';
      await this.bridge(['fdb', verb, mac, 'dev', vxlan, 'dst', dst, 'self', 'permanent'], run);
    }
  }

  /**
   * Puts a container on the DC LAN: veth pair (host end on the bridge, `eth0` inside with the MAC, MTU and
   * address), then the bandwidth cap. Idempotent.
   */
  async attach(dc: number, a: LanAttachment, run: RunOptions = {}): Promise<void> {
    const n = dcNames(this.opts.prefix, dc);
    parseIpv4(a.address);
    const mtu = String(a.mtu ?? DEFAULT_LAN_MTU);
    const links = await this.links(run);
    if (!links.has(n.veth)) {
      await this.ip(['link', 'add', n.veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', a.netns], run);
    }
    await this.ip(['link', 'set', n.veth, 'mtu', mtu, 'master', n.bridge, 'up'], run);
    const inside = (args: string[]) => runTool('ip', ['-n', a.netns, ...args], run);
    await inside(['link', 'set', 'eth0', 'address', a.mac, 'mtu', mtu]);
    await inside(['addr', 'replace', `${a.address}/${a.prefixLength}`, 'dev', 'eth0']);
    await inside(['link', 'set', 'eth0', 'up']);
    await inside(['link', 'set', 'lo', 'up']);
    await this.setRate(dc, a.netBps ?? null, run);
    this.log.debug({ dc, address: a.address, mac: a.mac }, 'container attached');
  }

  /**
   * Caps the container's traffic at `bps` bits/s in each direction (null removes the cap). Into the
   * container: tbf on the host end of the veth. Out of it: the veth's ingress is redirected to an IFB
   * device shaped by tbf, so the cap stays out of the container's reach (containers.md 4.6: `police` and
   * `matchall` are not in this kernel).
   */
  async setRate(dc: number, bps: number | null, run: RunOptions = {}): Promise<void> {
    const n = dcNames(this.opts.prefix, dc);
    const links = await this.links(run);
    if (!links.has(n.veth))
      throw dvsError('ENOENT', `DC ${dc} has no container on the LAN of this node`, { dc });
    if (bps === null) {
      await this.tcQuiet(['qdisc', 'del', 'dev', n.veth, 'root'], run);
      await this.tcQuiet(['qdisc', 'del', 'dev', n.veth, 'ingress'], run);
      if (links.has(n.ifb)) await this.delLink(n.ifb, run);
      return;
    }
    const rate = `${Math.round(bps)}bit`;
    // The bucket must hold a GSO super-packet (64 KiB) or tbf stalls; beyond that, 10 ms of traffic.
    const burst = String(Math.max(64 * 1024, Math.ceil(bps / 8 / 100)));
    const tbf = ['root', 'tbf', 'rate', rate, 'burst', burst, 'latency', '50ms'];
    await this.tc(['qdisc', 'replace', 'dev', n.veth, ...tbf], run);
    if (!links.has(n.ifb)) await this.ip(['link', 'add', n.ifb, 'type', 'ifb'], run);
    await this.ip(['link', 'set', n.ifb, 'up'], run);
    await this.tc(['qdisc', 'replace', 'dev', n.ifb, ...tbf], run);
    await this.tcQuiet(['qdisc', 'del', 'dev', n.veth, 'ingress'], run);
    await this.tc(['qdisc', 'add', 'dev', n.veth, 'handle', 'ffff:', 'ingress'], run);
    await this.tc(
      [
        'filter',
        'add',
        'dev',
        n.veth,
        'parent',
        'ffff:',
        'protocol',
        'all',
        'u32',
        'match',
        'u32',
        '0',
        '0',
        'action',
        'mirred',
        'egress',
        'redirect',
        'dev',
        n.ifb,
      ],
      run,
    );
  }

  private async tcQuiet(args: string[], run: RunOptions): Promise<void> {
    await tryTool('tc', this.opts.nodeNetns ? ['-n', this.opts.nodeNetns, ...args] : args, run);
  }

  /** Takes the container off the LAN (veth and IFB deleted; the netns keeps only `lo`). */
  async detach(dc: number, run: RunOptions = {}): Promise<void> {
    const n = dcNames(this.opts.prefix, dc);
    const links = await this.links(run);
    for (const name of [n.ifb, n.veth]) if (links.has(name)) await this.delLink(name, run);
  }

  /** Removes everything of the DC's LAN on this node. No error for what is already gone. */
  async removeDc(dc: number, run: RunOptions = {}): Promise<void> {
    const n = dcNames(this.opts.prefix, dc);
    const links = await this.links(run);
    for (const name of [n.ifb, n.veth, n.vxlan, n.bridge]) {
      if (links.has(name)) await this.delLink(name, run);
    }
    this.log.debug({ dc }, 'DC LAN removed');
  }

  /** Our objects present in the node namespace (for adopt/sweep). */
  async list(run: RunOptions = {}): Promise<LanObject[]> {
    const kinds = { b: 'bridge', x: 'vxlan', v: 'veth', i: 'ifb' } as const;
    const out: LanObject[] = [];
    for (const name of (await this.links(run)).keys()) {
      for (const [letter, kind] of Object.entries(kinds) as [keyof typeof kinds, LanObject['kind']][]) {
        const dc = dcOfName(this.opts.prefix, letter, name);
        if (dc !== undefined) out.push({ dc, kind, name });
      }
    }
    return out;
  }

  /**
   * The IPv4 networks of the node namespace's interfaces (`10.0.0.0/24`), for
   * {@link validateLanPrefix}: a DC LAN must not overlap them.
   */
  async hostPrefixes(run: RunOptions = {}): Promise<string[]> {
    return hostPrefixes(this.opts.nodeNetns, run);
  }
}

/** IPv4 networks configured in a namespace (default: ours), loopback excluded. */
export async function hostPrefixes(netns?: string, run: RunOptions = {}): Promise<string[]> {
  const args = ['-j', '-4', 'addr', 'show'];
  const out = JSON.parse((await runTool('ip', netns ? ['-n', netns, ...args] : args, run)) || '[]') as {
    addr_info?: { local?: string; prefixlen?: number }[];
  }[];
  const nets = new Set<string>();
  for (const link of out) {
    for (const a of link.addr_info ?? []) {
      if (a.local === undefined || a.prefixlen === undefined || a.local.startsWith('127.')) continue;
      const len = a.prefixlen;
      const addr = parseIpv4(a.local);
      const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
      nets.add(formatPrefix({ network: (addr & mask) >>> 0, length: len }));
    }
  }
  return [...nets];
}
