// The sign-in form. It asks GET /api/admin/auth (contract v2) what to offer: the password
// fields, "Sign in with <provider>" (a link to /api/admin/oidc/login), or both. A server
// without that route (404) or out of reach gets the password form.
//
// `?signin_error=<reason>` is what the OIDC callback redirects to when a sign-in failed: the
// form shows it as a sentence and drops it from the address bar, so a reload does not show it
// again. The "signed out" note, like any error, goes away as soon as a new attempt starts.

import { request, postJSON } from './api.js';
import { sentence } from './util.js';
import { show, setBusy } from './dom.js';

const $ = (id) => document.getElementById(id);
const DEFAULT_NOTE = 'Use the email and password of your catalytic admin account.';

/** Mount the sign-in view (already cloned into the page). */
export function mountSignIn(root, { onSignedIn }) {
  const form = $('signin-form');
  const note = $('signin-note');
  const problem = $('signin-problem');
  const errEl = $('signin-error');
  let alive = true;
  let offers = { password: true, oidc: null };

  function setNote(text) {
    note.textContent = text || defaultNote();
    note.classList.toggle('form-warning', Boolean(text));
    (offers.password ? $('signin-email') : $('signin-oidc-link')).focus();
  }

  function defaultNote() {
    if (offers.oidc && offers.password) return `Sign in with ${offers.oidc.name}, or with the email and password of your catalytic admin account.`;
    if (offers.oidc) return `Sign in with your ${offers.oidc.name} account.`;
    return DEFAULT_NOTE;
  }

  function clearMessages() {
    show(problem, '');
    show(errEl, '');
    if (note.classList.contains('form-warning')) setNote('');
  }

  // Failure reasons from the identity provider's round trip.
  const params = new URLSearchParams(location.search);
  const reason = params.get('signin_error');
  if (reason != null) {
    show(problem, `Sign-in did not work: ${sentence(reason || 'unknown reason')}`);
    params.delete('signin_error');
    const rest = params.toString();
    history.replaceState(history.state, '', `${location.pathname}${rest ? `?${rest}` : ''}${location.hash}`);
  }

  (async () => {
    const res = await request('GET', '/api/admin/auth');
    if (!alive || !res.ok || !res.data) return; // 404: a server without OIDC support
    offers = {
      password: res.data.password !== false,
      oidc: res.data.oidc && typeof res.data.oidc.name === 'string' ? res.data.oidc : null,
    };
    const link = $('signin-oidc-link');
    if (offers.oidc) link.textContent = `Sign in with ${offers.oidc.name}`;
    $('signin-oidc').hidden = !offers.oidc;
    $('signin-or').hidden = !(offers.oidc && offers.password);
    form.hidden = !offers.password;
    if (!note.classList.contains('form-warning')) note.textContent = defaultNote();
  })();

  $('signin-oidc-link').addEventListener('click', () => clearMessages());

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearMessages();
    const email = $('signin-email').value.trim();
    const password = $('signin-password').value;
    if (!email || !password) {
      show(errEl, 'Enter your email and password.');
      (email ? $('signin-password') : $('signin-email')).focus();
      return;
    }
    setBusy(form, true);
    const res = await postJSON('/api/admin/login', { email, password });
    setBusy(form, false);
    if (!res.ok) {
      show(errEl, res.error);
      $('signin-password').select();
      return;
    }
    form.reset();
    onSignedIn();
  });

  return {
    setNote,
    unmount() {
      alive = false;
    },
  };
}
