import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  UserStore, usersStoreReducer, countByStatus, selectPage, sameSlot, comparator, matches,
  searchWords, PAGE_SIZE,
} from '../js/users.js';

const u = (id, extra = {}) => ({
  id, first_name: `F${id}`, last_name: `L${id}`, email: `u${id}@example.com`, status: 'invited',
  progress: '0/10', invite_url: `http://h/session?token=t${id}`, token_valid: true,
  session_timer: null, transcript: null, summary: null, ...extra,
});

const ids = (page) => page.rows.map((x) => x.id);

describe('UserStore and its reducer', () => {
  test('initial builds a new store; events change it in place and say what changed', () => {
    const s = usersStoreReducer(null, { type: 'initial', data: [u(2), u(1)] }, 50);
    assert.ok(s instanceof UserStore);
    assert.equal(s.size, 2);
    assert.equal(s.get(1).timer_at, 50);
    const same = usersStoreReducer(s, { type: 'user_added', data: u(3) }, 60);
    assert.equal(same, s, 'the same store object');
    assert.deepEqual([s.change.kind, s.change.id, s.change.before], ['upsert', 3, undefined]);
    usersStoreReducer(s, { type: 'user_update', data: u(1, { status: 'in_progress', session_timer: '29:59' }) }, 7000);
    assert.equal(s.change.kind, 'upsert');
    assert.equal(s.change.before.status, 'invited');
    assert.equal(s.get(1).timer_base, 1799);
    assert.equal(s.get(1).timer_at, 7000);
    assert.equal(s.get(2).timer_at, 50, 'other users untouched');
    usersStoreReducer(s, { type: 'user_deleted', data: { id: 2 } });
    assert.deepEqual([s.change.kind, s.change.id], ['delete', 2]);
    assert.equal(s.size, 2);
    const fresh = usersStoreReducer(s, { type: 'initial', data: [u(9)] });
    assert.notEqual(fresh, s, 'initial replaces everything');
    assert.deepEqual([...fresh.values()].map((x) => x.id), [9]);
  });

  test('updates merge (unknown future fields survive) and an added duplicate replaces', () => {
    const s = new UserStore([u(1, { future_field: 'x' })]);
    s.apply({ type: 'user_update', data: { id: 1, status: 'completed' } });
    assert.equal(s.get(1).future_field, 'x');
    assert.equal(s.get(1).status, 'completed');
    s.apply({ type: 'user_added', data: u(1, { first_name: 'Again' }) });
    assert.equal(s.size, 1);
    assert.equal(s.get(1).first_name, 'Again');
  });

  test('malformed or unknown messages change nothing', () => {
    const s = new UserStore([u(1)]);
    for (const m of [
      { type: 'nope' }, { type: 'user_added' }, { type: 'user_update', data: { name: 'no id' } },
      { type: 'user_deleted' }, { type: 'user_deleted', data: { id: 42 } }, { type: 'presence', sessions: {} }, null, 42,
    ]) {
      assert.equal(s.apply(m).kind, 'none', JSON.stringify(m));
    }
    assert.equal(s.size, 1);
    assert.equal(usersStoreReducer(s, { type: 'initial', data: 'x' }), s);
  });
});

describe('counts and filters', () => {
  const list = [
    u(1, { status: 'invited', first_name: 'Ada', last_name: 'Lovelace', email: 'ada@example.com' }),
    u(2, { status: 'in_progress', first_name: 'Alan', last_name: 'Turing', email: 'alan@example.org' }),
    u(3, { status: 'completed', first_name: 'Grace', last_name: 'Hopper', email: 'grace@navy.mil' }),
    u(4, { status: 'expired' }),
    u(5, { status: 'in_progress' }),
    u(6, { status: 'weird' }),
  ];
  const store = new UserStore(list);
  const all = [...store.values()];

  test('countByStatus', () => {
    assert.deepEqual(countByStatus(all), { total: 6, invited: 1, in_progress: 2, completed: 1, expired: 1 });
    assert.deepEqual(countByStatus([]), { total: 0, invited: 0, in_progress: 0, completed: 0, expired: 0 });
  });

  test('search words match name, email and the status in words', () => {
    const find = (q, status = null) => all.filter((x) => matches(x, searchWords(q), status)).map((x) => x.id);
    assert.deepEqual(find(''), [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(find('ada'), [1]);
    assert.deepEqual(find('EXAMPLE.org'), [2]);
    assert.deepEqual(find('in_progress'), [2, 5]);
    assert.deepEqual(find('in progress'), [2, 5]);
    assert.deepEqual(find('grace hopper'), [3]);
    assert.deepEqual(find('zzz'), []);
    assert.deepEqual(find('', 'in_progress'), [2, 5], 'status chip');
    assert.deepEqual(find('alan', 'in_progress'), [2]);
  });
});

describe('sorting', () => {
  const list = [
    u(1, { first_name: 'zoe', last_name: 'A', status: 'completed', session_started_at: '2026-12-01T10:00:00Z' }),
    u(2, { first_name: 'Adam', last_name: 'B', status: 'invited' }),
    u(3, { first_name: 'mia', last_name: 'C', status: 'in_progress', session_started_at: '2026-12-02T10:00:00Z' }),
    u(4, { first_name: 'Adam', last_name: 'B', status: 'expired' }),
  ];
  const all = [...new UserStore(list).values()];
  const order = (key, dir) => all.slice().sort(comparator(key, dir)).map((x) => x.id);

  test('created: newest first by default, oldest first ascending', () => {
    assert.deepEqual(order('created', 'desc'), [4, 3, 2, 1]);
    assert.deepEqual(order('created', 'asc'), [1, 2, 3, 4]);
  });
  test('name: case-insensitive, ties newest first', () => {
    assert.deepEqual(order('name', 'asc'), [4, 2, 3, 1]);
    assert.deepEqual(order('name', 'desc'), [1, 3, 4, 2]);
  });
  test('status: in the order of the counts', () => {
    assert.deepEqual(order('status', 'asc'), [2, 3, 1, 4]);
    assert.deepEqual(order('status', 'desc'), [4, 1, 3, 2]);
  });
  test('session time: never-started last in both directions', () => {
    assert.deepEqual(order('session', 'asc'), [1, 3, 4, 2]);
    assert.deepEqual(order('session', 'desc'), [3, 1, 4, 2]);
  });
});

describe('pagination', () => {
  const many = new UserStore(Array.from({ length: 5000 }, (_, i) => u(i + 1)));

  test('50 a page, newest first, page clamped into range', () => {
    const p1 = selectPage(many.values(), {});
    assert.equal(PAGE_SIZE, 50);
    assert.equal(p1.rows.length, 50);
    assert.deepEqual([p1.page, p1.pages, p1.matching, p1.first, p1.last], [1, 100, 5000, 1, 50]);
    assert.equal(ids(p1)[0], 5000);
    const p100 = selectPage(many.values(), { page: 100 });
    assert.deepEqual([p100.first, p100.last, ids(p100).at(-1)], [4951, 5000, 1]);
    assert.equal(selectPage(many.values(), { page: 999 }).page, 100);
    assert.equal(selectPage(many.values(), { page: -3 }).page, 1);
    assert.equal(selectPage(many.values(), { page: 'x' }).page, 1);
  });

  test('a filter that shrinks the list moves back to its last page', () => {
    const p = selectPage(many.values(), { query: 'u4999@', page: 7 });
    assert.deepEqual([p.page, p.pages, p.matching, ids(p)], [1, 1, 1, [4999]]);
    const none = selectPage(many.values(), { query: 'nobody' });
    assert.deepEqual([none.rows.length, none.first, none.last, none.pages], [0, 0, 0, 1]);
  });

  test('a page of 5,000 is computed quickly', () => {
    const t0 = performance.now();
    for (let i = 0; i < 20; i++) selectPage(many.values(), { sort: 'name', dir: i % 2 ? 'asc' : 'desc', page: i });
    const each = (performance.now() - t0) / 20;
    assert.ok(each < 250, `selectPage over 5,000 took ${each.toFixed(1)} ms`);
  });
});

describe('sameSlot: when an update can redraw just its row', () => {
  const s = new UserStore([u(1, { first_name: 'Ada' })]);
  const before = s.get(1);
  const after = (extra) => {
    const t = new UserStore([{ ...before, ...extra }]);
    return t.get(1);
  };
  test('progress or timer changes keep the slot under every sort', () => {
    for (const sort of ['created', 'name', 'status', 'session']) {
      assert.ok(sameSlot(before, after({ progress: '3/10' }), { sort }), sort);
    }
  });
  test('a change of the sort key or of the filter verdict does not', () => {
    assert.ok(!sameSlot(before, after({ first_name: 'Zed' }), { sort: 'name' }));
    assert.ok(sameSlot(before, after({ first_name: 'Zed' }), { sort: 'created' }));
    assert.ok(!sameSlot(before, after({ status: 'in_progress' }), { sort: 'status' }));
    assert.ok(!sameSlot(before, after({ status: 'in_progress' }), { status: 'invited' }));
    assert.ok(!sameSlot(before, after({ first_name: 'Zed' }), { query: 'ada' }));
    assert.ok(!sameSlot(before, after({ session_started_at: '2026-01-01T00:00:00Z' }), { sort: 'session' }));
    assert.ok(!sameSlot(undefined, before, {}));
  });
});
