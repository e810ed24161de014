// Invitee session page: /session?token=TOKEN
//
// 1. POST /api/session/activate {token} → {session_id, expires_at, remaining_seconds}
//    (401 → "This link is not valid", 410 → /session/expired).
// 2. Open /session/{session_id}/stream?token=TOKEN through the reconnecting stream client:
//    time_update corrects the local countdown, progress updates the bar, session_expired
//    (or a countdown that stays at zero) leads to /session/expired.
// 3. The placeholder Answer button: POST /api/session/answer {token}.

import { createStream } from './stream.js';
import { connectionIndicator } from './connection.js';
import { postJSON } from './api.js';
import { sessionReducer, formatCountdown, remainingAt, streamUrl } from './util.js';

const $ = (id) => document.getElementById(id);
const EXPIRED_PAGE = '/session/expired';
// Once the local countdown has sat at 00:00 this long without the server's session_expired,
// give up waiting (the server corrects the countdown every 10 s while it is still running).
const ZERO_GRACE_MS = 15000;

const token = new URLSearchParams(location.search).get('token') || '';
const views = ['loading', 'invalid', 'failed', 'session'];
const conn = connectionIndicator($('conn'), {
  announceEl: $('conn-announce'),
  onRetry: () => stream && stream.reconnectNow(),
});

let stream = null;
let state = sessionReducer(undefined, null, Date.now());
let zeroSince = null;
let leaving = false;

function show(name) {
  for (const v of views) $(v).hidden = v !== name;
  $('conn').hidden = name !== 'session';
}

function goExpired() {
  if (leaving) return;
  leaving = true;
  if (stream) stream.stop();
  location.replace(EXPIRED_PAGE);
}

function showInvalid() {
  if (stream) stream.stop();
  stream = null;
  show('invalid');
}

async function activate() {
  if (!token) return showInvalid();
  show('loading');
  const res = await postJSON('/api/session/activate', { token });
  if (res.status === 401 || res.status === 404) return showInvalid();
  if (res.status === 410) return goExpired();
  if (!res.ok || !res.data || res.data.session_id == null) {
    $('failed-text').textContent = res.error || 'The server gave an unexpected answer.';
    show('failed');
    $('retry').focus();
    return;
  }
  const now = Date.now();
  state = sessionReducer(state, { type: 'time_update', remaining_seconds: Number(res.data.remaining_seconds) }, now);
  show('session');
  render();
  openStream(res.data.session_id);
}

function openStream(sessionId) {
  const path = `/session/${encodeURIComponent(sessionId)}/stream?token=${encodeURIComponent(token)}`;
  stream = createStream({
    url: () => streamUrl(path, location),
    // The page owns the state (the Answer button's reply updates it too), so the stream
    // client only delivers messages.
    onStatus: (st) => {
      if (st.state !== 'stopped') conn.update(st);
    },
    onMessage: (msg) => {
      state = sessionReducer(state, msg, Date.now());
      render();
    },
    onExpired: () => goExpired(),
    onUnauthorized: () => {
      // "Invalid or expired session": expired if our clock says so, else the link was withdrawn.
      if (remainingAt(state.remaining, state.at, Date.now()) <= 1) goExpired();
      else showInvalid();
    },
  });
  stream.start();
}

function render() {
  const now = Date.now();
  const left = remainingAt(state.remaining, state.at, now);
  const timer = $('remaining');
  const text = left == null ? '--:--' : formatCountdown(left);
  if (timer.textContent !== text) timer.textContent = text;
  timer.classList.toggle('timer-low', left != null && left <= 60);

  if (state.answered != null) {
    const total = state.total ?? 0;
    const t = `${state.answered}/${total}`;
    if ($('progress-text').textContent !== t) $('progress-text').textContent = t;
    const bar = $('progress-bar');
    bar.max = Math.max(1, total);
    bar.value = Math.min(state.answered, Math.max(1, total));
    bar.setAttribute('aria-valuetext', `${state.answered} of ${total} questions answered`);
  }

  if (left === 0) {
    if (zeroSince == null) zeroSince = now;
    $('session-msg').textContent = 'Time is up. Finishing your session…';
    $('answer').disabled = true;
    if (now - zeroSince >= ZERO_GRACE_MS) goExpired();
  } else {
    zeroSince = null;
  }
}

setInterval(() => {
  if (!$('session').hidden) render();
}, 250);

$('answer').addEventListener('click', async () => {
  const btn = $('answer');
  const errEl = $('session-error');
  btn.disabled = true;
  const res = await postJSON('/api/session/answer', { token });
  btn.disabled = false;
  if (res.status === 410) return goExpired();
  if (res.status === 401) return showInvalid();
  if (!res.ok) {
    errEl.textContent = res.error;
    errEl.hidden = false;
    return;
  }
  errEl.hidden = true;
  if (res.data && Number.isFinite(res.data.questions_answered)) {
    state = sessionReducer(state, { type: 'progress', ...res.data }, Date.now());
    render();
    $('session-msg').textContent = `Answer recorded (${res.data.questions_answered} of ${res.data.questions_total}).`;
  }
});

$('retry').addEventListener('click', () => activate());

activate();
