// Invitee session page: /session?token=TOKEN
//
// 1. Nothing happens until the invitee presses "Start interview": a mail scanner that opens the
//    link and runs scripts must not start their clock (contract v2 hardening).
// 2. POST /api/session/activate {token} → {session_id, expires_at, remaining_seconds} and the
//    `session_token` cookie (401 → "This link is not valid"; 410 → /session/expired, saying
//    "never started" when the link ran out unused). Then the page drops `?token=` from the
//    address bar (history.replaceState), so the token stays out of history and proxy logs,
//    and remembers the session id for this tab: a reload resumes with the cookie alone.
// 3. /session/{id}/stream, authenticated by the cookie: time_update corrects the countdown,
//    progress (sent on open too, so a reopened page shows "5/10" at once) updates the counts,
//    session_expired (or a countdown that stays at zero) leads to /session/expired.
// 4. Answer: POST /api/session/answer (the cookie again). When every question is answered the
//    page says so, stops the countdown and disables Answer.

import { createStream } from './stream.js';
import { connectionIndicator } from './connection.js';
import { postJSON } from './api.js';
import { sessionReducer, formatCountdown, remainingAt, streamUrl } from './util.js';
import { show } from './dom.js';

const $ = (id) => document.getElementById(id);
const EXPIRED_PAGE = '/session/expired';
// Once the local countdown has sat at 00:00 this long without the server's session_expired,
// give up waiting (the server corrects the countdown every 10 s while it is still running).
const ZERO_GRACE_MS = 15000;
// The session of this tab, kept across reloads once the token left the address bar.
const STORE_KEY = 'catalytic.session';

const token = new URLSearchParams(location.search).get('token') || '';
const views = ['loading', 'start', 'invalid', 'failed', 'session'];
const conn = connectionIndicator($('conn'), {
  announceEl: $('conn-announce'),
  onRetry: () => stream && stream.reconnectNow(),
});

let stream = null;
let state = sessionReducer(undefined, null, Date.now());
let zeroSince = null;
let leaving = false;

function showView(name, focus = false) {
  for (const v of views) $(v).hidden = v !== name;
  $('conn').hidden = name !== 'session';
  if (focus) $(`${name}-title`)?.focus();
}

function remembered() {
  try {
    const id = sessionStorage.getItem(STORE_KEY);
    return id && /^\d+$/.test(id) ? id : null;
  } catch {
    return null; // storage disabled: a reload needs the link again
  }
}

function remember(id) {
  try {
    if (id == null) sessionStorage.removeItem(STORE_KEY);
    else sessionStorage.setItem(STORE_KEY, String(id));
  } catch {
    /* storage disabled */
  }
}

/** Leave for the expired page; `unused`: the link ran out before the interview started. */
function goExpired(unused = false) {
  if (leaving) return;
  leaving = true;
  remember(null);
  if (stream) stream.stop();
  location.replace(unused ? `${EXPIRED_PAGE}?reason=unused` : EXPIRED_PAGE);
}

function showInvalid(text) {
  if (stream) stream.stop();
  stream = null;
  remember(null);
  if (text) $('invalid-text').textContent = text;
  showView('invalid', true);
}

async function activate() {
  const btn = $('start-button');
  btn.disabled = true;
  show($('start-error'), '');
  const res = await postJSON('/api/session/activate', { token });
  btn.disabled = false;
  if (res.status === 401 || res.status === 404) return showInvalid();
  // 410 twice over: an invite that ran out unused, or a session whose time is up.
  if (res.status === 410) return goExpired(/invite link has expired/i.test(res.error || ''));
  if (!res.ok || !res.data || res.data.session_id == null) {
    $('failed-text').textContent = res.error || 'The server gave an unexpected answer.';
    showView('failed', true);
    return;
  }
  remember(res.data.session_id);
  // The cookie carries the session from now on: keep the token out of history and logs.
  history.replaceState(null, '', '/session');
  state = sessionReducer(state, { type: 'time_update', remaining_seconds: Number(res.data.remaining_seconds) }, Date.now());
  showView('session', true);
  render();
  openStream(res.data.session_id);
}

function openStream(sessionId) {
  const path = `/session/${encodeURIComponent(sessionId)}/stream`;
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
      if (state.remaining != null && remainingAt(state.remaining, state.at, Date.now()) <= 1) goExpired();
      else if (!token) showInvalid('To continue, open the link from your invitation again. If it no longer works, please ask the person who invited you for a new one.');
      else showInvalid();
    },
  });
  stream.start();
}

function allAnswered() {
  return state.answered != null && state.total != null && state.total > 0 && state.answered >= state.total;
}

function render() {
  const now = Date.now();
  const done = allAnswered();
  const left = remainingAt(state.remaining, state.at, now);
  const timer = $('remaining');
  const text = done ? 'Done' : left == null ? '--:--' : formatCountdown(left);
  if (timer.textContent !== text) timer.textContent = text;
  timer.classList.toggle('timer-low', !done && left != null && left <= 60);

  if (state.answered != null) {
    const total = state.total ?? 0;
    const t = `${state.answered}/${total}`;
    if ($('progress-text').textContent !== t) $('progress-text').textContent = t;
    const bar = $('progress-bar');
    bar.max = Math.max(1, total);
    bar.value = Math.min(state.answered, Math.max(1, total));
    bar.setAttribute('aria-valuetext', `${state.answered} of ${total} questions answered`);
  }

  const doneBox = $('done');
  if (done && doneBox.hidden) {
    doneBox.hidden = false;
    $('session-help').hidden = true;
    $('session-msg').textContent = '';
    $('answer').disabled = true;
  }
  if (done) return;

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
  const res = await postJSON('/api/session/answer', {});
  btn.disabled = allAnswered();
  if (res.status === 410) return goExpired();
  if (res.status === 401) return showInvalid();
  if (!res.ok) {
    show(errEl, res.error);
    return;
  }
  show(errEl, '');
  if (res.data && Number.isFinite(res.data.questions_answered)) {
    state = sessionReducer(state, { type: 'progress', ...res.data }, Date.now());
    // The last answer is acknowledged by "All questions answered", not by a count.
    $('session-msg').textContent = allAnswered() ? '' : `Answer recorded (${res.data.questions_answered} of ${res.data.questions_total}).`;
    render();
  }
});

$('start-button').addEventListener('click', () => activate());
$('retry').addEventListener('click', () => {
  showView('start', true);
  activate();
});

// ---------------------------------------------------------------- start

const resumeId = remembered();
if (token) {
  showView('start');
  $('start-button').focus();
} else if (resumeId) {
  // A reload after the start: the cookie opens the stream, which sends the time and progress.
  showView('session');
  openStream(resumeId);
} else {
  showInvalid();
}
