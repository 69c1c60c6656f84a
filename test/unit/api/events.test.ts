import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { EventLog } from '../../../src/node/events.js';

describe('EventLog', () => {
  test('numbers events from 1 and stamps node and time', () => {
    let t = 100;
    const log = new EventLog({ node: 3, now: () => t++ });
    const a = log.emit('node.up', 'node1');
    const b = log.emit('dc.created', 'dc demo', { id: 1 });
    assert.deepEqual(a, { seq: 1, time: 100, kind: 'node.up', subject: 'node1', node: 3, detail: {} });
    assert.equal(b.seq, 2);
    assert.deepEqual(b.detail, { id: 1 });
    assert.equal(log.last, 2);
  });

  test('list returns events after since, oldest first, at most limit', () => {
    const log = new EventLog({ node: 0 });
    for (let i = 0; i < 10; i++) log.emit('proc.started', `d/${i}`);
    assert.deepEqual(
      log.list({ since: 4 }).map((e) => e.seq),
      [5, 6, 7, 8, 9, 10],
    );
    assert.deepEqual(
      log.list({ since: 4, limit: 2 }).map((e) => e.seq),
      [5, 6],
    );
    assert.deepEqual(log.list({ since: 10 }), []);
    assert.equal(log.list().length, 10);
  });

  test('is bounded: the oldest entries go, and since older than the oldest starts at the oldest kept', () => {
    const log = new EventLog({ node: 0, capacity: 4 });
    for (let i = 0; i < 11; i++) log.emit('proc.exited', `d/${i}`);
    assert.deepEqual(
      log.list().map((e) => e.seq),
      [8, 9, 10, 11],
    );
    assert.deepEqual(
      log.list({ since: 2 }).map((e) => e.seq),
      [8, 9, 10, 11],
    );
    assert.deepEqual(
      log.list({ since: 9 }).map((e) => e.subject),
      ['d/9', 'd/10'],
    );
  });

  test('subscribers get every new event until they unsubscribe; a throwing one does not stop the others', () => {
    const log = new EventLog({ node: 0 });
    const got: number[] = [];
    log.subscribe(() => {
      throw new Error('broken stream');
    });
    const off = log.subscribe((e) => got.push(e.seq));
    log.emit('a', 'x');
    log.emit('b', 'x');
    off();
    log.emit('c', 'x');
    assert.deepEqual(got, [1, 2]);
    assert.equal(log.subscriberCount, 1);
  });
});
