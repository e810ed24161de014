// Admin dashboard: the stream, who is signed in, and which view is shown.
//
// Whether an admin is signed in is decided by the stream itself: the admin_session cookie is
// HttpOnly, and the server completes the handshake then closes with 1008 when it is missing.
// So: `initial` (or `resumed`) → the dashboard; 1008 → the sign-in form. GET /api/users is
// asked only as a fallback when the socket never opens.
//
// The invitee list lives in one UserStore fed only by /admin/stream (POST answers never edit
// it): `initial` replaces it, numbered events change it in place, and after a short drop the
// stream resumes from the last event it applied (contract v2) instead of reloading everything.
// Views (Invitees, Admins, System; chosen by the URL's #fragment) are cloned from <template>s
// into <main> one at a time and told about each change; the Invitees view redraws one row per
// update, not the table.

import { createStream } from './stream.js';
import { connectionIndicator } from './connection.js';
import { request, postJSON } from './api.js';
import { streamUrl } from './util.js';
import { usersStoreReducer, UserStore } from './users.js';
import { presenceReducer, emptyPresence, othersHere, onlineChanges } from './presence.js';
import { mountSignIn } from './signin.js';
import { mountInvitees } from './invitees.js';
import { mountAdmins } from './admins.js';
import { mountSystem, sampler } from './system.js';

const $ = (id) => document.getElementById(id);

const main = $('main');
const loadingView = $('loading');
const signoutBtn = $('signout');
const nav = $('nav');
const alsoHere = $('also-here');
const conn = connectionIndicator($('conn'), {
  announceEl: $('conn-announce'),
  onRetry: () => stream && stream.reconnectNow(),
});

let stream = null;
let store = new UserStore();
let presence = emptyPresence();
let me = null; // the signed-in admin's email, once GET /api/admin/me answered
let signedIn = false;
let justSignedIn = false; // move focus to the view's heading after a sign-in
let current = 'loading';
let view = null; // the mounted view: {onReset, onChange, onPresence, unmount}

/** What views may ask of the page. */
const page = {
  store: () => store,
  presence: () => presence,
  me: () => me,
  sessionEnded: () => showSignIn('Your session has ended. Please sign in again.'),
};

// ---------------------------------------------------------------- views

const VIEWS = { invitees: mountInvitees, admins: mountAdmins, system: mountSystem };

function routeView() {
  const name = location.hash.replace(/^#\/?/, '');
  return Object.hasOwn(VIEWS, name) ? name : 'invitees';
}

function show(name) {
  if (name === current) return;
  if (view) view.unmount();
  view = null;
  current = name;
  for (const el of [...main.children]) if (el.tagName !== 'TEMPLATE') el.remove();
  if (name === 'loading') {
    main.append(loadingView);
  } else {
    main.append($(`tpl-${name}`).content.cloneNode(true));
    view = name === 'signin' ? mountSignIn(main, { onSignedIn }) : VIEWS[name](main, page);
  }
  const dashboard = Object.hasOwn(VIEWS, name);
  signoutBtn.hidden = !dashboard;
  nav.hidden = !dashboard;
  for (const a of nav.querySelectorAll('a')) {
    if (a.dataset.view === name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  renderAlsoHere();
  document.title = dashboard ? `catalytic — ${name[0].toUpperCase()}${name.slice(1)}` : 'catalytic — admin';
}

window.addEventListener('hashchange', () => {
  if (!signedIn) return;
  show(routeView());
  const h1 = main.querySelector('h1');
  if (h1) h1.focus();
});

// ---------------------------------------------------------------- stream lifecycle

function startStream() {
  if (stream) stream.stop();
  let opened = false;
  let probed = false;
  const s = createStream({
    url: () => streamUrl('/admin/stream', location),
    reduce: usersStoreReducer,
    initialState: null,
    resume: true,
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
      if (state) store = state;
      if ((msg.type === 'initial' || msg.type === 'resumed') && !signedIn) {
        signedIn = true;
        const focus = justSignedIn;
        justSignedIn = false;
        fetchMe();
        sampler.start();
        show(routeView());
        conn.hide(false);
        if (focus) main.querySelector('h1')?.focus();
        return;
      }
      if (msg.type === 'presence') {
        const before = presence;
        presence = presenceReducer(presence, msg);
        if (view && view.onPresence) view.onPresence(onlineChanges(before, presence));
        renderAlsoHere();
      } else if (msg.type === 'initial') {
        if (view && view.onReset) view.onReset();
      } else if (view && view.onChange && store.change.kind !== 'none') {
        view.onChange(store.change);
      }
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

async function fetchMe() {
  const res = await request('GET', '/api/admin/me');
  if (res.ok && res.data && typeof res.data.email === 'string') {
    me = res.data.email;
    renderAlsoHere();
    if (view && view.onMe) view.onMe(me);
  }
}

// "Also here: …": the other admins watching now. Shown only when there is someone.
function renderAlsoHere() {
  const others = signedIn && Object.hasOwn(VIEWS, current) ? othersHere(presence, me) : [];
  alsoHere.hidden = others.length === 0;
  const text = others.length ? `Also here: ${others.join(', ')}` : '';
  if (alsoHere.textContent !== text) alsoHere.textContent = text;
  alsoHere.title = text;
}

function showSignIn(note) {
  if (stream) {
    const s = stream;
    stream = null;
    s.stop();
  }
  signedIn = false;
  me = null;
  store = new UserStore();
  presence = emptyPresence();
  sampler.stop();
  conn.hide(true);
  show('signin');
  view.setNote(note);
}

// ---------------------------------------------------------------- sign in / out

function onSignedIn() {
  justSignedIn = true;
  show('loading');
  startStream();
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

// ---------------------------------------------------------------- start

startStream();
