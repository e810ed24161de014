// Issue 13 item 4: many invitees. 5,000 of them (plus one with a 200-character unbroken name)
// render in under a second; the page is paginated (50 rows), sortable, filterable by the status
// counts and searchable; long text never widens the table; a live update touches one row.
// Prints the measured render time and the per-update time (frame → the row's DOM change).

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  freshServer, launchBrowser, openPage, until, apiLogin, createUsers, waitLive, rowEmails,
  unexpectedErrors, preflight,
} from './lib.mjs';

const N = 5000;
const T = { timeout: 240_000 };

// Recorded in the page before its own scripts run: when each stream frame arrived, and when
// the table first had a full page of rows.
function instrument() {
  window.__frames = [];
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (ev) => {
        const head = typeof ev.data === 'string' ? ev.data.slice(0, 40) : '';
        window.__frames.push({ at: performance.now(), head });
      });
    }
  };
  const seen = new MutationObserver(() => {
    const body = document.getElementById('users-body');
    if (body && body.children.length >= 50 && window.__tableAt == null) {
      window.__tableAt = performance.now();
      seen.disconnect();
    }
  });
  seen.observe(document, { childList: true, subtree: true });
}

describe('5,000 invitees', { timeout: 600_000 }, () => {
  let server;
  let browser;
  let api;
  let page;
  const longName = 'W'.repeat(200);

  before(async () => {
    preflight(assert);
    server = await freshServer(['--session-minutes', '30']);
    api = await apiLogin(server.base);
    const t0 = Date.now();
    await createUsers(api, N, (i) => ({ first_name: `Person${i}`, last_name: `Number${i}`, email: `user${i}@example.com` }));
    // Three sessions in progress, among the oldest (so the first page has no ticking clocks).
    const users = (await api.call('GET', '/api/users')).data;
    for (const u of users.slice(-3)) {
      const token = new URL(u.invite_url).searchParams.get('token');
      const r = await fetch(`${server.base}/api/session/activate`, {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ token }),
      });
      assert.equal(r.status, 200);
    }
    const long = await api.call('POST', '/api/users', { first_name: longName, last_name: 'L', email: `${'e'.repeat(60)}@example.com` });
    assert.equal(long.status, 201);
    console.log(`seeded ${N + 1} invitees through the API in ${Date.now() - t0} ms`);
    browser = await launchBrowser();
    const [name, value] = api.cookie.split('=');
    await browser.context.addCookies([{ name, value, url: server.base }]);
  });
  after(async () => {
    if (browser) await browser.close();
    if (server) await server.cleanup();
  });

  test('renders in under a second, and long text never widens the table', T, async () => {
    page = await openPage(browser.context);
    await page.addInitScript(instrument);
    await page.goto(`${server.base}/`);
    await until(() => page.evaluate(() => window.__tableAt != null), { timeout: 30_000, what: 'a full page of rows' });
    const m = await page.evaluate(() => {
      const initial = window.__frames.find((f) => f.head.startsWith('{"type":"initial"'));
      return { frameAt: initial && initial.at, tableAt: window.__tableAt };
    });
    assert.ok(m.frameAt != null, 'the initial frame was seen');
    const render = m.tableAt - m.frameAt;
    console.log(`${N + 1} invitees: initial frame → first page drawn ${render.toFixed(0)} ms; navigation start → drawn ${m.tableAt.toFixed(0)} ms`);
    assert.ok(render < 1000, `render took ${render.toFixed(0)} ms`);
    await waitLive(page);

    assert.equal(await page.locator('#users-body tr').count(), 50);
    assert.equal(await page.locator('#pager-range').textContent(), `Showing 1–50 of ${(N + 1).toLocaleString('en')}`);
    assert.equal(await page.locator('#counts .count-total .count-n').textContent(), (N + 1).toLocaleString('en'));

    // The 200-character name is cut with an ellipsis, the full value on hover; nothing scrolls sideways.
    const nameCell = page.locator('#users-body tr').first().locator('.user-name');
    assert.equal(await nameCell.getAttribute('title'), `${longName} L`);
    const geo = await page.evaluate(() => ({
      page: document.documentElement.scrollWidth - document.documentElement.clientWidth,
      table: document.getElementById('users').getBoundingClientRect().width,
      view: document.documentElement.clientWidth,
      cut: (() => { const e = document.querySelector('#users-body .user-name'); return e.scrollWidth > e.clientWidth; })(),
    }));
    assert.ok(geo.page <= 0, `the page scrolls sideways by ${geo.page} px`);
    assert.ok(geo.table <= geo.view, `table ${geo.table} px in a ${geo.view} px window`);
    assert.ok(geo.cut, 'the long name is truncated');
    assert.deepEqual(unexpectedErrors(page), []);
  });

  test('pages, sorting, status filter and search', T, async () => {
    await page.getByRole('button', { name: 'Next page' }).click();
    assert.equal(await page.locator('#pager-range').textContent(), `Showing 51–100 of ${(N + 1).toLocaleString('en')}`);
    assert.equal(await page.locator('#page-of').textContent(), `Page 2 of ${Math.ceil((N + 1) / 50)}`);
    await page.getByRole('button', { name: 'Previous page' }).click();

    // Name, ascending: "Person0 Number0", "Person1 …", "Person10 …" (text order).
    await page.getByRole('button', { name: 'Name', exact: true }).click();
    assert.equal(await page.locator('th[data-sort="name"]').getAttribute('aria-sort'), 'ascending');
    assert.deepEqual((await rowEmails(page)).slice(0, 3), ['user0@example.com', 'user1@example.com', 'user10@example.com']);
    await page.getByRole('button', { name: 'Name', exact: true }).click();
    assert.equal(await page.locator('th[data-sort="name"]').getAttribute('aria-sort'), 'descending');
    assert.equal((await rowEmails(page))[0].startsWith('eeee'), true, 'WWW… sorts last, so first descending');

    // Status: in progress first when sorting by session start, newest start first.
    await page.getByRole('button', { name: 'Session', exact: true }).click();
    assert.equal(await page.locator('#users-body tr .badge').first().textContent(), 'In progress');

    // The "In progress" count filters; pressing it again shows everyone.
    const chip = page.locator('#counts .count-in_progress');
    assert.equal(await chip.locator('.count-n').textContent(), '3');
    await chip.click();
    assert.equal(await chip.getAttribute('aria-pressed'), 'true');
    await until(async () => (await page.locator('#users-body tr').count()) === 3, { what: '3 rows in progress' });
    assert.equal(await page.locator('#pager').isHidden(), true);
    await chip.click();
    await until(async () => (await page.locator('#users-body tr').count()) === 50, { what: 'all again' });

    await page.getByLabel('Search').fill('user4321@');
    await until(async () => (await rowEmails(page)).join() === 'user4321@example.com', { what: 'search result' });
    await page.getByLabel('Search').fill('');
    // Back to the default: the Invited column, newest first.
    await page.locator('th[data-sort="created"] button').click();
    assert.equal(await page.locator('th[data-sort="created"]').getAttribute('aria-sort'), 'descending');
  });

  test('a live update touches one row: frame → DOM change, measured', T, async () => {
    // The default view (newest first, everyone), with nothing ticking on it.
    await page.getByLabel('Search').fill('');
    for (const b of await page.locator('#counts button[aria-pressed="true"]').all()) {
      if (!(await b.getAttribute('class')).includes('count-total')) await b.click();
    }
    for (let i = 0; i < 2 && (await page.locator('th[data-sort="created"]').getAttribute('aria-sort')) !== 'descending'; i++) {
      await page.locator('th[data-sort="created"] button').click();
    }
    assert.equal(await page.locator('th[data-sort="created"]').getAttribute('aria-sort'), 'descending');
    const targets = (await page.locator('#users-body tr').evaluateAll((trs) => trs.map((t) => Number(t.dataset.userId)))).slice(1, 21);
    const times = [];
    for (const [i, id] of targets.entries()) {
      await page.evaluate(() => {
        window.__touched = new Set();
        window.__mutAt = null;
        const body = document.getElementById('users-body');
        window.__obs?.disconnect();
        window.__obs = new MutationObserver((records) => {
          for (const r of records) {
            let n = r.target;
            while (n && n.tagName !== 'TR') n = n.parentNode;
            window.__touched.add(n ? n.dataset.userId : 'tbody');
          }
          if (window.__mutAt == null) window.__mutAt = performance.now();
        });
        window.__obs.observe(body, { subtree: true, childList: true, characterData: true, attributes: true });
        window.__framesBefore = window.__frames.length;
      });
      const r = await api.call('PATCH', `/api/users/${id}`, { last_name: `Renamed${i}` });
      assert.equal(r.status, 200);
      await until(() => page.evaluate(() => window.__mutAt != null), { timeout: 5_000, what: `row ${id} to change` });
      const got = await page.evaluate((uid) => {
        const frame = window.__frames.slice(window.__framesBefore).find((f) => f.head.startsWith('{"type":"user_update"'));
        return { frameAt: frame && frame.at, mutAt: window.__mutAt, touched: [...window.__touched], text: document.querySelector(`tr[data-user-id="${uid}"] .user-name`).textContent };
      }, id);
      assert.deepEqual(got.touched, [String(id)], `only row ${id} changed, not ${got.touched}`);
      assert.match(got.text, new RegExp(`Renamed${i}$`));
      times.push(got.mutAt - got.frameAt);
    }
    times.sort((a, b) => a - b);
    const median = times[Math.floor(times.length / 2)];
    console.log(`live update with ${N + 1} invitees: frame → row DOM change median ${median.toFixed(2)} ms, max ${times.at(-1).toFixed(2)} ms over ${times.length} updates; 1 row touched each`);
    assert.ok(median < 50, `median ${median} ms`);
  });
});
