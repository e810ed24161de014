// The Admins view: who may sign in here (email, created, last sign-in), "Add admin",
// "Remove" (the server refuses the last one), and "Change your password" — contract v2's
// GET/POST /api/admins, DELETE /api/admins/{email} and POST /api/admin/password.
//
// Passwords are checked here only for what the browser can know (filled in, repeated the same,
// at least 10 characters); the server judges strength and its reason is shown as it says it.

import { request, postJSON } from './api.js';
import { shortTime, longTime, passwordProblem } from './util.js';
import { show, setBusy } from './dom.js';
import { confirmAction } from './dialogs.js';

const $ = (id) => document.getElementById(id);

export function mountAdmins(root, page) {
  let alive = true;
  let admins = [];

  async function load() {
    const res = await request('GET', '/api/admins');
    if (!alive) return;
    if (res.status === 401) return page.sessionEnded();
    if (!res.ok || !Array.isArray(res.data)) {
      notice(`Could not load the admins: ${res.error || 'unexpected answer.'}`, true);
      return;
    }
    admins = res.data;
    render();
  }

  function render() {
    const me = (page.me() || '').toLowerCase();
    const now = Date.now();
    const body = $('admins-body');
    body.replaceChildren(...admins.map((a) => {
      const tr = document.createElement('tr');
      const email = cell('Email');
      email.body.textContent = a.email;
      if (a.email.toLowerCase() === me) {
        const you = document.createElement('span');
        you.className = 'muted';
        you.textContent = ' (you)';
        email.body.append(you);
      }
      const created = cell('Created', timeNode(a.created_at, now));
      const last = cell('Last sign-in', a.last_sign_in_at ? timeNode(a.last_sign_in_at, now) : 'Never');
      const act = cell('Actions');
      act.classList.add('cell-actions');
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'btn btn-small btn-danger-quiet';
      b.textContent = 'Remove';
      b.setAttribute('aria-label', `Remove admin ${a.email}`);
      b.disabled = admins.length <= 1;
      if (b.disabled) b.title = 'The last admin cannot be removed';
      b.addEventListener('click', () => remove(a));
      act.body.append(b);
      tr.append(email, created, last, act);
      return tr;
    }));
  }

  async function remove(a) {
    const self = a.email.toLowerCase() === (page.me() || '').toLowerCase();
    const ok = await confirmAction({
      title: `Remove admin ${a.email}?`,
      text: self
        ? 'This is your own account: you are signed out everywhere at once and cannot sign in again.'
        : `${a.email} is signed out everywhere at once and can no longer sign in. Their invitees stay.`,
      ok: 'Remove admin',
    });
    if (!ok) return;
    const res = await request('DELETE', `/api/admins/${encodeURIComponent(a.email)}`);
    if (res.status === 401) return page.sessionEnded();
    if (!res.ok) {
      notice(`Could not remove ${a.email}: ${res.error}`, true);
      return;
    }
    notice(`Removed ${a.email}.`);
    load();
  }

  $('add-admin-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const form = ev.currentTarget;
    const errEl = $('add-admin-error');
    const email = $('add-admin-email').value.trim();
    const password = $('add-admin-password').value;
    const problem = !email || !password ? 'Enter an email and a password.' : passwordProblem(password, $('add-admin-confirm').value);
    if (problem) {
      show(errEl, problem);
      return;
    }
    setBusy(form, true);
    const res = await postJSON('/api/admins', { email, password });
    setBusy(form, false);
    if (res.status === 401) return page.sessionEnded();
    if (!res.ok) {
      show(errEl, res.error);
      return;
    }
    show(errEl, '');
    form.reset();
    notice(`${email} is now an admin. Tell them their password in person or over another channel.`);
    load();
  });

  $('password-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const form = ev.currentTarget;
    const errEl = $('password-error');
    const current = $('password-current').value;
    const next = $('password-new').value;
    const problem = !current ? 'Enter your current password.' : passwordProblem(next, $('password-confirm').value);
    if (problem) {
      show(errEl, problem);
      return;
    }
    setBusy(form, true);
    const res = await postJSON('/api/admin/password', { current_password: current, new_password: next });
    setBusy(form, false);
    if (res.status === 401) return page.sessionEnded();
    if (!res.ok) {
      show(errEl, res.error);
      $(res.status === 403 ? 'password-current' : 'password-new').select();
      return;
    }
    show(errEl, '');
    form.reset();
    notice('Your password has been changed. Your other sign-ins have ended; this one stays.');
  });

  let noticeTimer = null;
  function notice(text, isError = false) {
    const n = $('admins-notice');
    n.textContent = text;
    n.classList.toggle('notice-error', isError);
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => {
      n.textContent = '';
    }, 10000);
  }

  load();
  return {
    onMe: render,
    unmount() {
      alive = false;
      clearTimeout(noticeTimer);
    },
  };
}

function cell(label, content) {
  const td = document.createElement('td');
  td.dataset.label = label;
  td.body = document.createElement('div');
  td.body.className = 'cell-body';
  if (content != null) td.body.append(content);
  td.append(td.body);
  return td;
}

function timeNode(value, now) {
  const t = document.createElement('time');
  t.textContent = shortTime(value, now) || '—';
  t.title = longTime(value);
  if (value) t.dateTime = value;
  return t;
}
