/**
 * The DVK services over the cluster store, scoped per DC: key/value, queued locks with fencing tokens, leader
 * election and single-value consensus (docs/services.md has the key layout, guarantees and errors). The
 * daemon makes one {@link DcServices} per DC and exposes its methods to the DC's processes.
 */
import { ConsensusService } from './consensus.js';
import { ElectionService } from './election.js';
import { KvService } from './kv.js';
import { LockService } from './lock.js';
import type { ServiceOptions } from './scope.js';

export { ConsensusService, type Decision } from './consensus.js';
export {
  type CampaignOptions,
  ElectionService,
  type LeaderState,
  type Leadership,
} from './election.js';
export {
  type CasResult,
  type KvEntry,
  type KvEvent,
  type KvExpect,
  type KvFence,
  KvService,
  type KvWatch,
  type KvWriteOptions,
} from './kv.js';
export { fenceGuard, type HeldLock, type LockInfo, type LockOptions, LockService } from './lock.js';
export { type CallOptions, DcScope, MAX_VALUE_BYTES, type ServiceOptions, SVC_PREFIX } from './scope.js';

/** Every store-backed service of one DC, started and stopped together. */
export class DcServices {
  readonly kv: KvService;
  readonly lock: LockService;
  readonly election: ElectionService;
  readonly consensus: ConsensusService;

  constructor(opts: ServiceOptions) {
    this.kv = new KvService(opts);
    this.lock = new LockService(opts);
    this.election = new ElectionService(opts);
    this.consensus = new ConsensusService(opts);
  }

  async start(): Promise<void> {
    await Promise.all([this.kv.start(), this.lock.start(), this.election.start(), this.consensus.start()]);
  }

  /** Stop every service: watches end, waits fail with EUNAVAIL, service-granted leases are revoked. */
  async stop(): Promise<void> {
    await Promise.all([this.kv.stop(), this.lock.stop(), this.election.stop(), this.consensus.stop()]);
  }
}
