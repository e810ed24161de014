// One invitee's row of the dashboard table: built once, then updated in place (only the
// nodes whose text or attributes differ are written), so a live update never steals keyboard
// focus and touches nothing outside its row.
//
// Narrow screens turn each row into a card (style.css): every cell has one content box and a
// data-label that names its column.

import {
  STATUSES, statusLabel, fullName, parseProgress, formatCountdown, remainingAt, shortLink,
  shortTime, longTime,
} from './util.js';
import { setText } from './dom.js';

let rowSeq = 0;

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text != null) e.textContent = text;
  return e;
}

function td(label, className) {
  const c = el('td', className);
  c.dataset.label = label;
  c.body = el('div', 'cell-body');
  c.append(c.body);
  return c;
}

function button(text, className, describedBy) {
  const b = el('button', `btn btn-small ${className}`, text);
  b.type = 'button';
  b.setAttribute('aria-describedby', describedBy);
  return b;
}

function setAttr(node, name, value) {
  if (value == null || value === '') {
    if (node.hasAttribute(name)) node.removeAttribute(name);
  } else if (node.getAttribute(name) !== value) {
    node.setAttribute(name, value);
  }
}

/** A <time> showing `value` briefly, with the full date on hover and for screen readers. */
function setTime(node, prefix, value, now) {
  const short = shortTime(value, now);
  setText(node, short ? `${prefix}${short}` : '');
  setAttr(node, 'datetime', short ? new Date(value).toISOString() : null);
  setAttr(node, 'title', short ? longTime(value) : null);
}

/**
 * Build the row of user `u`. `actions` = {copy(row), edit(row), newLink(row), remove(row)}.
 * Returns the row record; `row.tr` is the element.
 */
export function buildRow(u, actions) {
  const nameId = `user-name-${++rowSeq}`;
  const tr = el('tr');
  tr.dataset.userId = String(u.id);

  const name = td('Name', 'cell-name');
  const nameLine = el('div', 'name-line');
  const nameText = el('span', 'user-name truncate');
  nameText.id = nameId;
  const online = el('span', 'presence');
  online.hidden = true;
  online.title = 'Their session page is open';
  const dot = el('span', 'presence-dot');
  dot.setAttribute('aria-hidden', 'true');
  online.append(dot, el('span', 'visually-hidden', 'online'));
  nameLine.append(nameText, online);
  const emailText = el('span', 'user-email truncate');
  name.body.append(nameLine, emailText);

  const status = td('Status', 'cell-status');
  const badge = el('span', 'badge');
  status.body.append(badge);

  const progress = td('Progress', 'cell-progress');
  const bar = el('progress', 'bar');
  const progText = el('span', 'progress-text');
  progress.body.append(bar, progText);

  const link = td('Invite link', 'cell-link');
  const linkText = el('code', 'link-text');
  const linkMeta = el('div', 'link-meta');
  const copyBtn = button('Copy', 'btn-quiet', nameId);
  const validity = el('span', 'validity');
  linkMeta.append(copyBtn, validity);
  const copied = el('span', 'copied', '');
  copied.setAttribute('aria-live', 'polite');
  link.body.append(linkText, linkMeta, copied);

  const invited = td('Invited', 'cell-invited');
  const invitedAt = el('time', 'muted');
  invited.body.append(invitedAt);

  const session = td('Session', 'cell-session');
  const timer = el('span', 'timer-text');
  const started = el('time', 'session-time');
  const ended = el('time', 'session-time');
  session.body.append(timer, started, ended);

  const results = td('Results', 'cell-results');

  const acts = td('Actions', 'cell-actions');
  const editBtn = button('Edit', 'btn-quiet', nameId);
  const newLinkBtn = button('New invite link', 'btn-quiet btn-new-link', nameId);
  const deleteBtn = button('Delete', 'btn-danger-quiet', nameId);
  acts.body.append(editBtn, newLinkBtn, deleteBtn);

  tr.append(name, status, progress, link, invited, session, results, acts);

  const row = {
    tr, nameText, emailText, online, badge, bar, progText, linkText, copyBtn, copied, validity,
    invitedAt, timer, started, ended, results: results.body, newLinkBtn, deleteBtn, user: u,
    resultsKey: null,
  };
  copyBtn.addEventListener('click', () => actions.copy(row));
  editBtn.addEventListener('click', () => actions.edit(row));
  newLinkBtn.addEventListener('click', () => actions.newLink(row));
  deleteBtn.addEventListener('click', () => actions.remove(row));
  return row;
}

/** Bring the row in line with user `u` at wall time `now`; `isOnline`: their page is open. */
export function updateRow(row, u, now, isOnline) {
  row.user = u;
  const name = fullName(u);
  setText(row.nameText, name);
  setAttr(row.nameText, 'title', name);
  setText(row.emailText, u.email || '');
  setAttr(row.emailText, 'title', u.email || '');
  setOnline(row, isOnline);

  const status = STATUSES.includes(u.status) ? u.status : 'unknown';
  setText(row.badge, statusLabel(u.status));
  const badgeClass = `badge badge-${status}`;
  if (row.badge.className !== badgeClass) row.badge.className = badgeClass;

  const p = parseProgress(u.progress);
  const max = Math.max(1, p.total);
  if (row.bar.max !== max) row.bar.max = max;
  const value = Math.min(p.answered, max);
  if (row.bar.value !== value) row.bar.value = value;
  setAttr(row.bar, 'aria-label', `Progress of ${name}`);
  setAttr(row.bar, 'aria-valuetext', `${p.answered} of ${p.total} questions answered`);
  setText(row.progText, `${p.answered}/${p.total}`);

  const url = u.invite_url || '';
  setText(row.linkText, shortLink(url));
  setAttr(row.linkText, 'title', url);
  row.url = url;
  setAttr(row.copyBtn, 'aria-label', `Copy invite link of ${name}`);
  let validity;
  if (!u.token_valid) validity = 'Expired';
  else if (u.status === 'invited' && u.invite_expires_at) validity = `Valid until ${shortTime(u.invite_expires_at, now)}`;
  else validity = 'Valid';
  setText(row.validity, validity);
  setAttr(row.validity, 'title', u.token_valid && u.invite_expires_at ? `The link works until ${longTime(u.invite_expires_at)}` : null);
  const validityClass = `validity ${u.token_valid ? 'validity-ok' : 'validity-bad'}`;
  if (row.validity.className !== validityClass) row.validity.className = validityClass;

  setTime(row.invitedAt, '', u.invited_at, now);
  if (!u.invited_at) setText(row.invitedAt, '—');
  setTime(row.started, 'Started ', u.session_started_at, now);
  const endedWord = u.status === 'completed' ? 'Completed ' : 'Ended ';
  setTime(row.ended, endedWord, u.session_ended_at, now);

  const key = `${u.transcript || ''}\n${u.summary || ''}\n${name}`;
  if (key !== row.resultsKey) {
    row.resultsKey = key;
    const links = [];
    for (const [label, href] of [['Transcript', safeUrl(u.transcript)], ['Summary', safeUrl(u.summary)]]) {
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
  tickRow(row, now);
}

export function setOnline(row, isOnline) {
  if (row.online.hidden === !isOnline) return;
  row.online.hidden = !isOnline;
}

/**
 * The session cell: a countdown that ticks locally while the session runs, and words otherwise.
 * A completed or expired session never counts down, whatever timer it was last sent.
 */
export function tickRow(row, now) {
  const u = row.user;
  const running = u.status === 'in_progress';
  const left = running ? remainingAt(u.timer_base, u.timer_at, now) : null;
  let text;
  if (left != null) text = `${formatCountdown(left)} left`;
  else if (u.status === 'invited') text = 'Not started';
  else if (u.status === 'completed') text = 'Completed';
  else if (u.status === 'expired') text = u.session_started_at || !u.invite_expires_at ? 'Time ran out' : 'Link expired unused';
  else text = '—';
  setText(row.timer, text);
  row.timer.classList.toggle('timer-running', left != null);
  row.timer.classList.toggle('timer-low', left != null && left <= 60);
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
