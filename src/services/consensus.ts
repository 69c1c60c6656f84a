/**
 * DC-scoped single-value consensus: `propose(instance, value)` resolves with the one value decided for that
 * instance, the same for every caller, concurrent or later, on every node.
 *
 * Recipe (`/dvs/svc/<dc>/consensus/<instance>`): one transaction, compare `createRevision == 0` (the key
 * does not exist), then put the proposal; else get the key. The first such transaction in the store's global
 * order wins, and the key is never rewritten, so every later transaction reads the winner: agreement,
 * validity (the decided value was proposed) and termination while the store answers. The store's consensus
 * (etcd's Raft, or the embedded store's single writer) does the agreeing; this is the "consensus on a value"
 * recipe of the coordination reference.
 *
 * Retry-safe under lost replies: the transaction is idempotent. If an attempt's reply is lost (etcd leader
 * change, dropped channel) and it did land, the retry's failure branch reads back our own value as the
 * decision; if it did not land, the retry is simply the first attempt. Either way the caller learns the
 * decision, never a guess, which is why ambiguous attempts are retried here (within the call's timeout).
 *
 * Instances are never deleted by the service: forgetting a decision would let a later proposer decide
 * differently.
 */
import { dvsError } from '../protocol/errors.js';
import {
  type CallOptions,
  DcService,
  type ServiceOptions,
  storeCall,
  validateName,
  validateValue,
} from './scope.js';

/** The decision of one instance. */
export interface Decision {
  instance: string;
  value: Uint8Array;
  /** Store revision at which it was decided (orders the decisions of a DC). */
  revision: number;
  /** Whether the decided value is the caller's proposal, byte for byte (false for a read). */
  mine: boolean;
}

/** The consensus service of one DC. */
export class ConsensusService extends DcService {
  constructor(opts: ServiceOptions) {
    super(opts, 'consensus');
  }

  async start(): Promise<void> {
    this.running = true;
  }

  async stop(): Promise<void> {
    this.running = false;
  }

  /**
   * Propose `value` for `instance`; resolves with the decided value (ours or an earlier proposer's).
   * EUNAVAIL if the store did not answer within the timeout (the decision, if any, can be read later).
   */
  propose(instance: string, value: Uint8Array, opts: CallOptions = {}): Promise<Decision> {
    return this.metrics.track('consensus', 'propose', this.doPropose(instance, value, opts));
  }

  /** The decision of `instance` (ENOENT if nothing was decided yet). */
  read(instance: string, opts: CallOptions = {}): Promise<Decision> {
    return this.metrics.track(
      'consensus',
      'read',
      (async () => {
        validateName('consensus instance', instance);
        this.check();
        const r = await storeCall(
          { what: 'consensus.read', write: false, idempotent: true },
          opts,
          this.timeoutMs,
          (c) => this.opts.store.get(this.key(instance), c),
        );
        const kv = r.kvs[0];
        if (kv === undefined)
          throw dvsError('ENOENT', `consensus instance ${instance}: undecided`, { instance });
        return { instance, value: kv.value, revision: kv.createRevision, mine: false };
      })(),
    );
  }

  private key(instance: string): string {
    return `${this.scope.consensusRoot}${instance}`;
  }

  private async doPropose(instance: string, value: Uint8Array, opts: CallOptions): Promise<Decision> {
    validateName('consensus instance', instance);
    validateValue(value);
    this.check();
    const key = this.key(instance);
    const r = await storeCall(
      { what: 'consensus.propose', write: true, idempotent: true },
      opts,
      this.timeoutMs,
      (c) =>
        this.opts.store.txn(
          [{ key, target: 'createRevision', op: '==', value: 0 }],
          [{ op: 'put', key, value }],
          [{ op: 'get', key }],
          c,
        ),
    );
    if (r.succeeded) {
      this.log.debug({ instance, revision: r.revision }, 'consensus: our proposal decided');
      return { instance, value, revision: r.revision, mine: true };
    }
    const kv = r.results[0]?.kvs[0];
    if (kv === undefined) {
      // The compare said the key exists and the get in the same txn found none: impossible in one txn.
      throw dvsError('EINTERNAL', `consensus instance ${instance}: decided key missing in its own txn`);
    }
    // The decided bytes are our proposal: ours. Not only after a lost reply within this call (an earlier
    // attempt landed): also when a caller re-proposes after EUNAVAIL, or a restarted process proposes its
    // value again, and the earlier call's write won. (Counting attempts here reported mine=false for those:
    // found by test/sim/consensus-sim.ts.) Two proposers of equal bytes are then both right to say mine.
    const mine = Buffer.from(kv.value).equals(Buffer.from(value));
    return { instance, value: kv.value, revision: kv.createRevision, mine };
  }
}
