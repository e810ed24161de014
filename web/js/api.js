// Tiny fetch wrapper for the JSON API. Every call resolves (never rejects) to
// {ok, status, data, error, retryAfter}: `error` is the server's {"error": "..."} text as a
// sentence when there is one, or a readable fallback, so pages can show it as is.

import { sentence } from './util.js';

export async function request(method, path, body) {
  const init = { method, credentials: 'same-origin', headers: {} };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch {
    return { ok: false, status: 0, data: null, error: 'Could not reach the server. Check your connection and try again.', retryAfter: null };
  }
  let data = null;
  const text = await res.text().catch(() => '');
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  let error = null;
  if (!res.ok) {
    error = (data && typeof data.error === 'string' && sentence(data.error)) || fallbackError(res.status);
  }
  return { ok: res.ok, status: res.status, data, error, retryAfter: res.headers.get('Retry-After') };
}

function fallbackError(status) {
  switch (status) {
    case 401: return 'You are not signed in.';
    case 403: return 'This is not allowed.';
    case 404: return 'Not found.';
    case 409: return 'That already exists.';
    case 410: return 'This has expired.';
    case 413: return 'That is too large.';
    case 422: return 'Please check the fields and try again.';
    case 429: return 'Too many attempts. Please wait a minute and try again.';
    default: return `The server answered with an error (${status}).`;
  }
}

export const postJSON = (path, body) => request('POST', path, body);

const sleepMs = (ms) => new Promise((r) => setTimeout(r, ms));

/** Call `send()` (a function resolving to a `request` result) until it is not a 503, at most
 * `tries` times. A 503 means storage or the broadcast backlog is busy and nothing changed
 * (API.md), so the same request is safe to send again: wait what Retry-After says (seconds;
 * `attempt` seconds without one), at most 5 s, then try again. Resolves to the last result. */
export async function retryBusy(send, { tries = 8, sleep = sleepMs } = {}) {
  for (let attempt = 1; ; attempt++) {
    const res = await send();
    if (res.status !== 503 || attempt >= tries) return res;
    const secs = Number(res.retryAfter);
    await sleep(Math.min(5000, 1000 * (secs > 0 ? secs : attempt)));
  }
}
