import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createStream, backoffDelay } from '../js/stream.js';
import { usersStoreReducer } from '../js/users.js';
import { fakeClock, fakeWebSocketClass } from './fakes.mjs';

// A seeded PRNG (mulberry32) so the "many samples" tests are deterministic.
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function setup(extra = {}) {
  const clock = fakeClock();
  const WS = fakeWebSocketClass();
  const target = new EventTarget();
  const doc = new EventTarget();
  doc.visibilityState = 'visible';
  const statuses = [];
  const messages = [];
  let unauthorized = 0;
  let expired = 0;
  const s = createStream({
    url: 'ws://127.0.0.1:9/admin/stream',
    WebSocket: WS,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    random: () => 1 - Number.EPSILON, // worst case unless a test overrides it
    eventTarget: target,
    document: doc,
    onStatus: (st) => statuses.push(st),
    onMessage: (m, st) => messages.push([m, st]),
    onUnauthorized: () => unauthorized++,
    onExpired: () => expired++,
    ...extra,
  });
  return {
    s, clock, WS, target, doc, statuses, messages,
    get unauthorized() { return unauthorized; },
    get expired() { return expired; },
    last: () => WS.sockets[WS.sockets.length - 1],
    lastStatus: () => statuses[statuses.length - 1],
  };
}

describe('backoffDelay (full jitter)', () => {
  test('stays within [0, min(30 s, 1 s * 2^attempt)] for every attempt', () => {
    const rnd = prng(1);
    for (let attempt = 0; attempt <= 40; attempt++) {
      const ceiling = Math.min(30000, 1000 * 2 ** attempt);
      for (let i = 0; i < 2000; i++) {
        const d = backoffDelay(attempt, rnd);
        assert.ok(d >= 0 && d <= ceiling, `attempt ${attempt}: ${d} not in [0, ${ceiling}]`);
      }
      // The extremes of random() map to the ends of the range.
      assert.equal(backoffDelay(attempt, () => 0), 0);
      assert.ok(Math.abs(backoffDelay(attempt, () => 1 - Number.EPSILON) - ceiling) < 1e-6);
    }
  });

  test('jitter survives the cap: attempt 10 samples spread over [0, 30000]', () => {
    const rnd = prng(42);
    const samples = Array.from({ length: 5000 }, () => backoffDelay(10, rnd));
    const min = Math.min(...samples);
    const max = Math.max(...samples);
    assert.ok(min >= 0 && max <= 30000);
    assert.ok(min < 1000, `min ${min} should be near 0`);
    assert.ok(max > 29000, `max ${max} should be near 30000`);
    assert.ok(new Set(samples).size > 4900, 'samples must not collapse to a few values');
    // Roughly uniform: every 3-second decile gets a fair share.
    const buckets = new Array(10).fill(0);
    for (const d of samples) buckets[Math.min(9, Math.floor(d / 3000))]++;
    for (const b of buckets) assert.ok(b > 350 && b < 650, `bucket count ${b} far from 500`);
    const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
    assert.ok(Math.abs(mean - 15000) < 800, `mean ${mean} should be about 15000`);
  });

  test('small attempts spread over their own range', () => {
    const rnd = prng(7);
    for (const [attempt, ceiling] of [[0, 1000], [1, 2000], [2, 4000], [3, 8000], [4, 16000], [5, 30000]]) {
      const samples = Array.from({ length: 2000 }, () => backoffDelay(attempt, rnd));
      assert.ok(Math.max(...samples) > ceiling * 0.95, `attempt ${attempt} max`);
      assert.ok(Math.min(...samples) < ceiling * 0.05, `attempt ${attempt} min`);
    }
  });
});

describe('createStream', () => {
  test('connects to the given URL and reports open', () => {
    const t = setup();
    t.s.start();
    assert.equal(t.WS.sockets.length, 1);
    assert.equal(t.last().url, 'ws://127.0.0.1:9/admin/stream');
    assert.equal(t.lastStatus().state, 'connecting');
    t.last().serverOpen();
    assert.equal(t.lastStatus().state, 'open');
  });

  test('backs off with growing upper bounds while the server keeps failing', () => {
    const t = setup(); // random ≈ 1: every wait is the upper bound
    t.s.start();
    const expected = [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000];
    for (const bound of expected) {
      t.last().serverClose(1006);
      const st = t.lastStatus();
      assert.equal(st.state, 'waiting');
      assert.ok(Math.abs(st.delay - bound) < 1e-6, `delay ${st.delay} != ${bound}`);
      assert.equal(st.retryAt, t.clock.now() + st.delay);
      const before = t.WS.sockets.length;
      t.clock.advance(st.delay - 1);
      assert.equal(t.WS.sockets.length, before, 'must not reconnect early');
      t.clock.advance(1);
      assert.equal(t.WS.sockets.length, before + 1, 'reconnects when the wait is over');
    }
  });

  test('the delays actually drawn use random() (full jitter, not a fixed schedule)', () => {
    const draws = [0.5, 0.25, 0.75];
    const t = setup({ random: () => draws.shift() });
    t.s.start();
    t.last().serverClose(1006);
    assert.equal(t.lastStatus().delay, 500); // 0.5 * 1000
    t.clock.advance(500);
    t.last().serverClose(1006);
    assert.equal(t.lastStatus().delay, 500); // 0.25 * 2000
    t.clock.advance(500);
    t.last().serverClose(1006);
    assert.equal(t.lastStatus().delay, 3000); // 0.75 * 4000
  });

  test('attempt counter does NOT reset on open; only after 30 s of stable connection', () => {
    const t = setup();
    t.s.start();
    // Server accepts then drops at once, three times: the bound keeps growing.
    for (const bound of [1000, 2000, 4000]) {
      t.last().serverOpen();
      t.clock.advance(100);
      t.last().serverClose(1001);
      assert.equal(t.lastStatus().delay, bound * (1 - Number.EPSILON));
      t.clock.advance(t.lastStatus().delay);
    }
    // Open for 29.9 s: still not stable.
    t.last().serverOpen();
    t.clock.advance(29_900);
    t.last().serverClose(1001);
    assert.ok(Math.abs(t.lastStatus().delay - 8000) < 1e-6);
    t.clock.advance(t.lastStatus().delay);
    // Open for 30 s: stable, so the next wait is back at attempt 0.
    t.last().serverOpen();
    t.clock.advance(30_000);
    t.last().serverClose(1012);
    assert.ok(Math.abs(t.lastStatus().delay - 1000) < 1e-6);
    assert.equal(t.s.attempt, 1);
  });

  test('answers ping with pong and does not pass ping on', () => {
    const t = setup();
    t.s.start();
    t.last().serverOpen();
    t.last().serverSend({ type: 'ping' });
    assert.deepEqual(t.last().sent.map((x) => JSON.parse(x)), [{ type: 'pong' }]);
    assert.equal(t.messages.length, 0);
  });

  test('close 1008 stops for good and tells the page', () => {
    const t = setup();
    t.s.start();
    t.last().serverOpen();
    t.last().serverClose(1008, 'Unauthorized');
    assert.equal(t.unauthorized, 1);
    assert.equal(t.lastStatus().state, 'stopped');
    assert.equal(t.lastStatus().reason, 'unauthorized');
    assert.equal(t.clock.timerCount, 0, 'no reconnect timer');
    t.clock.advance(10 * 60_000);
    t.target.dispatchEvent(new Event('online'));
    t.doc.dispatchEvent(new Event('visibilitychange'));
    assert.equal(t.s.reconnectNow(), false);
    assert.equal(t.WS.sockets.length, 1, 'never reconnects after 1008');
  });

  test('close 1008 during the handshake phase (never opened) also stops', () => {
    const t = setup();
    t.s.start();
    t.last().serverClose(1008);
    t.clock.advance(60_000);
    assert.equal(t.WS.sockets.length, 1);
  });

  test('1001, 1012, 1013 and 1006 back off and reconnect', () => {
    for (const code of [1001, 1012, 1013, 1006, 1000, 1011]) {
      const t = setup();
      t.s.start();
      t.last().serverOpen();
      t.last().serverClose(code);
      assert.equal(t.lastStatus().state, 'waiting', `code ${code}`);
      assert.equal(t.lastStatus().code, code);
      t.clock.advance(1000);
      assert.equal(t.WS.sockets.length, 2, `code ${code} reconnects`);
    }
  });

  test('session_expired: never reconnects, even when the server then closes 1000', () => {
    const t = setup();
    t.s.start();
    t.last().serverOpen();
    const sock = t.last();
    sock.serverSend({ type: 'session_expired' });
    assert.equal(t.expired, 1);
    assert.equal(t.lastStatus().reason, 'expired');
    assert.equal(sock.closedByClient, 1000, 'client closes its side too');
    sock.serverClose(1000);
    t.clock.advance(10 * 60_000);
    t.target.dispatchEvent(new Event('online'));
    assert.equal(t.WS.sockets.length, 1);
    assert.equal(t.clock.timerCount, 0);
  });

  test('initial replaces the whole state; other messages reduce it', () => {
    const t = setup({ reduce: usersStoreReducer, initialState: null });
    t.s.start();
    t.last().serverOpen();
    t.last().serverSend({ type: 'initial', data: [{ id: 1, first_name: 'A' }, { id: 2, first_name: 'B' }] });
    t.last().serverSend({ type: 'user_added', data: { id: 3, first_name: 'C' } });
    assert.deepEqual([...t.s.state.values()].map((u) => u.id), [1, 2, 3]);
    // Reconnect: the server's new truth no longer has 1 and 3.
    t.last().serverClose(1001);
    t.clock.advance(1000);
    t.last().serverOpen();
    t.last().serverSend({ type: 'initial', data: [{ id: 2, first_name: 'B2' }] });
    assert.deepEqual([...t.s.state.values()].map((u) => [u.id, u.first_name]), [[2, 'B2']]);
  });

  test('unknown types, non-JSON and odd payloads are ignored without breaking', () => {
    const t = setup({ reduce: usersStoreReducer, initialState: null });
    t.s.start();
    t.last().serverOpen();
    t.last().serverSend({ type: 'initial', data: [{ id: 1 }] });
    const before = t.s.state;
    const size = before.size;
    t.last().serverSend({ type: 'something_new', data: { id: 99 } });
    t.last().serverSend('not json at all');
    t.last().serverSend('null');
    t.last().serverSend('[1,2]');
    t.last().serverSend({ no_type: true });
    t.last().serverSend({ type: 'user_update', data: null });
    assert.equal(t.s.state, before);
    assert.equal(t.s.state.size, size);
    assert.equal(t.lastStatus().state, 'open');
    // Still working afterwards.
    t.last().serverSend({ type: 'user_added', data: { id: 2 } });
    assert.deepEqual([...t.s.state.values()].map((u) => u.id), [1, 2]);
    t.last().serverSend({ type: 'ping' });
    assert.equal(t.last().sent.length, 1);
  });

  test('a throwing page callback does not break the stream', () => {
    const warn = console.warn;
    console.warn = () => {};
    try {
      const t = setup({ onMessage: () => { throw new Error('boom'); } });
      t.s.start();
      t.last().serverOpen();
      t.last().serverSend({ type: 'initial', data: [] });
      t.last().serverSend({ type: 'ping' });
      assert.equal(t.last().sent.length, 1);
    } finally {
      console.warn = warn;
    }
  });

  test('online event and visible tab reconnect at once while waiting', () => {
    const t = setup();
    t.s.start();
    t.last().serverClose(1006);
    t.last(); // still one socket
    assert.equal(t.WS.sockets.length, 1);
    t.target.dispatchEvent(new Event('online'));
    assert.equal(t.WS.sockets.length, 2, 'online → reconnect now');
    assert.equal(t.clock.timerCount, 0, 'old timer cleared');

    t.last().serverClose(1006);
    t.doc.visibilityState = 'hidden';
    t.doc.dispatchEvent(new Event('visibilitychange'));
    assert.equal(t.WS.sockets.length, 2, 'hidden tab does not reconnect early');
    t.doc.visibilityState = 'visible';
    t.doc.dispatchEvent(new Event('visibilitychange'));
    assert.equal(t.WS.sockets.length, 3, 'visible again → reconnect now');

    // While connected, these events do nothing.
    t.last().serverOpen();
    t.target.dispatchEvent(new Event('online'));
    assert.equal(t.WS.sockets.length, 3);
  });

  test('stop() closes the socket and never reconnects', () => {
    const t = setup();
    t.s.start();
    t.last().serverOpen();
    const sock = t.last();
    t.s.stop();
    assert.equal(sock.closedByClient, 1000);
    sock.serverClose(1000); // handlers are detached, nothing happens
    t.clock.advance(60_000);
    t.target.dispatchEvent(new Event('online'));
    assert.equal(t.WS.sockets.length, 1);
  });

  test('a WebSocket constructor that throws is treated as a failed connection', () => {
    const clock = fakeClock();
    let calls = 0;
    function Boom() {
      calls++;
      throw new Error('blocked');
    }
    const statuses = [];
    const s = createStream({
      url: 'ws://x', WebSocket: Boom, setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout,
      now: clock.now, random: () => 0.5, eventTarget: null, document: null, onStatus: (st) => statuses.push(st),
    });
    s.start();
    assert.equal(statuses.at(-1).state, 'waiting');
    clock.advance(500);
    assert.equal(calls, 2);
    s.stop();
  });

  test('send() only while open', () => {
    const t = setup();
    t.s.start();
    assert.equal(t.s.send({ a: 1 }), false);
    t.last().serverOpen();
    assert.equal(t.s.send({ a: 1 }), true);
    assert.deepEqual(t.last().sent, ['{"a":1}']);
  });

  test('url may be a function, called on every connect', () => {
    let n = 0;
    const t = setup({ url: () => `ws://h/s?n=${++n}` });
    t.s.start();
    t.last().serverClose(1006);
    t.clock.advance(1000);
    assert.deepEqual(t.WS.sockets.map((x) => x.url), ['ws://h/s?n=1', 'ws://h/s?n=2']);
  });

  test('stale sockets cannot disturb the current one', () => {
    const t = setup();
    t.s.start();
    const first = t.last();
    first.serverClose(1006);
    t.clock.advance(1000);
    const second = t.last();
    second.serverOpen();
    first.serverClose(1008); // late event from the dead socket
    assert.equal(t.lastStatus().state, 'open');
    assert.equal(t.unauthorized, 0);
  });
});

describe('resume (contract v2): epoch and seq', () => {
  const user = (id, extra = {}) => ({ id, first_name: `F${id}`, ...extra });
  const ids = (t) => [...t.s.state.values()].map((u) => u.id).sort((a, b) => a - b);
  function resuming() {
    const t = setup({ reduce: usersStoreReducer, initialState: null, resume: true });
    t.s.start();
    t.last().serverOpen();
    t.last().serverSend({ type: 'initial', epoch: 'E1', seq: 10, data: [user(1), user(2)] });
    return t;
  }
  function drop(t, code = 1006) {
    const n = t.WS.sockets.length;
    t.last().serverClose(code);
    t.clock.advance(30_000); // past any backoff
    assert.equal(t.WS.sockets.length, n + 1, 'one reconnect');
    t.last().serverOpen();
  }

  test('remembers epoch and seq and reconnects with ?epoch=&since=', () => {
    const t = resuming();
    assert.equal(t.WS.sockets[0].url, 'ws://127.0.0.1:9/admin/stream');
    t.last().serverSend({ type: 'user_added', seq: 11, data: user(3) });
    t.last().serverSend({ type: 'presence', sessions: {}, admins: [] }); // no seq: never numbered
    assert.deepEqual(t.s.position, { epoch: 'E1', seq: 11 });
    drop(t);
    assert.equal(t.last().url, 'ws://127.0.0.1:9/admin/stream?epoch=E1&since=11');
  });

  test('the epoch is URL-encoded and a URL with a query gets &', () => {
    const t = setup({ url: 'ws://h/admin/stream?x=1', reduce: usersStoreReducer, initialState: null, resume: true });
    t.s.start();
    t.last().serverOpen();
    t.last().serverSend({ type: 'initial', epoch: 'a b&c', seq: 0, data: [] });
    drop(t);
    assert.equal(t.last().url, 'ws://h/admin/stream?x=1&epoch=a%20b%26c&since=0');
  });

  test('resumed keeps the state and applies the missed events in order', () => {
    const t = resuming();
    const store = t.s.state;
    drop(t);
    t.last().serverSend({ type: 'resumed', epoch: 'E1', seq: 10 });
    t.last().serverSend({ type: 'user_added', seq: 11, data: user(3) });
    t.last().serverSend({ type: 'user_deleted', seq: 12, data: { id: 1 } });
    t.last().serverSend({ type: 'user_update', seq: 13, data: user(2, { first_name: 'Two' }) });
    assert.equal(t.s.state, store, 'no replacement on resume');
    assert.deepEqual(ids(t), [2, 3]);
    assert.equal(t.s.state.get(2).first_name, 'Two');
    assert.deepEqual(t.s.position, { epoch: 'E1', seq: 13 });
    assert.ok(t.messages.some(([m]) => m.type === 'resumed'), 'the page hears of the resume');
  });

  test('duplicates and older events are dropped', () => {
    const t = resuming();
    t.last().serverSend({ type: 'user_added', seq: 11, data: user(3) });
    t.last().serverSend({ type: 'user_deleted', seq: 11, data: { id: 3 } }); // a repeat of 11
    t.last().serverSend({ type: 'user_deleted', seq: 9, data: { id: 1 } }); // older than initial
    assert.deepEqual(ids(t), [1, 2, 3]);
    assert.equal(t.s.position.seq, 11);
    const applied = t.messages.filter(([m]) => m.type !== 'initial' && m.seq != null).map(([m]) => m.seq);
    assert.deepEqual(applied, [11], 'the page never sees a dropped event');
  });

  test('initial replaces everything, also after a resume, and resets the position', () => {
    const t = resuming();
    drop(t);
    t.last().serverSend({ type: 'initial', epoch: 'E2', seq: 3, data: [user(7)] });
    assert.deepEqual(ids(t), [7]);
    assert.deepEqual(t.s.position, { epoch: 'E2', seq: 3 });
    drop(t);
    assert.match(t.last().url, /epoch=E2&since=3$/);
  });

  test('a gap in the numbers forgets the position and reconnects for a fresh initial', () => {
    const t = resuming();
    const gapped = t.last();
    t.last().serverSend({ type: 'user_added', seq: 13, data: user(3) }); // 11 and 12 missing
    assert.equal(gapped.closedByClient, 4000);
    assert.equal(ids(t).includes(3), false, 'the event after the gap is not applied');
    assert.deepEqual(t.s.position, { epoch: null, seq: null });
    assert.equal(t.lastStatus().state, 'waiting');
    t.clock.advance(30_000);
    assert.equal(t.last().url, 'ws://127.0.0.1:9/admin/stream', 'no since: a fresh initial');
    gapped.serverSend({ type: 'user_added', seq: 14, data: user(4) }); // late frame of the old socket
    assert.equal(ids(t).includes(4), false);
  });

  test('a resumed that names another position is not trusted', () => {
    const t = resuming();
    drop(t);
    const s = t.last();
    s.serverSend({ type: 'resumed', epoch: 'E1', seq: 9 });
    assert.equal(s.closedByClient, 4000);
    assert.deepEqual(t.s.position, { epoch: null, seq: null });
  });

  test('without resume: true nothing is remembered (the session page)', () => {
    const t = setup({ reduce: usersStoreReducer, initialState: null });
    t.s.start();
    t.last().serverOpen();
    t.last().serverSend({ type: 'initial', epoch: 'E1', seq: 10, data: [] });
    t.last().serverSend({ type: 'user_added', seq: 30, data: user(3) });
    assert.deepEqual(ids(t), [3]);
    drop(t);
    assert.equal(t.last().url, 'ws://127.0.0.1:9/admin/stream');
  });

  test('a v1 server (no epoch or seq) works as before', () => {
    const t = setup({ reduce: usersStoreReducer, initialState: null, resume: true });
    t.s.start();
    t.last().serverOpen();
    t.last().serverSend({ type: 'initial', data: [user(1)] });
    t.last().serverSend({ type: 'user_added', data: user(2) });
    assert.deepEqual(ids(t), [1, 2]);
    drop(t);
    assert.equal(t.last().url, 'ws://127.0.0.1:9/admin/stream');
  });
});
