// First-admin setup: POST /api/admin/setup {code, email, password} → 204 + admin_session
// cookie, then the dashboard. The code comes from `?code=` (the URL the server logs once).
// The page states the password rule and asks for the password twice; whether it is too easy
// to guess is the server's call (422), and its reason is shown as it says it.

import { postJSON } from './api.js';
import { passwordProblem } from './util.js';

const $ = (id) => document.getElementById(id);
const code = new URLSearchParams(location.search).get('code') || '';

if (!code) $('code-field').hidden = false;
$(code ? 'setup-email' : 'setup-code').focus();

$('setup-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const form = ev.currentTarget;
  const errEl = $('setup-error');
  const body = {
    code: code || $('setup-code').value.trim(),
    email: $('setup-email').value.trim(),
    password: $('setup-password').value,
  };
  if (!body.code || !body.email || !body.password) {
    show(errEl, body.code ? 'Enter an email and a password.' : 'Enter the setup code from the server log.');
    return;
  }
  const problem = passwordProblem(body.password, $('setup-confirm').value);
  if (problem) {
    show(errEl, problem);
    $('setup-password').focus();
    return;
  }
  busy(form, true);
  const res = await postJSON('/api/admin/setup', body);
  if (!res.ok) {
    busy(form, false);
    const extra = res.status === 403
      ? ' If an admin already exists, sign in instead.'
      : '';
    show(errEl, res.error + extra);
    if (res.status === 422) $('setup-password').select();
    if (res.status === 403) addSignInLink(errEl);
    return;
  }
  location.assign('/');
});

function show(el, text) {
  el.textContent = text;
  el.hidden = !text;
}

function addSignInLink(el) {
  const a = document.createElement('a');
  a.href = '/';
  a.textContent = 'Go to the admin sign-in';
  el.append(' ', a);
}

function busy(form, on) {
  for (const b of form.querySelectorAll('button, input')) b.disabled = on;
}
