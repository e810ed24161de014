// Admin dashboard. The table is fed only by /admin/stream: POST/DELETE answers never edit it,
// the stream's user_added / user_update / user_deleted do (and `initial` on every reconnect).
//
// Whether an admin is signed in is decided by the stream itself: the admin_session cookie is
// HttpOnly, and the server completes the handshake then closes with 1008 when it is missing.
// So: `initial` → dashboard; 1008 → sign-in form. GET /api/users is asked only as a fallback
// when the socket never opens (its 401 would show up as an error in the browser console).

import { createStream } from './stream.js';
import { connectionIndicator } from './connection.js';
import { request, postJSON } from './api.js';
import {
  STATUSES, usersReducer, countByStatus, filterUsers, fullName, parseProgress,
  formatCountdown, remainingAt, streamUrl,
} from './util.js';

const $ = (id) => document.getElementById(id);

const main = $('main');
const loadingView = $('loading');
const signoutBtn = $('signout');
const conn = connectionIndicator($('conn'), {
  announceEl: $('conn-announce'),
  onRetry: () => stream && stream.reconnectNow(),
});

let stream = null;
let users = [];
let signedIn = false;
let justSignedIn = false; // move focus to the dashboard heading after a sign-in

// Only the active view is in the DOM: the sign-in form and the dashboard are cloned from
// <template>s, so each label ("Email", "Password"...) names exactly one field on the page.
let current = 'loading';
function show(name) {
  if (name === current) return;
  current = name;
  for (const id of ['loading', 'signin', 'dashboard']) {
    const el = document.getElementById(id);
    if (el) el.remove();
  }
  if (name === 'loading') {
    main.append(loadingView);
  } else {
    main.append($(`tpl-${name}`).content.cloneNode(true));
    if (name === 'signin') wireSignIn();
    else wireDashboard();
  }
  signoutBtn.hidden = name !== 'dashboard';
}

// ---------------------------------------------------------------- stream lifecycle

function startStream() {
  if (stream) stream.stop();
  let opened = false;
  let probed = false;
  const s = createStream({
    url: () => streamUrl('/admin/stream', location),
    reduce: usersReducer,
    initialState: [],
    onStatus: (st) => {
      if (s !== stream) return;
      if (st.state === 'open') opened = true;
      if (st.state === 'waiting' && !opened && !probed) {
        // The contract refuses with 101 + close 1008, which the stream client handles. A socket
        // that never opens is usually a server that is down; but should the handshake itself be
        // refused, ask the API once whether we are signed in, so we never spin forever.
        probed = true;
        probeAuth(s);
      }
      if (st.state !== 'stopped') conn.update(st);
    },
    onMessage: (msg, state) => {
      if (s !== stream) return;
      users = state;
      if (msg.type === 'initial' && !signedIn) {
        signedIn = true;
        const fromSignIn = current === 'loading' && justSignedIn;
        justSignedIn = false;
        show('dashboard');
        conn.hide(false);
        if (fromSignIn) $('dash-title').focus();
      }
      if (signedIn) render();
    },
    onUnauthorized: () => {
      if (s !== stream) return;
      const wasSignedIn = signedIn;
      stream = null;
      showSignIn(wasSignedIn ? 'Your session has ended. Please sign in again.' : '');
    },
  });
  stream = s;
  conn.hide(false);
  s.start();
}

async function probeAuth(s) {
  const res = await request('GET', '/api/users');
  if (s === stream && !signedIn && res.status === 401) showSignIn('');
}

function showSignIn(note) {
  if (stream) {
    const s = stream;
    stream = null;
    s.stop();
  }
  signedIn = false;
  users = [];
  rows.clear();
  conn.hide(true);
  show('signin');
  const noteEl = $('signin-note');
  noteEl.textContent = note || 'Use the email and password of your catalytic admin account.';
  noteEl.classList.toggle('form-warning', Boolean(note));
  $('signin-email').focus();
}

// ---------------------------------------------------------------- sign in / out

function wireSignIn() {
  $('signin-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const form = ev.currentTarget;
    const email = $('signin-email').value.trim();
    const password = $('signin-password').value;
    const errEl = $('signin-error');
    if (!email || !password) {
      showError(errEl, 'Enter your email and password.');
      (email ? $('signin-password') : $('signin-email')).focus();
      return;
    }
    setBusy(form, true);
    const res = await postJSON('/api/admin/login', { email, password });
    setBusy(form, false);
    if (!res.ok) {
      showError(errEl, res.error);
      $('signin-password').select();
      return;
    }
    showError(errEl, '');
    form.reset();
    justSignedIn = true;
    show('loading');
    startStream();
  });
}

signoutBtn.addEventListener('click', async () => {
  signoutBtn.disabled = true;
  const s = stream;
  stream = null;
  if (s) s.stop();
  await postJSON('/api/admin/logout');
  signoutBtn.disabled = false;
  showSignIn('You are signed out.');
});

// ---------------------------------------------------------------- invite form

function wireDashboard() {
  rows.clear();
  $('invite-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const form = ev.currentTarget;
    const body = {
      first_name: $('invite-first').value.trim(),
      last_name: $('invite-last').value.trim(),
      email: $('invite-email').value.trim(),
    };
    const errEl = $('invite-error');
    const okEl = $('invite-ok');
    okEl.textContent = '';
    const missing = [['invite-first', 'first name'], ['invite-last', 'last name'], ['invite-email', 'email']]
      .filter(([id]) => !$(id).value.trim());
    if (missing.length) {
      showError(errEl, `Please fill in the ${missing.map((m) => m[1]).join(', ')}.`);
      $(missing[0][0]).focus();
      return;
    }
    setBusy(form, true);
    const res = await postJSON('/api/users', body);
    setBusy(form, false);
    if (!res.ok) {
      if (res.status === 401) return showSignIn('Your session has ended. Please sign in again.');
      showError(errEl, res.error);
      return;
    }
    showError(errEl, '');
    form.reset();
    // The row itself arrives through the stream (user_added), never from this answer.
    okEl.textContent = `Invitation created for ${fullName(body)}. Copy their link from the table and send it to them.`;
    $('invite-first').focus();
  });

  // ---------------------------------------------------------------- filter

  $('filter').addEventListener('input', () => render());
}

// ---------------------------------------------------------------- table rendering
//
// Rows are keyed by user id and updated in place, so a stream update never steals keyboard
// focus from a button in another row (or in the same one).

const rows = new Map(); // id -> {tr, cells..., user}

function render() {
  const counts = countByStatus(users);
  renderCounts(counts);

  const query = $('filter').value;
  const visible = filterUsers(users, query);
  const tbody = $('users-body');

  $('empty').hidden = users.length !== 0;
  const noMatch = $('no-match');
  noMatch.hidden = !(users.length > 0 && visible.length === 0);
  if (!noMatch.hidden) noMatch.textContent = `No invitees match “${query.trim()}”.`;
  $('users').hidden = visible.length === 0;

  const keep = new Set();
  visible.forEach((u, i) => {
    keep.add(u.id);
    let row = rows.get(u.id);
    if (!row) {
      row = buildRow(u);
      rows.set(u.id, row);
    }
    updateRow(row, u);
    const at = tbody.children[i];
    if (at !== row.tr) tbody.insertBefore(row.tr, at || null);
  });
  for (const [id, row] of rows) {
    if (!keep.has(id)) {
      const hadFocus = row.tr.contains(document.activeElement);
      row.tr.remove();
      if (hadFocus) $('filter').focus();
      if (!users.some((u) => u.id === id)) rows.delete(id);
    }
  }
  tickCountdowns();
}

function renderCounts(counts) {
  const ul = $('counts');
  const items = [
    ...STATUSES.map((s) => [s, counts[s]]),
    ['total', counts.total],
  ];
  if (ul.children.length !== items.length) {
    ul.replaceChildren(...items.map(([s]) => {
      const li = document.createElement('li');
      li.className = `count count-${s}`;
      const label = document.createElement('span');
      label.className = s === 'total' ? 'count-label' : `badge badge-${s}`;
      label.textContent = s;
      const n = document.createElement('strong');
      n.className = 'count-n';
      li.append(label, ' ', n);
      return li;
    }));
  }
  items.forEach(([, n], i) => {
    const el = ul.children[i].querySelector('.count-n');
    if (el.textContent !== String(n)) el.textContent = String(n);
  });
}

let rowSeq = 0;

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text != null) e.textContent = text;
  return e;
}

// A cell with one content wrapper: on narrow screens each cell becomes a two-column grid
// (column label from data-label, then the content), so the content must be a single box.
function td(label, className) {
  const c = el('td', className);
  c.dataset.label = label;
  c.body = el('div', 'cell-body');
  c.append(c.body);
  return c;
}

function buildRow(u) {
  const id = u.id;
  const nameId = `user-name-${++rowSeq}`;
  const tr = el('tr');
  tr.dataset.userId = String(id);

  const name = td('Name', 'cell-name');
  const nameText = el('span', 'user-name');
  nameText.id = nameId;
  name.body.append(nameText);

  const email = td('Email', 'cell-email');

  const status = td('Status');
  const badge = el('span', 'badge');
  status.body.append(badge);

  const progress = td('Progress', 'cell-progress');
  const bar = el('progress', 'bar');
  const progText = el('span', 'progress-text');
  progress.body.append(bar, progText);

  const link = td('Invite link', 'cell-link');
  const linkBox = el('div', 'link-box');
  const linkInput = el('input', 'link-input');
  linkInput.type = 'text';
  linkInput.readOnly = true;
  const copyBtn = el('button', 'btn btn-small btn-quiet', 'Copy');
  copyBtn.type = 'button';
  copyBtn.setAttribute('aria-describedby', nameId);
  const copied = el('span', 'copied', '');
  copied.setAttribute('aria-live', 'polite');
  const validity = el('span', 'validity');
  linkBox.append(linkInput, copyBtn);
  link.body.append(linkBox, validity, copied);

  const session = td('Session', 'cell-session');
  const timer = el('span', 'timer-text');
  session.body.append(timer);

  const results = td('Results', 'cell-results');

  const actions = td('Actions', 'cell-actions');
  const newLinkBtn = el('button', 'btn btn-small btn-quiet', 'New invite link');
  newLinkBtn.type = 'button';
  newLinkBtn.setAttribute('aria-describedby', nameId);
  const deleteBtn = el('button', 'btn btn-small btn-danger-quiet', 'Delete');
  deleteBtn.type = 'button';
  deleteBtn.setAttribute('aria-describedby', nameId);
  actions.body.append(newLinkBtn, deleteBtn);

  tr.append(name, email, status, progress, link, session, results, actions);

  const row = { tr, nameText, email: email.body, badge, bar, progText, linkInput, copyBtn, copied, validity, timer, results: results.body, user: u, resultsKey: '' };
  copyBtn.addEventListener('click', () => copyLink(row));
  newLinkBtn.addEventListener('click', () => newInvite(row, newLinkBtn));
  deleteBtn.addEventListener('click', () => confirmDelete(row, deleteBtn));
  return row;
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function updateRow(row, u) {
  row.user = u;
  const name = fullName(u);
  setText(row.nameText, name);
  setText(row.email, u.email || '');

  const status = String(u.status || 'unknown');
  setText(row.badge, status);
  row.badge.className = `badge badge-${STATUSES.includes(status) ? status : 'unknown'}`;

  const p = parseProgress(u.progress);
  row.bar.max = Math.max(1, p.total);
  row.bar.value = Math.min(p.answered, Math.max(1, p.total));
  row.bar.setAttribute('aria-label', `Progress of ${name}`);
  row.bar.setAttribute('aria-valuetext', `${p.answered} of ${p.total} questions answered`);
  setText(row.progText, `${p.answered}/${p.total}`);

  if (row.linkInput.value !== (u.invite_url || '')) row.linkInput.value = u.invite_url || '';
  row.linkInput.setAttribute('aria-label', `Invite link for ${name}`);
  setText(row.validity, u.token_valid ? 'valid' : 'not valid');
  row.validity.className = `validity ${u.token_valid ? 'validity-ok' : 'validity-bad'}`;

  const key = `${u.transcript || ''}\n${u.summary || ''}`;
  if (key !== row.resultsKey) {
    row.resultsKey = key;
    const links = [];
    for (const [label, url] of [['Transcript', u.transcript], ['Summary', u.summary]]) {
      const href = safeUrl(url);
      if (!href) continue;
      const a = el('a', 'result-link', label);
      a.href = href;
      a.target = '_blank';
      a.rel = 'noopener noreferrer';
      a.setAttribute('aria-label', `${label} for ${name}`);
      links.push(a);
    }
    if (links.length === 0) links.push(el('span', 'muted', '—'));
    row.results.replaceChildren(...links);
  }
}

// Only http(s) and same-origin links: a stored "javascript:" URL must never become clickable.
function safeUrl(url) {
  if (typeof url !== 'string' || !url) return null;
  try {
    const u = new URL(url, location.href);
    return u.protocol === 'http:' || u.protocol === 'https:' ? u.href : null;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------- countdowns (local tick)

function tickCountdowns() {
  const now = Date.now();
  for (const row of rows.values()) {
    const u = row.user;
    const left = remainingAt(u.timer_base, u.timer_at, now);
    let text;
    if (left != null) text = formatCountdown(left);
    else if (u.status === 'invited') text = 'not started';
    else if (u.status === 'completed' || u.status === 'expired') text = 'ended';
    else text = '—';
    setText(row.timer, text);
    row.timer.classList.toggle('timer-running', left != null && u.status === 'in_progress');
    row.timer.classList.toggle('timer-low', left != null && left <= 60 && u.status === 'in_progress');
  }
}
setInterval(() => {
  if (signedIn) tickCountdowns();
}, 250);

// ---------------------------------------------------------------- row actions

async function copyLink(row) {
  const url = row.linkInput.value;
  let ok = false;
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(url);
      ok = true;
    }
  } catch {
    ok = false;
  }
  if (!ok) {
    row.linkInput.focus();
    row.linkInput.select();
    try {
      ok = document.execCommand('copy');
    } catch {
      ok = false;
    }
    row.copyBtn.focus();
  }
  row.copied.textContent = ok ? 'Copied' : 'Select the link and press Ctrl+C to copy';
  clearTimeout(row.copiedTimer);
  row.copiedTimer = setTimeout(() => {
    row.copied.textContent = '';
  }, 2500);
}

async function newInvite(row, btn) {
  const name = fullName(row.user);
  btn.disabled = true;
  const res = await postJSON(`/api/users/${encodeURIComponent(row.user.id)}/invite`);
  btn.disabled = false;
  if (!res.ok) {
    if (res.status === 401) return showSignIn('Your session has ended. Please sign in again.');
    notice(`Could not create a new link for ${name}: ${res.error}`, true);
    return;
  }
  notice(`New invite link created for ${name}. The previous link no longer works.`);
}

const dialog = $('confirm-delete');
let pendingDelete = null;

function confirmDelete(row, btn) {
  pendingDelete = { id: row.user.id, name: fullName(row.user), email: row.user.email, btn };
  $('confirm-text').textContent =
    `${pendingDelete.name} (${pendingDelete.email}) will be removed with their invite link and session. This cannot be undone.`;
  dialog.returnValue = '';
  dialog.showModal();
}

dialog.addEventListener('close', async () => {
  const target = pendingDelete;
  pendingDelete = null;
  if (!target || dialog.returnValue !== 'delete') return;
  const res = await request('DELETE', `/api/users/${encodeURIComponent(target.id)}`);
  if (!res.ok && res.status !== 404) {
    if (res.status === 401) return showSignIn('Your session has ended. Please sign in again.');
    notice(`Could not delete ${target.name}: ${res.error}`, true);
    return;
  }
  notice(`Deleted ${target.name}.`);
  // The row leaves through the stream's user_deleted; keep focus somewhere sensible.
  const filter = $('filter');
  if (filter && (!document.activeElement || document.activeElement === document.body)) filter.focus();
});

let noticeTimer = null;
function notice(text, isError = false) {
  const n = $('notice');
  if (!n) return;
  n.textContent = text;
  n.classList.toggle('notice-error', isError);
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => {
    n.textContent = '';
  }, 8000);
}

// ---------------------------------------------------------------- helpers

function showError(el, text) {
  el.textContent = text || '';
  el.hidden = !text;
}

function setBusy(form, busy) {
  for (const b of form.querySelectorAll('button, input')) b.disabled = busy;
  form.setAttribute('aria-busy', String(busy));
}

// ---------------------------------------------------------------- start

startStream();
