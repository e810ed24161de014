// The Invitees view: invite form, status counts (which filter when clicked), search, sortable
// columns, 50 rows a page, and the row actions (copy, edit, new link, delete).
//
// Rendering rules, so that 5,000 invitees stay fast and a live update touches one row:
// * Only the rows of the current page exist in the DOM (`rows`, keyed by user id).
// * An update that cannot move its user (same filter verdict, same sort key: `sameSlot`) just
//   updates that row if it is on the page — O(1), no sorting, no other row touched.
// * Anything else (added, deleted, moved) recomputes the page, at most every 150 ms (a burst of
//   1,000 invitations redraws a few dozen times, not 1,000), and moves
//   or creates only the rows whose place changed.
// * Counts are kept incrementally from each change's before/after status.
// * Countdowns tick locally every 250 ms for the rows on the page only.

import { postJSON, request } from './api.js';
import { STATUSES, statusLabel, fullName, count } from './util.js';
import { selectPage, sameSlot, countByStatus, PAGE_SIZE } from './users.js';
import { isOnline } from './presence.js';
import { buildRow, updateRow, tickRow, setOnline } from './rows.js';
import { confirmAction, editUser, openImport } from './dialogs.js';
import { show, setBusy, setText } from './dom.js';

const $ = (id) => document.getElementById(id);
const RENDER_EVERY_MS = 150;

// The view's settings survive switching to Admins or System and back.
const settings = { query: '', status: null, sort: 'created', dir: 'desc', page: 1 };

export function mountInvitees(root, page) {
  const tbody = $('users-body');
  const rows = new Map(); // id -> row, for the rows on the current page
  let counts = countByStatus(page.store().values());
  let renderTimer = null;
  let lastRender = 0;
  let ticker = null;

  // ------------------------------------------------------------ rendering

  function renderAll() {
    if (renderTimer != null) clearTimeout(renderTimer);
    renderTimer = null;
    lastRender = performance.now();
    const store = page.store();
    const view = selectPage(store.values(), { ...settings, pageSize: PAGE_SIZE });
    settings.page = view.page;
    const now = Date.now();
    const presence = page.presence();
    const keep = new Set();
    view.rows.forEach((u, i) => {
      keep.add(u.id);
      let row = rows.get(u.id);
      if (!row) {
        row = buildRow(u, actions);
        rows.set(u.id, row);
        updateRow(row, u, now, isOnline(presence, u.id));
      } else if (row.user !== u) {
        updateRow(row, u, now, isOnline(presence, u.id));
      }
      const at = tbody.children[i];
      if (at !== row.tr) tbody.insertBefore(row.tr, at || null);
    });
    for (const [id, row] of rows) {
      if (keep.has(id)) continue;
      const hadFocus = row.tr.contains(document.activeElement);
      row.tr.remove();
      rows.delete(id);
      if (hadFocus) $('filter').focus();
    }
    renderCounts();
    renderChrome(store.size, view);
  }

  function scheduleRender() {
    if (renderTimer != null) return;
    const wait = Math.max(0, lastRender + RENDER_EVERY_MS - performance.now());
    renderTimer = setTimeout(renderAll, wait);
  }

  // The counts change with nearly every event of a burst; draw them at most as often as the
  // table (a change of text costs a layout of the page).
  let countsTimer = null;
  function scheduleCounts() {
    if (countsTimer != null || renderTimer != null) return;
    countsTimer = setTimeout(() => {
      countsTimer = null;
      renderCounts();
    }, RENDER_EVERY_MS);
  }

  // Empty state, "no match", the table's caption and the pager.
  function renderChrome(total, view) {
    $('empty').hidden = total !== 0;
    const noMatch = $('no-match');
    noMatch.hidden = !(total > 0 && view.matching === 0);
    if (!noMatch.hidden) {
      const what = [settings.status && `with status “${statusLabel(settings.status)}”`, settings.query.trim() && `matching “${settings.query.trim()}”`]
        .filter(Boolean).join(' and ');
      setText(noMatch, `No invitees ${what}.`);
    }
    $('users').hidden = view.matching === 0;
    const sortName = { name: 'name', status: 'status', created: 'invitation time', session: 'session start' }[settings.sort];
    setText($('users-caption'), `Invitees, sorted by ${sortName}, ${settings.dir === 'asc' ? 'ascending' : 'descending'}`);
    const pager = $('pager');
    pager.hidden = view.matching <= PAGE_SIZE;
    setText($('pager-range'), view.matching ? `Showing ${count(view.first)}–${count(view.last)} of ${count(view.matching)}` : '');
    setText($('page-of'), `Page ${view.page} of ${view.pages}`);
    $('page-prev').disabled = view.page <= 1;
    $('page-next').disabled = view.page >= view.pages;
    for (const th of root.querySelectorAll('th[data-sort]')) {
      const on = th.dataset.sort === settings.sort;
      const aria = on ? (settings.dir === 'asc' ? 'ascending' : 'descending') : 'none';
      if (th.getAttribute('aria-sort') !== aria) th.setAttribute('aria-sort', aria);
    }
  }

  // The counts are buttons: pressing one shows only that status, pressing it again all.
  function renderCounts() {
    const box = $('counts');
    const items = [[null, 'All', counts.total], ...STATUSES.map((s) => [s, statusLabel(s), counts[s]])];
    if (box.children.length !== items.length) {
      box.replaceChildren(...items.map(([s, label]) => {
        const b = document.createElement('button');
        b.type = 'button';
        b.className = `count count-${s || 'total'}`;
        const l = document.createElement('span');
        l.className = s ? `badge badge-${s}` : 'count-label';
        l.textContent = label;
        const n = document.createElement('strong');
        n.className = 'count-n';
        b.append(l, ' ', n);
        b.addEventListener('click', () => {
          settings.status = s && settings.status !== s ? s : null;
          settings.page = 1;
          renderAll();
        });
        return b;
      }));
    }
    items.forEach(([s, , n], i) => {
      const b = box.children[i];
      setText(b.querySelector('.count-n'), count(n));
      const pressed = String(settings.status === s);
      if (b.getAttribute('aria-pressed') !== pressed) b.setAttribute('aria-pressed', pressed);
    });
  }

  function countChange(before, after) {
    if (before) {
      counts.total -= 1;
      if (STATUSES.includes(before.status)) counts[before.status] -= 1;
    }
    if (after) {
      counts.total += 1;
      if (STATUSES.includes(after.status)) counts[after.status] += 1;
    }
  }

  function tick() {
    const now = Date.now();
    for (const row of rows.values()) tickRow(row, now);
  }

  // ------------------------------------------------------------ controls

  const filter = $('filter');
  filter.value = settings.query;
  filter.addEventListener('input', () => {
    settings.query = filter.value;
    settings.page = 1;
    renderAll();
  });

  for (const th of root.querySelectorAll('th[data-sort]')) {
    th.querySelector('button').addEventListener('click', () => {
      const key = th.dataset.sort;
      if (settings.sort === key) settings.dir = settings.dir === 'asc' ? 'desc' : 'asc';
      else {
        settings.sort = key;
        // Newest and most recent first; names and statuses A→Z.
        settings.dir = key === 'created' || key === 'session' ? 'desc' : 'asc';
      }
      settings.page = 1;
      renderAll();
    });
  }

  const turn = (delta) => {
    settings.page += delta;
    renderAll();
    $('users').scrollIntoView({ block: 'start' });
  };
  $('page-prev').addEventListener('click', () => turn(-1));
  $('page-next').addEventListener('click', () => turn(1));

  $('import-open').addEventListener('click', () => openImport({ sessionEnded: page.sessionEnded }));

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
      show(errEl, `Please fill in the ${missing.map((m) => m[1]).join(', ')}.`);
      $(missing[0][0]).focus();
      return;
    }
    setBusy(form, true);
    const res = await postJSON('/api/users', body);
    setBusy(form, false);
    if (!res.ok) {
      if (res.status === 401) return page.sessionEnded();
      show(errEl, res.error);
      return;
    }
    show(errEl, '');
    form.reset();
    // The row itself arrives through the stream (user_added), never from this answer.
    okEl.textContent = `Invitation created for ${fullName(body)}. Copy their link from the table and send it to them.`;
    $('invite-first').focus();
  });

  // ------------------------------------------------------------ row actions

  const actions = {
    copy: copyLink,
    edit(row) {
      editUser(row.user, () => notice(`Saved the changes to ${fullName(row.user)}.`));
    },
    async newLink(row) {
      const u = row.user;
      const name = fullName(u);
      const running = u.status === 'in_progress';
      const ok = await confirmAction({
        title: `New invite link for ${name}?`,
        text: `The current link stops working at once${running ? ', and the interview that is running now starts over from the beginning' : ''}. Send ${name} the new link afterwards.`,
        ok: 'Create new link',
      });
      if (!ok) return;
      const res = await postJSON(`/api/users/${encodeURIComponent(u.id)}/invite`);
      if (!res.ok) {
        if (res.status === 401) return page.sessionEnded();
        notice(`Could not create a new link for ${name}: ${res.error}`, true);
        return;
      }
      notice(`New invite link created for ${name}. The previous link no longer works.`);
    },
    async remove(row) {
      const u = row.user;
      const name = fullName(u);
      const ok = await confirmAction({
        title: `Delete ${name}?`,
        text: `${name} (${u.email}) will be removed with their invite link${u.status === 'in_progress' ? ', and the interview that is running now ends at once' : ' and session'}. This cannot be undone.`,
        ok: 'Delete',
      });
      if (!ok) return;
      const res = await request('DELETE', `/api/users/${encodeURIComponent(u.id)}`);
      if (!res.ok && res.status !== 404) {
        if (res.status === 401) return page.sessionEnded();
        notice(`Could not delete ${name}: ${res.error}`, true);
        return;
      }
      notice(`Deleted ${name}.`);
      // The row leaves through the stream's user_deleted; keep focus somewhere sensible.
      if (!document.activeElement || document.activeElement === document.body) filter.focus();
    },
  };

  async function copyLink(row) {
    const url = row.url;
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
      const ta = document.createElement('textarea');
      ta.value = url;
      ta.setAttribute('readonly', '');
      ta.className = 'visually-hidden';
      document.body.append(ta);
      ta.select();
      try {
        ok = document.execCommand('copy');
      } catch {
        ok = false;
      }
      ta.remove();
      row.copyBtn.focus();
    }
    row.copied.textContent = ok ? 'Copied' : `Could not copy; the link is ${url}`;
    clearTimeout(row.copiedTimer);
    row.copiedTimer = setTimeout(() => {
      row.copied.textContent = '';
    }, 2500);
  }

  let noticeTimer = null;
  function notice(text, isError = false) {
    const n = $('notice');
    n.textContent = text;
    n.classList.toggle('notice-error', isError);
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => {
      n.textContent = '';
    }, 8000);
  }

  // ------------------------------------------------------------ start

  renderAll();
  ticker = setInterval(tick, 250);

  return {
    onReset() {
      counts = countByStatus(page.store().values());
      renderAll();
    },
    onChange(change) {
      countChange(change.before, change.kind === 'upsert' ? change.after : null);
      if (change.kind === 'upsert' && sameSlot(change.before, change.after, settings)) {
        const row = rows.get(change.id);
        if (row) updateRow(row, change.after, Date.now(), isOnline(page.presence(), change.id));
        if (change.before.status !== change.after.status) scheduleCounts();
        return;
      }
      scheduleRender();
    },
    onPresence(changedIds) {
      const presence = page.presence();
      for (const id of changedIds) {
        const row = rows.get(id);
        if (row) setOnline(row, isOnline(presence, id));
      }
    },
    unmount() {
      clearInterval(ticker);
      clearTimeout(renderTimer);
      clearTimeout(countsTimer);
      clearTimeout(noticeTimer);
    },
  };
}
