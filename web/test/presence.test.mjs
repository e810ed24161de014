import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  emptyPresence, presenceReducer, fromBody, isOnline, onlineChanges, othersHere,
} from '../js/presence.js';

const frame = (sessions, admins) => ({ type: 'presence', sessions, admins });

describe('presence reducer', () => {
  test('a presence frame replaces the whole state', () => {
    let p = presenceReducer(undefined, frame({ 7: 1, 9: 2 }, [{ email: 'a@x.io', streams: 1 }]));
    assert.ok(isOnline(p, 7) && isOnline(p, 9) && !isOnline(p, 8));
    p = presenceReducer(p, frame({ 9: 1 }, []));
    assert.ok(!isOnline(p, 7) && isOnline(p, 9));
    assert.deepEqual(p.admins, []);
  });

  test('other messages leave it alone; malformed entries are skipped', () => {
    const p = presenceReducer(undefined, frame({ 1: 1 }, []));
    assert.equal(presenceReducer(p, { type: 'user_update', data: { id: 1 } }), p);
    assert.equal(presenceReducer(p, null), p);
    const q = fromBody({ sessions: { 3: 0, x: 1, 4: 'two', 5: 1 }, admins: [{ email: 'a@x.io', streams: 0 }, { streams: 1 }, null, { email: 'b@x.io', streams: 2 }] });
    assert.deepEqual([...q.sessions.entries()], [[5, 1]]);
    assert.deepEqual(q.admins, [{ email: 'b@x.io', streams: 2 }]);
    assert.deepEqual(fromBody(null), emptyPresence());
  });

  test('onlineChanges names only the rows whose dot must change', () => {
    const a = fromBody({ sessions: { 1: 1, 2: 1 } });
    const b = fromBody({ sessions: { 2: 3, 3: 1 } });
    assert.deepEqual(onlineChanges(a, b).sort(), [1, 3]);
    assert.deepEqual(onlineChanges(b, b), []);
    assert.deepEqual(onlineChanges(null, a).sort(), [1, 2]);
  });

  test('othersHere: everyone but me, case-insensitively, sorted', () => {
    const p = fromBody({ admins: [{ email: 'zed@x.io', streams: 1 }, { email: 'Me@X.io', streams: 2 }, { email: 'amy@x.io', streams: 1 }] });
    assert.deepEqual(othersHere(p, 'me@x.io'), ['amy@x.io', 'zed@x.io']);
    assert.deepEqual(othersHere(p, null), ['Me@X.io', 'amy@x.io', 'zed@x.io']);
    assert.deepEqual(othersHere(null, 'me@x.io'), []);
  });
});
