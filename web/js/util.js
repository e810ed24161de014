// Pure helpers shared by the pages. No DOM, no globals: everything here is
// unit-tested under node (web/test/util.test.mjs).

/** The four user statuses of the contract, in the order the dashboard shows them. */
export const STATUSES = Object.freeze(['invited', 'in_progress', 'completed', 'expired']);

/**
 * Seconds → "MM:SS". Minutes are not wrapped into hours: a 90-minute session reads "90:00",
 * the same shape the server uses for `session_timer`. Negative and non-finite inputs read "00:00".
 */
export function formatCountdown(seconds) {
  const s = Number.isFinite(seconds) && seconds > 0 ? Math.floor(seconds) : 0;
  const m = Math.floor(s / 60);
  const r = s % 60;
  return `${String(m).padStart(2, '0')}:${String(r).padStart(2, '0')}`;
}

/** "MM:SS" (or "H:MM:SS") → seconds; null for null, empty or malformed input. */
export function parseTimer(text) {
  if (typeof text !== 'string') return null;
  const parts = text.trim().split(':');
  if (parts.length < 2 || parts.length > 3) return null;
  let total = 0;
  for (const p of parts) {
    if (!/^\d+$/.test(p)) return null;
    total = total * 60 + Number(p);
  }
  return total;
}

/** "3/10" → {answered: 3, total: 10}; anything else → {answered: 0, total: 0}. */
export function parseProgress(text) {
  const m = typeof text === 'string' ? /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(text) : null;
  if (!m) return { answered: 0, total: 0 };
  return { answered: Number(m[1]), total: Number(m[2]) };
}

/**
 * Remaining whole seconds of a countdown that read `baseSeconds` at time `baseAt` (ms), seen at
 * `now` (ms). Never negative; null when there is no countdown.
 */
export function remainingAt(baseSeconds, baseAt, now) {
  if (baseSeconds == null || !Number.isFinite(baseSeconds)) return null;
  const elapsed = Math.max(0, Math.floor((now - baseAt) / 1000));
  return Math.max(0, baseSeconds - elapsed);
}

/** Attach local countdown bookkeeping to a user object received at time `now`. */
function stamp(user, now) {
  return { ...user, timer_base: parseTimer(user.session_timer), timer_at: now };
}

/**
 * Reducer for the admin stream. State: array of users, newest first (the server's order).
 * - `initial` replaces the whole list (every reconnect starts from the server's truth);
 * - `user_added` goes to the top, or replaces in place if that id is already known (so a row
 *   inserted from a POST answer and then announced by the stream is never doubled);
 * - `user_update` replaces in place (merging, so unknown future fields survive); an update for
 *   an id we never saw is put on top rather than lost;
 * - `user_deleted` removes by id;
 * - anything else (unknown types, malformed data) returns the same state object.
 * `now` (ms) stamps each user so its session countdown can tick locally from that moment.
 */
export function usersReducer(state, msg, now = 0) {
  const list = Array.isArray(state) ? state : [];
  if (!msg || typeof msg !== 'object') return list;
  switch (msg.type) {
    case 'initial':
      if (!Array.isArray(msg.data)) return list;
      return msg.data.filter(isUser).map((u) => stamp(u, now));
    case 'user_added':
    case 'user_update': {
      if (!isUser(msg.data)) return list;
      const idx = list.findIndex((u) => u.id === msg.data.id);
      if (idx === -1) return [stamp(msg.data, now), ...list];
      const next = list.slice();
      next[idx] = stamp({ ...list[idx], ...msg.data }, now);
      return next;
    }
    case 'user_deleted': {
      const id = msg.data && msg.data.id;
      if (id == null) return list;
      const next = list.filter((u) => u.id !== id);
      return next.length === list.length ? list : next;
    }
    default:
      return list;
  }
}

function isUser(u) {
  return u != null && typeof u === 'object' && u.id != null;
}

/** Counts per status, plus `total`. Unknown statuses count only in the total. */
export function countByStatus(users) {
  const counts = { total: 0 };
  for (const s of STATUSES) counts[s] = 0;
  for (const u of users) {
    counts.total += 1;
    if (Object.prototype.hasOwnProperty.call(counts, u.status) && u.status !== 'total') {
      counts[u.status] += 1;
    }
  }
  return counts;
}

/** Case-insensitive filter over name, email and status; every word must match somewhere. */
export function filterUsers(users, query) {
  const words = String(query || '').toLowerCase().split(/\s+/).filter(Boolean);
  if (words.length === 0) return users;
  return users.filter((u) => {
    const hay = `${u.first_name || ''} ${u.last_name || ''} ${u.email || ''} ${u.status || ''}`.toLowerCase();
    return words.every((w) => hay.includes(w));
  });
}

/** Full name for display. */
export function fullName(u) {
  return `${u.first_name || ''} ${u.last_name || ''}`.trim() || u.email || `#${u.id}`;
}

/**
 * Reducer for the invitee's session stream. State:
 * {remaining, at, answered, total, expired}; `remaining` (s) was true at time `at` (ms).
 */
export function sessionReducer(state, msg, now = 0) {
  const s = state || { remaining: null, at: now, answered: null, total: null, expired: false };
  if (!msg || typeof msg !== 'object') return s;
  switch (msg.type) {
    case 'time_update':
      if (!Number.isFinite(msg.remaining_seconds)) return s;
      return { ...s, remaining: Math.max(0, msg.remaining_seconds), at: now };
    case 'progress':
      if (!Number.isFinite(msg.questions_answered)) return s;
      return {
        ...s,
        answered: msg.questions_answered,
        total: Number.isFinite(msg.questions_total) ? msg.questions_total : s.total,
      };
    case 'session_expired':
      return { ...s, remaining: 0, at: now, expired: true };
    default:
      return s;
  }
}

/** ws: or wss: URL for `path` on the page's own origin (`loc` is a Location or URL). */
export function streamUrl(path, loc) {
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${loc.host}${path}`;
}

/** Whole seconds left until `at` (ms) seen at `now` (ms), rounded up, never negative. */
export function secondsUntil(at, now) {
  return Math.max(0, Math.ceil((at - now) / 1000));
}
