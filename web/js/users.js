// The dashboard's model of the invitee list, and the pure view over it (filter, sort, page).
// No DOM: unit-tested under node (web/test/users.test.mjs).
//
// UserStore holds every user by id and is changed in place by the admin stream's events (the
// stream client drops duplicates and replaces the whole store on `initial`), so an update
// costs O(1) however many invitees there are. Each apply() reports what changed — the page
// uses that to touch one row instead of redrawing the table.
//
// The view (selectPage) is recomputed from the store: filter by search words and status,
// sort by a column, cut out one page. With 5,000 users that is a few milliseconds; the page
// skips even that when an update cannot move a row (sameSlot).

import { STATUSES, parseTimer, fullName } from './util.js';

export const PAGE_SIZE = 50;

/** Columns the table sorts by; `created` (newest first) is the default. */
export const SORT_KEYS = Object.freeze(['name', 'status', 'created', 'session']);

/** Attach local bookkeeping to a user received at `now` (ms): countdown base, sort keys. */
function stamp(user, now) {
  return {
    ...user,
    timer_base: parseTimer(user.session_timer),
    timer_at: now,
    name_key: fullName(user).toLocaleLowerCase(),
  };
}

function isUser(u) {
  return u != null && typeof u === 'object' && u.id != null;
}

export class UserStore {
  /** @param {object[]} list users as in `initial` @param {number} now ms */
  constructor(list = [], now = 0) {
    this.byId = new Map();
    for (const u of list) if (isUser(u)) this.byId.set(u.id, stamp(u, now));
    /** What the last apply() did: {kind:'reset'|'upsert'|'delete'|'none', id, before, after}. */
    this.change = { kind: 'reset' };
  }

  get size() {
    return this.byId.size;
  }

  get(id) {
    return this.byId.get(id);
  }

  values() {
    return this.byId.values();
  }

  /**
   * Apply one admin-stream event at `now`. `user_added` and `user_update` insert or replace
   * (merging, so fields a newer server adds survive); `user_deleted` removes; anything else,
   * or malformed data, changes nothing.
   */
  apply(msg, now = 0) {
    this.change = { kind: 'none' };
    if (!msg || typeof msg !== 'object') return this.change;
    switch (msg.type) {
      case 'user_added':
      case 'user_update': {
        if (!isUser(msg.data)) return this.change;
        const before = this.byId.get(msg.data.id);
        const after = stamp(before ? { ...before, ...msg.data } : msg.data, now);
        this.byId.set(after.id, after);
        this.change = { kind: 'upsert', id: after.id, before, after };
        return this.change;
      }
      case 'user_deleted': {
        const id = msg.data && msg.data.id;
        const before = this.byId.get(id);
        if (!before) return this.change;
        this.byId.delete(id);
        this.change = { kind: 'delete', id, before };
        return this.change;
      }
      default:
        return this.change;
    }
  }
}

/** Stream reducer: `initial` builds a new store; every other message changes the store in place. */
export function usersStoreReducer(state, msg, now = 0) {
  if (msg && msg.type === 'initial') {
    return Array.isArray(msg.data) ? new UserStore(msg.data, now) : state || new UserStore([], now);
  }
  const store = state instanceof UserStore ? state : new UserStore([], now);
  store.apply(msg, now);
  return store;
}

/** Counts per status, plus `total`. Unknown statuses count only in the total. */
export function countByStatus(users) {
  const counts = { total: 0 };
  for (const s of STATUSES) counts[s] = 0;
  for (const u of users) {
    counts.total += 1;
    if (STATUSES.includes(u.status)) counts[u.status] += 1;
  }
  return counts;
}

/** Lower-cased search words of a query. */
export function searchWords(query) {
  return String(query || '').toLowerCase().split(/\s+/).filter(Boolean);
}

/** Whether `u` passes the filter: its status (if one is chosen) and every search word. */
export function matches(u, words, status) {
  if (status && u.status !== status) return false;
  if (words.length === 0) return true;
  const hay = `${u.name_key || fullName(u).toLowerCase()} ${u.email || ''} ${u.status || ''} ${statusWords(u.status)}`.toLowerCase();
  return words.every((w) => hay.includes(w));
}

// "in progress" as well as "in_progress", so a search for what the badge says finds it.
function statusWords(status) {
  return String(status || '').replace(/_/g, ' ');
}

const byId = (a, b) => b.id - a.id; // newest first, the tie-break of every sort

/** Comparator for column `key` in direction `dir` ('asc' | 'desc'). Missing values go last. */
export function comparator(key, dir = 'asc') {
  const sign = dir === 'desc' ? -1 : 1;
  const cmp = (x, y) => (x < y ? -1 : x > y ? 1 : 0);
  switch (key) {
    case 'name':
      return (a, b) => sign * cmp(a.name_key, b.name_key) || byId(a, b);
    case 'status':
      return (a, b) => sign * (rank(a.status) - rank(b.status)) || byId(a, b);
    case 'session':
      return (a, b) => {
        const x = a.session_started_at || null;
        const y = b.session_started_at || null;
        if (x === y) return byId(a, b);
        if (x == null) return 1;
        if (y == null) return -1;
        return sign * cmp(x, y) || byId(a, b);
      };
    case 'created':
    default:
      // Ids grow with creation time, so they order by it exactly (and exist on v1 servers).
      return (a, b) => sign * (a.id - b.id);
  }
}

function rank(status) {
  const i = STATUSES.indexOf(status);
  return i === -1 ? STATUSES.length : i;
}

/**
 * One page of the filtered, sorted list.
 * @param {Iterable<object>} users
 * @param {{query?: string, status?: string|null, sort?: string, dir?: string, page?: number, pageSize?: number}} v
 * @returns {{rows: object[], matching: number, page: number, pages: number, first: number, last: number}}
 *   `page` is clamped into range (a filter that shrinks the list moves you back); `first` and
 *   `last` are the 1-based positions shown ("Showing first–last of matching").
 */
export function selectPage(users, v = {}) {
  const words = searchWords(v.query);
  const pageSize = Math.max(1, v.pageSize || PAGE_SIZE);
  const list = [];
  for (const u of users) if (matches(u, words, v.status || null)) list.push(u);
  list.sort(comparator(v.sort || 'created', v.dir || 'desc'));
  const pages = Math.max(1, Math.ceil(list.length / pageSize));
  const page = Math.min(Math.max(1, Math.floor(v.page) || 1), pages);
  const start = (page - 1) * pageSize;
  const rows = list.slice(start, start + pageSize);
  return {
    rows,
    matching: list.length,
    page,
    pages,
    first: rows.length ? start + 1 : 0,
    last: start + rows.length,
  };
}

/**
 * Whether replacing `before` by `after` keeps the user in the same place of the view `v`:
 * same filter verdict and same sort key. Then the page's membership and order are unchanged
 * and only that row needs redrawing.
 */
export function sameSlot(before, after, v = {}) {
  if (!before || !after) return false;
  const words = searchWords(v.query);
  const status = v.status || null;
  if (matches(before, words, status) !== matches(after, words, status)) return false;
  switch (v.sort || 'created') {
    case 'name':
      return before.name_key === after.name_key;
    case 'status':
      return before.status === after.status;
    case 'session':
      return (before.session_started_at || null) === (after.session_started_at || null);
    default:
      return true;
  }
}
