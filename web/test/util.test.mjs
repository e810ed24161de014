import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  formatCountdown, parseTimer, parseProgress, remainingAt, usersReducer, countByStatus,
  filterUsers, fullName, sessionReducer, streamUrl, secondsUntil,
} from '../js/util.js';

const u = (id, extra = {}) => ({
  id, first_name: `F${id}`, last_name: `L${id}`, email: `u${id}@example.com`, status: 'invited',
  progress: '0/10', invite_url: `http://h/session?token=t${id}`, token_valid: true,
  session_timer: null, transcript: null, summary: null, ...extra,
});

describe('countdown helpers', () => {
  test('formatCountdown', () => {
    assert.equal(formatCountdown(0), '00:00');
    assert.equal(formatCountdown(5), '00:05');
    assert.equal(formatCountdown(59), '00:59');
    assert.equal(formatCountdown(60), '01:00');
    assert.equal(formatCountdown(754), '12:34');
    assert.equal(formatCountdown(1800), '30:00');
    assert.equal(formatCountdown(5400), '90:00');
    assert.equal(formatCountdown(61.9), '01:01');
    assert.equal(formatCountdown(-3), '00:00');
    assert.equal(formatCountdown(NaN), '00:00');
    assert.equal(formatCountdown(null), '00:00');
  });

  test('parseTimer', () => {
    assert.equal(parseTimer('12:34'), 754);
    assert.equal(parseTimer('00:00'), 0);
    assert.equal(parseTimer('90:00'), 5400);
    assert.equal(parseTimer('1:00:05'), 3605);
    assert.equal(parseTimer(null), null);
    assert.equal(parseTimer(''), null);
    assert.equal(parseTimer('12'), null);
    assert.equal(parseTimer('ab:cd'), null);
    assert.equal(parseTimer('-1:00'), null);
  });

  test('parseTimer and formatCountdown round-trip', () => {
    for (let s = 0; s < 7200; s += 37) assert.equal(parseTimer(formatCountdown(s)), s);
  });

  test('remainingAt ticks down locally and never goes negative', () => {
    assert.equal(remainingAt(null, 0, 5000), null);
    assert.equal(remainingAt(100, 1000, 1000), 100);
    assert.equal(remainingAt(100, 1000, 1999), 100);
    assert.equal(remainingAt(100, 1000, 2000), 99);
    assert.equal(remainingAt(100, 1000, 61_000), 40);
    assert.equal(remainingAt(3, 0, 10_000), 0);
    assert.equal(remainingAt(30, 5000, 4000), 30, 'clock going backwards does not add time');
  });

  test('secondsUntil rounds up', () => {
    assert.equal(secondsUntil(5000, 0), 5);
    assert.equal(secondsUntil(4001, 0), 5);
    assert.equal(secondsUntil(0, 100), 0);
  });

  test('parseProgress', () => {
    assert.deepEqual(parseProgress('3/10'), { answered: 3, total: 10 });
    assert.deepEqual(parseProgress(' 0 / 0 '), { answered: 0, total: 0 });
    assert.deepEqual(parseProgress('x'), { answered: 0, total: 0 });
    assert.deepEqual(parseProgress(undefined), { answered: 0, total: 0 });
  });
});

describe('usersReducer', () => {
  test('initial replaces everything and keeps the server order', () => {
    const s0 = [u(9), u(8)];
    const s1 = usersReducer(s0, { type: 'initial', data: [u(3), u(2), u(1)] }, 50);
    assert.deepEqual(s1.map((x) => x.id), [3, 2, 1]);
    assert.ok(s1.every((x) => x.timer_at === 50));
  });

  test('user_added goes to the top and is de-duplicated by id', () => {
    let s = usersReducer([], { type: 'initial', data: [u(2), u(1)] });
    s = usersReducer(s, { type: 'user_added', data: u(3) });
    assert.deepEqual(s.map((x) => x.id), [3, 2, 1]);
    s = usersReducer(s, { type: 'user_added', data: u(3, { first_name: 'Again' }) });
    assert.deepEqual(s.map((x) => x.id), [3, 2, 1]);
    assert.equal(s[0].first_name, 'Again');
  });

  test('user_update replaces in place and stamps the countdown', () => {
    let s = usersReducer([], { type: 'initial', data: [u(2), u(1)] }, 0);
    s = usersReducer(s, { type: 'user_update', data: u(1, { status: 'in_progress', session_timer: '29:59', progress: '1/10' }) }, 7000);
    assert.deepEqual(s.map((x) => x.id), [2, 1]);
    assert.equal(s[1].status, 'in_progress');
    assert.equal(s[1].timer_base, 1799);
    assert.equal(s[1].timer_at, 7000);
    assert.equal(s[0].timer_at, 0, 'other rows untouched');
  });

  test('user_update for an unknown id is kept, at the top', () => {
    const s = usersReducer([u(1)], { type: 'user_update', data: u(5) });
    assert.deepEqual(s.map((x) => x.id), [5, 1]);
  });

  test('user_deleted removes by id; unknown id is a no-op', () => {
    const s0 = [u(3), u(2), u(1)];
    const s1 = usersReducer(s0, { type: 'user_deleted', data: { id: 2 } });
    assert.deepEqual(s1.map((x) => x.id), [3, 1]);
    assert.equal(usersReducer(s1, { type: 'user_deleted', data: { id: 42 } }), s1);
  });

  test('unknown or malformed messages return the same state', () => {
    const s = [u(1)];
    for (const m of [
      { type: 'nope' }, { type: 'initial', data: 'x' }, { type: 'user_added' },
      { type: 'user_update', data: { name: 'no id' } }, { type: 'user_deleted' }, null, 42,
    ]) assert.equal(usersReducer(s, m), s);
    assert.deepEqual(usersReducer(undefined, { type: 'nope' }), []);
  });

  test('does not mutate its input', () => {
    const s0 = Object.freeze([Object.freeze(u(1))]);
    usersReducer(s0, { type: 'user_update', data: u(1, { status: 'completed' }) });
    usersReducer(s0, { type: 'user_added', data: u(2) });
    usersReducer(s0, { type: 'user_deleted', data: { id: 1 } });
  });
});

describe('counts, filter, names', () => {
  const list = [
    u(1, { status: 'invited', first_name: 'Ada', last_name: 'Lovelace', email: 'ada@example.com' }),
    u(2, { status: 'in_progress', first_name: 'Alan', last_name: 'Turing', email: 'alan@example.org' }),
    u(3, { status: 'completed', first_name: 'Grace', last_name: 'Hopper', email: 'grace@navy.mil' }),
    u(4, { status: 'expired' }),
    u(5, { status: 'in_progress' }),
    u(6, { status: 'weird' }),
  ];
  test('countByStatus', () => {
    assert.deepEqual(countByStatus(list), { total: 6, invited: 1, in_progress: 2, completed: 1, expired: 1 });
    assert.deepEqual(countByStatus([]), { total: 0, invited: 0, in_progress: 0, completed: 0, expired: 0 });
  });
  test('filterUsers', () => {
    assert.equal(filterUsers(list, ''), list);
    assert.deepEqual(filterUsers(list, 'ada').map((x) => x.id), [1]);
    assert.deepEqual(filterUsers(list, 'EXAMPLE.org').map((x) => x.id), [2]);
    assert.deepEqual(filterUsers(list, 'in_progress').map((x) => x.id), [2, 5]);
    assert.deepEqual(filterUsers(list, 'grace hopper').map((x) => x.id), [3]);
    assert.deepEqual(filterUsers(list, 'zzz'), []);
  });
  test('fullName', () => {
    assert.equal(fullName({ first_name: 'Ada', last_name: 'Lovelace' }), 'Ada Lovelace');
    assert.equal(fullName({ first_name: '', last_name: '', email: 'a@b.c' }), 'a@b.c');
  });
});

describe('sessionReducer', () => {
  test('time_update, progress, session_expired, unknown', () => {
    let s = sessionReducer(undefined, null, 0);
    assert.equal(s.remaining, null);
    s = sessionReducer(s, { type: 'time_update', remaining_seconds: 120 }, 1000);
    assert.equal(s.remaining, 120);
    assert.equal(s.at, 1000);
    s = sessionReducer(s, { type: 'progress', questions_answered: 2, questions_total: 10 }, 2000);
    assert.equal(s.answered, 2);
    assert.equal(s.total, 10);
    assert.equal(s.at, 1000, 'progress does not move the countdown base');
    const same = sessionReducer(s, { type: 'whatever' }, 3000);
    assert.equal(same, s);
    assert.equal(sessionReducer(s, { type: 'time_update', remaining_seconds: 'x' }), s);
    s = sessionReducer(s, { type: 'session_expired' }, 4000);
    assert.equal(s.expired, true);
    assert.equal(s.remaining, 0);
  });
});

describe('streamUrl', () => {
  test('follows the page protocol and host', () => {
    assert.equal(streamUrl('/admin/stream', new URL('http://127.0.0.1:8080/')), 'ws://127.0.0.1:8080/admin/stream');
    assert.equal(streamUrl('/admin/stream', new URL('https://example.com/session?token=x')), 'wss://example.com/admin/stream');
    assert.equal(streamUrl('/session/3/stream?token=a%20b', new URL('http://[::1]:9/')), 'ws://[::1]:9/session/3/stream?token=a%20b');
  });
});
