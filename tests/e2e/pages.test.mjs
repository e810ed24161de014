// End-to-end: the real catalytic binary on 127.0.0.1 and headless system Chromium.
//
//   cd tests/e2e && npm install        # playwright-core only; no browser download
//   node --test tests/e2e/             # from the repo root (CATALYTIC_BIN overrides the binary)
//
// Scenarios run in order against one server (started with --session-minutes 1 so the countdown
// visibly moves): sign-in form, live invite across two tabs, session page countdown + Answer,
// delete with confirmation, SIGTERM + restart on the same port and db, sign out. Separate short
// servers cover the first-admin setup page, an expiring session and an invalid link.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  ADMIN_PASSWORD, SCREENSHOTS, tempDir, removeDir, createAdmin, startServer, launchBrowser,
  openPage, until, sleep, connText, mmssToSeconds, ensureScreenshotDir, apiLogin, onBase,
  signIn, waitLive, rowByEmail, rowEmails, unexpectedErrors, preflight as checkTools,
} from './lib.mjs';

const TEST_TIMEOUT = 90_000;

function preflight() {
  checkTools(assert);
}

describe('web pages against the real server', { timeout: 600_000 }, () => {
  let dir;
  let db;
  let server;
  let browser;
  let dash; // first dashboard tab
  let dash2; // second dashboard tab
  const ada = { first: 'Ada', last: 'Lovelace', email: 'ada@example.com' };
  const alan = { first: 'Alan', last: 'Turing', email: 'alan@example.com' };
  const serverArgs = ['--session-minutes', '1'];

  before(async () => {
    preflight();
    dir = tempDir();
    db = path.join(dir, 'db.sqlite');
    await createAdmin(db);
    server = await startServer({ db, args: serverArgs });
    browser = await launchBrowser();
    ensureScreenshotDir();
  });

  after(async () => {
    if (browser) await browser.close();
    if (server) await server.stop('SIGTERM');
    if (dir) removeDir(dir);
  });

  test('sign-in form: wrong password shows the server error, right one opens the dashboard', { timeout: TEST_TIMEOUT }, async () => {
    dash = await openPage(browser.context, `${server.base}/`);
    await dash.getByRole('button', { name: 'Sign in', exact: true }).waitFor();
    assert.equal(await dash.locator('#dashboard').isHidden(), true);

    await signIn(dash, 'wrong-password');
    const err = dash.locator('#signin-error');
    await err.waitFor({ state: 'visible' });
    const errText = (await err.textContent()).trim();
    assert.ok(errText.length > 0, 'an error text is shown');

    await signIn(dash);
    await dash.getByRole('heading', { name: 'Invitees', exact: true }).waitFor();
    await waitLive(dash);
    // Fresh database: the empty state tells the admin what to do.
    await dash.getByText('No one here yet').waitFor();
    assert.deepEqual(unexpectedErrors(dash, [/401/]), []);
  });

  test('invite in one tab, the row appears in a second tab without reload', { timeout: TEST_TIMEOUT }, async () => {
    dash2 = await openPage(browser.context, `${server.base}/`);
    await dash2.getByRole('heading', { name: 'Invitees', exact: true }).waitFor();
    await waitLive(dash2);

    for (const p of [ada, alan]) {
      await dash.getByLabel('First name').fill(p.first);
      await dash.getByLabel('Last name').fill(p.last);
      await dash.getByLabel('Email', { exact: true }).fill(p.email);
      await dash.getByRole('button', { name: 'Invite', exact: true }).click();
      await rowByEmail(dash2, p.email).waitFor({ timeout: 5_000 });
    }
    // Newest first, in both tabs, each row exactly once.
    assert.deepEqual(await rowEmails(dash2), [alan.email, ada.email]);
    assert.deepEqual(await rowEmails(dash), [alan.email, ada.email]);

    const row = rowByEmail(dash2, ada.email);
    assert.equal((await row.locator('.badge').textContent()).trim(), 'Invited');
    assert.equal((await row.locator('.progress-text').textContent()).trim().replace(/\d+$/, 'N'), '0/N');
    assert.match(await row.locator('.link-text').getAttribute('title'), /\/session\?token=/);
    assert.match((await row.locator('.validity').textContent()).trim(), /^Valid/);
    await row.getByRole('button', { name: 'Copy invite link of Ada Lovelace' }).click();
    assert.equal(await dash2.locator('#counts .count-invited .count-n').textContent(), '2');

    // Filter narrows the table.
    await dash.getByLabel('Search').fill('lovelace');
    await until(async () => (await rowEmails(dash)).join() === ada.email, { what: 'filtered rows' });
    await dash.getByLabel('Search').fill('');
    assert.deepEqual(unexpectedErrors(dash, [/401/]), []);
    assert.deepEqual(unexpectedErrors(dash2), []);
  });

  test('session page: countdown ticks, Answer moves progress, dashboard follows', { timeout: TEST_TIMEOUT }, async () => {
    const inviteUrl = await rowByEmail(dash, ada.email).locator('.link-text').getAttribute('title');
    const s = await openPage(browser.context, onBase(server.base, inviteUrl));
    await s.getByRole('button', { name: 'Start interview' }).click();
    const timer = s.locator('#remaining');
    await until(async () => mmssToSeconds(await timer.textContent()) != null, { what: 'countdown mm:ss' });
    const t1 = mmssToSeconds(await timer.textContent());
    assert.ok(t1 > 0 && t1 <= 60, `countdown starts within the 1-minute session, got ${t1}`);
    await sleep(2_300);
    const t2 = mmssToSeconds(await timer.textContent());
    assert.ok(t2 < t1, `countdown decreases (${t1} → ${t2})`);
    await waitLive(s);

    await s.getByRole('button', { name: 'Answer', exact: true }).click();
    await until(async () => /^1\/\d+$/.test((await s.locator('#progress-text').textContent()).trim()), { what: 'progress 1/N' });
    await s.getByRole('button', { name: 'Answer', exact: true }).click();
    await until(async () => /^2\/\d+$/.test((await s.locator('#progress-text').textContent()).trim()), { what: 'progress 2/N' });

    // The admin tabs see the session through the stream.
    const row = rowByEmail(dash2, ada.email);
    await until(async () => (await row.locator('.badge').textContent()).trim() === 'In progress', { what: 'status In progress' });
    await until(async () => /^2\/\d+$/.test((await row.locator('.progress-text').textContent()).trim()), { what: 'row progress 2/N' });
    const rowTimer = async () => mmssToSeconds((await row.locator('.timer-text').textContent()).replace(/ left$/, ''));
    await until(async () => (await rowTimer()) != null, { what: 'row countdown' });
    const r1 = await rowTimer();
    await sleep(1_600);
    const r2 = await rowTimer();
    assert.ok(r2 < r1, `dashboard countdown ticks locally (${r1} → ${r2})`);

    await s.screenshot({ path: path.join(SCREENSHOTS, 'session.png'), fullPage: true });
    await s.setViewportSize({ width: 375, height: 740 });
    await s.screenshot({ path: path.join(SCREENSHOTS, 'session-375.png'), fullPage: true });
    await dash.screenshot({ path: path.join(SCREENSHOTS, 'dashboard.png'), fullPage: true });
    await dash2.setViewportSize({ width: 375, height: 800 });
    await dash2.screenshot({ path: path.join(SCREENSHOTS, 'dashboard-375.png'), fullPage: true });
    // 375 px wide: no horizontal scrolling on either page.
    for (const p of [s, dash2]) {
      const overflow = await p.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
      assert.ok(overflow <= 0, `page scrolls sideways at 375 px by ${overflow} px: ${p.url()}`);
    }
    await dash2.setViewportSize({ width: 1280, height: 860 });

    assert.deepEqual(unexpectedErrors(s), []);
    await s.close();
  });

  test('New invite link replaces the link; Delete asks first and removes the row everywhere', { timeout: TEST_TIMEOUT }, async () => {
    const row = rowByEmail(dash, alan.email);
    const oldLink = await row.locator('.link-text').getAttribute('title');
    await row.getByRole('button', { name: 'New invite link', exact: true }).click();
    const dialog = dash.getByRole('dialog');
    await dialog.waitFor();
    assert.match(await dialog.textContent(), /current link stops working/);
    await dialog.getByRole('button', { name: 'Create new link' }).click();
    await until(async () => (await rowByEmail(dash2, alan.email).locator('.link-text').getAttribute('title')) !== oldLink,
      { what: 'new invite link in the other tab' });

    await row.getByRole('button', { name: 'Delete', exact: true }).click();
    await dialog.waitFor();
    // Cancel keeps the row.
    await dialog.getByRole('button', { name: 'Cancel' }).click();
    await dialog.waitFor({ state: 'hidden' });
    assert.equal(await rowByEmail(dash, alan.email).count(), 1);

    await row.getByRole('button', { name: 'Delete', exact: true }).click();
    await dialog.waitFor();
    await dialog.getByRole('button', { name: 'Delete', exact: true }).click();
    await until(async () => (await rowByEmail(dash2, alan.email).count()) === 0, { what: 'row gone in tab 2' });
    await until(async () => (await rowByEmail(dash, alan.email).count()) === 0, { what: 'row gone in tab 1' });
    assert.deepEqual(await rowEmails(dash), [ada.email]);
    assert.deepEqual(unexpectedErrors(dash, [/401/]), []);
    assert.deepEqual(unexpectedErrors(dash2), []);
  });

  test('server stops: "Reconnecting…"; restarts on the same port and db: "Live", table intact', { timeout: 120_000 }, async () => {
    const before = await rowEmails(dash);
    const port = server.port;
    const exit = await server.stop('SIGTERM');
    assert.equal(exit.code, 0, `server exits 0 on SIGTERM (got ${JSON.stringify(exit)})`);

    await until(async () => /^Reconnecting/.test(await connText(dash)), { timeout: 10_000, what: '"Reconnecting" indicator' });
    assert.equal(await dash.locator('#conn').getAttribute('data-state'), 'offline');
    await until(async () => /^Reconnecting in \d+s…$/.test(await connText(dash)), { timeout: 10_000, what: '"Reconnecting in Ns…"' });
    await dash.screenshot({ path: path.join(SCREENSHOTS, 'dashboard-offline.png') });

    server = await startServer({ db, listen: `127.0.0.1:${port}`, args: serverArgs });
    // Full jitter may draw a wait of up to 30 s after a few failed attempts; the banner's
    // "Retry now" is not used here, this is the automatic path.
    await waitLive(dash, 45_000);
    await waitLive(dash2, 45_000);
    await until(async () => (await rowEmails(dash)).join() === before.join(), { what: 'same rows after restart' });
    assert.deepEqual(await rowEmails(dash2), before);
    // While the server was down Chromium logs each refused WebSocket attempt; nothing else.
    const down = [/WebSocket connection to .* failed/, /ERR_CONNECTION_REFUSED/, /401/];
    assert.deepEqual(unexpectedErrors(dash, down), []);
    assert.deepEqual(unexpectedErrors(dash2, down), []);
    dash.errors.length = 0;
    dash2.errors.length = 0;
  });

  test('Sign out returns to the sign-in form', { timeout: TEST_TIMEOUT }, async () => {
    await dash.getByRole('button', { name: 'Sign out', exact: true }).click();
    await dash.getByRole('button', { name: 'Sign in', exact: true }).waitFor();
    assert.equal(await dash.locator('#dashboard').isHidden(), true);
    // The other tab's stream is closed 1008 by the server on logout → it shows the form too.
    await dash2.getByRole('button', { name: 'Sign in', exact: true }).waitFor({ timeout: 10_000 });
    await dash.reload();
    await dash.getByRole('button', { name: 'Sign in', exact: true }).waitFor();
    assert.deepEqual(unexpectedErrors(dash), []);
    assert.deepEqual(unexpectedErrors(dash2), []);
  });
});

describe('pages on separate short-lived servers', { timeout: 300_000 }, () => {
  let browser;
  const dirs = [];
  const servers = [];

  before(async () => {
    preflight();
    browser = await launchBrowser();
  });
  after(async () => {
    if (browser) await browser.close();
    for (const s of servers) await s.stop('SIGTERM');
    for (const d of dirs) removeDir(d);
  });

  async function freshServer(args = [], withAdmin = true) {
    const d = tempDir();
    dirs.push(d);
    const db = path.join(d, 'db.sqlite');
    if (withAdmin) await createAdmin(db);
    const s = await startServer({ db, args });
    servers.push(s);
    return s;
  }

  test('/setup?code=…: wrong code shows the error, right code creates the admin and opens the dashboard', { timeout: TEST_TIMEOUT }, async () => {
    const s = await freshServer([], false);
    const setupRe = /\/setup\?code=([A-Za-z0-9_\-%.~]+)/;
    const m = await until(() => setupRe.exec(s.log()), { timeout: 5_000, what: `a setup URL in the server log:\n${s.log()}` });
    const page = await openPage(browser.context, `${s.base}/setup?code=wrong-${m[1]}`);
    await page.getByLabel('Email', { exact: true }).fill('first@example.com');
    await page.getByLabel('Password', { exact: true }).fill(ADMIN_PASSWORD);
    await page.getByLabel('Repeat the password').fill(ADMIN_PASSWORD);
    await page.getByRole('button', { name: 'Create admin account' }).click();
    await page.locator('#setup-error').waitFor({ state: 'visible' });

    await page.goto(`${s.base}/setup?code=${m[1]}`);
    await page.getByLabel('Email', { exact: true }).fill('first@example.com');
    await page.getByLabel('Password', { exact: true }).fill(ADMIN_PASSWORD);
    await page.getByLabel('Repeat the password').fill(ADMIN_PASSWORD);
    await page.getByRole('button', { name: 'Create admin account' }).click();
    await page.waitForURL(`${s.base}/`);
    await page.getByRole('heading', { name: 'Invitees', exact: true }).waitFor();
    await waitLive(page);
    assert.deepEqual(unexpectedErrors(page, [/403/]), []);
    await page.close();
  });

  test('an expiring session ends on /session/expired with a kind explanation', { timeout: TEST_TIMEOUT }, async () => {
    const s = await freshServer(['--session-minutes', '0.05']);
    const api = await apiLogin(s.base);
    const created = await api.call('POST', '/api/users', { first_name: 'Grace', last_name: 'Hopper', email: 'grace@example.com' });
    assert.equal(created.status, 201, JSON.stringify(created));
    const page = await openPage(browser.context, onBase(s.base, created.data.invite_url));
    await page.getByRole('button', { name: 'Start interview' }).click();
    await page.waitForURL(/\/session\/expired$/, { timeout: 30_000 });
    await page.getByRole('heading', { name: 'Your session has ended' }).waitFor();
    assert.deepEqual(unexpectedErrors(page), []);

    // The used-up link now answers 410 → the expired page again, never a blank page.
    await page.goto(onBase(s.base, created.data.invite_url));
    await page.getByRole('button', { name: 'Start interview' }).click();
    await page.waitForURL(/\/session\/expired$/, { timeout: 10_000 });
    await page.close();
  });

  test('heartbeat: pings are answered with pongs, so the stream stays open', { timeout: TEST_TIMEOUT }, async () => {
    const s = await freshServer(['--heartbeat-secs', '1']);
    await browser.context.clearCookies(); // cookies are per host, not per port
    const page = await openPage(browser.context);
    let sockets = 0;
    let pongs = 0;
    page.on('websocket', (ws) => {
      sockets++;
      ws.on('framesent', (f) => {
        if (String(f.payload).includes('"pong"')) pongs++;
      });
    });
    await page.goto(`${s.base}/`);
    await signIn(page);
    await waitLive(page);
    await sleep(4_500); // > 2 heartbeat intervals: a silent client would have been closed
    assert.equal(await connText(page), 'Live');
    assert.ok(pongs >= 2, `pongs sent: ${pongs}`);
    assert.equal(sockets, 2, 'one refused (not signed in) + one signed-in stream, no reconnects');
    assert.deepEqual(unexpectedErrors(page), []);
    await page.close();
  });

  test('an invalid link shows "This link is not valid"', { timeout: TEST_TIMEOUT }, async () => {
    const s = servers[0] || (await freshServer());
    const page = await openPage(browser.context, `${s.base}/session?token=not-a-real-token`);
    await page.getByRole('button', { name: 'Start interview' }).click();
    await page.getByRole('heading', { name: 'This link is not valid' }).waitFor();
    await page.goto(`${s.base}/session`);
    await page.getByRole('heading', { name: 'This link is not valid' }).waitFor();
    assert.deepEqual(unexpectedErrors(page, [/401/]), []);
    await page.close();
  });

  test('favicon and stylesheet are served (no console 404s)', { timeout: TEST_TIMEOUT }, async () => {
    const s = servers[0] || (await freshServer());
    for (const p of ['/favicon.svg', '/style.css', '/js/stream.js', '/js/admin.js', '/js/session.js', '/js/util.js']) {
      const r = await fetch(`${s.base}${p}`, { signal: AbortSignal.timeout(5_000) });
      assert.equal(r.status, 200, `${p} → ${r.status}`);
    }
    const page = await openPage(browser.context, `${s.base}/session/expired`);
    await page.getByRole('heading', { name: 'Your session has ended' }).waitFor();
    await sleep(300);
    assert.deepEqual(unexpectedErrors(page), []);
    await page.close();
  });
});
