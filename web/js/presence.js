// Who is here (contract v2 `presence` frames): invitees with their session page open, and the
// admins watching the dashboard. Pure; unit-tested in web/test/presence.test.mjs.
//
// Every frame is the full state (never a diff, never replayed), so the reducer replaces what
// it had. Only entries with at least one stream count; anything malformed is skipped.

/** @typedef {{sessions: Map<number, number>, admins: {email: string, streams: number}[]}} Presence */

/** @returns {Presence} */
export function emptyPresence() {
  return { sessions: new Map(), admins: [] };
}

/** Apply a message: a `presence` frame (or GET /api/presence body) replaces the state. */
export function presenceReducer(state, msg) {
  const s = state || emptyPresence();
  if (!msg || typeof msg !== 'object' || msg.type !== 'presence') return s;
  return fromBody(msg);
}

/** The state a `{"sessions":{...},"admins":[...]}` body describes. */
export function fromBody(body) {
  const sessions = new Map();
  if (body && body.sessions && typeof body.sessions === 'object') {
    for (const [id, k] of Object.entries(body.sessions)) {
      const n = Number(id);
      if (Number.isSafeInteger(n) && Number.isFinite(k) && k >= 1) sessions.set(n, k);
    }
  }
  const admins = [];
  if (body && Array.isArray(body.admins)) {
    for (const a of body.admins) {
      if (a && typeof a.email === 'string' && Number.isFinite(a.streams) && a.streams >= 1) {
        admins.push({ email: a.email, streams: a.streams });
      }
    }
  }
  return { sessions, admins };
}

/** Whether invitee `id` has their session page open. */
export function isOnline(presence, id) {
  return Boolean(presence && presence.sessions.get(id) >= 1);
}

/** Ids whose online state differs between two states: the only rows that need a redraw. */
export function onlineChanges(before, after) {
  const changed = [];
  const a = before ? before.sessions : new Map();
  const b = after ? after.sessions : new Map();
  for (const id of a.keys()) if (!b.has(id)) changed.push(id);
  for (const id of b.keys()) if (!a.has(id)) changed.push(id);
  return changed;
}

/**
 * The other admins watching, for "Also here: …": every admin but `me` (emails compare
 * case-insensitively), sorted by email.
 */
export function othersHere(presence, me) {
  const mine = String(me || '').toLowerCase();
  return (presence ? presence.admins : [])
    .filter((a) => a.email.toLowerCase() !== mine)
    .map((a) => a.email)
    .sort();
}
