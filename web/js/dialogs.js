// The dashboard's dialogs: a confirmation for anything that cannot be undone, "Edit invitee",
// and "Import invitees from CSV". Each is a native <dialog> (focus is trapped and restored by
// the browser; Escape cancels), cloned from its <template> when opened. The confirmation and
// the edit form are removed again when closed, so their labels never compete with the page's;
// the import dialog stays once made, because an import goes on while it is closed.

import { request, postJSON, retryBusy } from './api.js';
import { fullName } from './util.js';
import { inviteRows } from './csv.js';
import { show, setBusy } from './dom.js';

const $ = (id) => document.getElementById(id);

/** The dialog `name`, made from its template if it is not in the page; `wire(dialog)` runs once. */
function dialogFor(name, { keep = false, wire = () => {} } = {}) {
  let dialog = $(name);
  if (dialog) return dialog;
  document.body.append($(`tpl-${name}`).content.cloneNode(true));
  dialog = $(name);
  wire(dialog);
  if (!keep) dialog.addEventListener('close', () => dialog.remove());
  return dialog;
}

/**
 * Ask before an action: resolves true when the admin pressed the `ok` button.
 * @param {{title: string, text: string, ok: string}} o
 */
export function confirmAction({ title, text, ok }) {
  const dialog = dialogFor('confirm');
  $('confirm-title').textContent = title;
  $('confirm-text').textContent = text;
  $('confirm-ok').textContent = ok;
  dialog.returnValue = '';
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
  });
}

// ---------------------------------------------------------------- edit

let editing = null; // {user, onDone}

/** Open "Edit invitee" for `user`; `onDone(result)` gets the PATCH answer when it succeeded. */
export function editUser(user, onDone) {
  dialogFor('edit', { wire: wireEdit });
  editing = { user, onDone };
  $('edit-first').value = user.first_name || '';
  $('edit-last').value = user.last_name || '';
  $('edit-email').value = user.email || '';
  const total = Number(String(user.progress || '').split('/')[1]);
  $('edit-total').value = Number.isFinite(total) && total > 0 ? String(total) : '';
  show($('edit-error'), '');
  $('edit-title').textContent = `Edit ${fullName(user)}`;
  $('edit').showModal();
  $('edit-first').focus();
}

function wireEdit() {
  $('edit-cancel').addEventListener('click', () => $('edit').close());
  $('edit-form').addEventListener('submit', saveEdit);
}

async function saveEdit(ev) {
  ev.preventDefault();
  if (!editing) return;
  const form = ev.currentTarget;
  const { user, onDone } = editing;
  const errEl = $('edit-error');
  const body = {};
  const first = $('edit-first').value.trim();
  const last = $('edit-last').value.trim();
  const email = $('edit-email').value.trim();
  const total = $('edit-total').value.trim();
  if (!first || !last || !email || !total) {
    show(errEl, 'Please fill in every field.');
    return;
  }
  if (!/^\d+$/.test(total) || Number(total) < 1 || Number(total) > 10000) {
    show(errEl, 'The number of questions must be a whole number from 1 to 10,000.');
    $('edit-total').focus();
    return;
  }
  if (first !== user.first_name) body.first_name = first;
  if (last !== user.last_name) body.last_name = last;
  if (email !== user.email) body.email = email;
  if (`${user.progress}`.split('/')[1] !== total) body.questions_total = Number(total);
  if (Object.keys(body).length === 0) {
    $('edit').close();
    return;
  }
  setBusy(form, true);
  const res = await request('PATCH', `/api/users/${encodeURIComponent(user.id)}`, body);
  setBusy(form, false);
  if (!res.ok) {
    show(errEl, res.error);
    return;
  }
  editing = null;
  $('edit').close();
  onDone(res);
}

// ---------------------------------------------------------------- import

/** How many invitations are sent at once (a browser opens at most 6 connections to a server):
 * enough to finish 1,000 in seconds; a 503 with Retry-After (storage or broadcast backlog busy)
 * is waited out and retried. */
const PARALLEL = 6;

let importing = false;
let importHooks = null;

/** Open "Import invitees from CSV". `hooks.sessionEnded()` is called on a 401. */
export function openImport(hooks) {
  dialogFor('import', { keep: true, wire: wireImport });
  importHooks = hooks;
  if (!importing) {
    $('import-status').textContent = '';
    showProblems([]);
  }
  $('import').showModal();
  $('import-text').focus();
}

function wireImport() {
  $('import-close').addEventListener('click', () => $('import').close());
  $('import-file').addEventListener('change', readFile);
  $('import-form').addEventListener('submit', runImport);
}

async function readFile(ev) {
  const file = ev.target.files && ev.target.files[0];
  if (!file) return;
  if (file.size > 5 * 1024 * 1024) {
    $('import-status').textContent = 'That file is larger than 5 MB; split it into smaller files.';
    return;
  }
  $('import-text').value = await file.text();
  $('import-status').textContent = `Read ${file.name}. Press Invite to send the invitations.`;
}

async function runImport(ev) {
  ev.preventDefault();
  if (importing) return;
  const form = ev.currentTarget;
  const { rows, errors } = inviteRows($('import-text').value);
  if (rows.length === 0 && errors.length === 0) {
    $('import-status').textContent = 'Paste some rows or choose a file first.';
    return;
  }
  importing = true;
  setBusy(form, true);
  $('import-close').disabled = false; // closing keeps the import running
  const problems = [...errors];
  showProblems(problems);
  let done = 0;
  let invited = 0;
  const status = $('import-status');
  const progress = () => {
    status.textContent = `Sending ${rows.length.toLocaleString('en')} invitations: ${done.toLocaleString('en')} done…`;
  };
  progress();
  let next = 0;
  let stop = false;
  async function worker() {
    while (!stop && next < rows.length) {
      const row = rows[next++];
      const res = await invite(row);
      done++;
      if (res.ok) invited++;
      else if (res.status === 401) stop = true;
      else problems.push({ line: row.line, reason: `Line ${row.line}: ${res.error}` });
      if (done % 25 === 0 || done === rows.length) progress();
    }
  }
  await Promise.all(Array.from({ length: PARALLEL }, worker));
  importing = false;
  setBusy(form, false);
  if (stop) {
    importHooks?.sessionEnded();
    return;
  }
  problems.sort((a, b) => a.line - b.line);
  showProblems(problems);
  const failed = problems.length;
  status.textContent = `Invited ${invited.toLocaleString('en')} ${invited === 1 ? 'person' : 'people'}.` +
    (failed ? ` ${failed.toLocaleString('en')} ${failed === 1 ? 'line was' : 'lines were'} not imported; see below.` : '');
  if (failed === 0) $('import-text').value = '';
}

async function invite(row) {
  const body = { first_name: row.first_name, last_name: row.last_name, email: row.email };
  if (row.questions_total !== undefined) body.questions_total = row.questions_total;
  // Storage or broadcast backlog busy (503): wait as told, then the same row again.
  return retryBusy(() => postJSON('/api/users', body));
}

function showProblems(problems) {
  const box = $('import-problems');
  box.hidden = problems.length === 0;
  $('import-problems-title').textContent = problems.length === 1 ? '1 line was not imported' : `${problems.length.toLocaleString('en')} lines were not imported`;
  const list = $('import-problem-list');
  // At most 200 lines listed: enough to fix a file, not enough to freeze the page.
  list.replaceChildren(...problems.slice(0, 200).map((p) => {
    const li = document.createElement('li');
    li.textContent = p.reason;
    return li;
  }));
  if (problems.length > 200) {
    const li = document.createElement('li');
    li.textContent = `…and ${problems.length - 200} more.`;
    list.append(li);
  }
}
