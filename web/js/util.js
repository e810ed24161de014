// Pure helpers shared by the pages. No DOM, no globals: everything here is
// unit-tested under node (web/test/util.test.mjs).

/** The four user statuses of the contract, in the order the dashboard shows them. */
export const STATUSES = Object.freeze(['invited', 'in_progress', 'completed', 'expired']);

const STATUS_LABELS = Object.freeze({
  invited: 'Invited',
  in_progress: 'In progress',
  completed: 'Completed',
  expired: 'Expired',
});

/** A status in words, as the badges show it ("in_progress" → "In progress"). */
export function statusLabel(status) {
  return STATUS_LABELS[status] || (status ? String(status).replace(/_/g, ' ') : 'Unknown');
}

/**
 * An error text as a sentence: capital first letter, final full stop. The server's messages
 * are short phrases ("wrong email or password"); the pages show sentences.
 */
export function sentence(text) {
  const t = String(text || '').trim();
  if (!t) return '';
  const first = t[0].toLocaleUpperCase() + t.slice(1);
  return /[.!?…)]$/.test(first) ? first : `${first}.`;
}

/**
 * "AbCdEfGh…UvWxYz" — the part of an invite link that tells two links apart (both ends of its
 * token), short enough for a table cell. A link without a token is shortened in the middle.
 */
export function shortLink(url) {
  if (typeof url !== 'string' || !url) return '';
  const m = /[?&]token=([^&#]+)/.exec(url);
  if (!m) return url.length > 40 ? `${url.slice(0, 20)}…${url.slice(-12)}` : url;
  const token = m[1];
  return token.length > 15 ? `${token.slice(0, 8)}…${token.slice(-6)}` : token;
}

// Intl formatters are expensive to make (tens of microseconds each): one per locale and style.
const formatters = new Map();
function formatter(locale, style) {
  const key = `${locale || ''}|${style}`;
  let f = formatters.get(key);
  if (!f) {
    const options = {
      time: { hour: '2-digit', minute: '2-digit' },
      day: { day: 'numeric', month: 'short' },
      date: { day: 'numeric', month: 'short', year: 'numeric' },
      long: { dateStyle: 'medium', timeStyle: 'short' },
    }[style];
    f = new Intl.DateTimeFormat(locale, options);
    formatters.set(key, f);
  }
  return f;
}

/**
 * A wall time (RFC 3339 or ms) for a table cell: "14:05" today, "3 Dec 14:05" this year,
 * "3 Dec 2025" before. `now` (ms) and `locale` are injectable for tests. '' for no time.
 */
export function shortTime(value, now = Date.now(), locale = undefined) {
  const d = toDate(value);
  if (!d) return '';
  const n = new Date(now);
  const time = formatter(locale, 'time').format(d);
  if (d.toDateString() === n.toDateString()) return time;
  if (d.getFullYear() === n.getFullYear()) return `${formatter(locale, 'day').format(d)} ${time}`;
  return formatter(locale, 'date').format(d);
}

/** The full date and time, for a tooltip or a screen reader. '' for no time. */
export function longTime(value, locale = undefined) {
  const d = toDate(value);
  return d ? formatter(locale, 'long').format(d) : '';
}

const counter = new Intl.NumberFormat('en');
/** 5000 → "5,000". */
export function count(n) {
  return counter.format(n);
}

function toDate(value) {
  if (value == null || value === '') return null;
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? null : d;
}

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

/** The password rule of the contract, as far as a browser can check it (v2: ≥ 10 characters). */
export const MIN_PASSWORD = 10;

/**
 * What is wrong with a new password and its repetition, as far as the browser can tell, or
 * null. (Whether it is easy to guess is the server's call; its 422 reason is shown as is.)
 */
export function passwordProblem(password, again) {
  if ([...String(password)].length < MIN_PASSWORD) return `The password must be at least ${MIN_PASSWORD} characters long.`;
  if (password !== again) return 'The two passwords are not the same.';
  return null;
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
