// Issue 13 item 1: live means live. An unused invite link that runs out reads "Expired" on the
// dashboard without a reload (the server's user_update with token_valid false), and a completed
// session stops counting down.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  freshServer, launchBrowser, openPage, until, sleep, apiLogin, signIn, waitLive, rowByEmail,
  unexpectedErrors, preflight,
} from './lib.mjs';

const T = { timeout: 90_000 };

describe('live updates on the dashboard', { timeout: 300_000 }, () => {
  let browser;
  const servers = [];
  before(async () => {
    preflight(assert);
    browser = await launchBrowser();
  });
  after(async () => {
    if (browser) await browser.close();
    for (const s of servers) await s.cleanup();
  });

  test('an unused invite link that runs out reads "Expired" without a reload', T, async () => {
    const s = await freshServer(['--invite-ttl-hours', '0.001']); // 3.6 s
    servers.push(s);
    const page = await openPage(browser.context, `${s.base}/`);
    await signIn(page);
    await waitLive(page);
    const api = await apiLogin(s.base);
    const r = await api.call('POST', '/api/users', { first_name: 'Una', last_name: 'Used', email: 'unused@example.com' });
    assert.equal(r.status, 201);
    const row = rowByEmail(page, 'unused@example.com');
    await row.waitFor();
    assert.match(await row.locator('.validity').textContent(), /^Valid/);
    // 3.6 s of validity, then at most 2 s for the server's event: no reload in between.
    await until(async () => (await row.locator('.validity').textContent()) === 'Expired', { timeout: 9_000, what: 'the link cell to read "Expired"' });
    assert.equal(await row.locator('.badge').textContent(), 'Expired');
    assert.equal(await row.locator('.timer-text').textContent(), 'Link expired unused');
    assert.deepEqual(unexpectedErrors(page), []);
    await page.close();
  });

  test('a completed session stops counting down', T, async () => {
    const s = await freshServer(['--session-minutes', '10']);
    servers.push(s);
    await browser.context.clearCookies();
    const page = await openPage(browser.context, `${s.base}/`);
    await signIn(page);
    await waitLive(page);
    const api = await apiLogin(s.base);
    const r = await api.call('POST', '/api/users', { first_name: 'Cora', last_name: 'Complete', email: 'cora@example.com', questions_total: 2 });
    const token = new URL(r.data.invite_url).searchParams.get('token');
    const post = (p, body) => fetch(`${s.base}${p}`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
    assert.equal((await post('/api/session/activate', { token })).status, 200);
    const row = rowByEmail(page, 'cora@example.com');
    await until(async () => / left$/.test(await row.locator('.timer-text').textContent()), { what: 'a running countdown' });
    for (let i = 0; i < 2; i++) assert.equal((await post('/api/session/answer', { token })).status, 200);
    await until(async () => (await row.locator('.badge').textContent()) === 'Completed', { what: 'Completed' });
    const a = await row.locator('.timer-text').textContent();
    await sleep(1_500);
    const b = await row.locator('.timer-text').textContent();
    assert.equal(a, 'Completed');
    assert.equal(b, 'Completed', 'no countdown after completion');
    await page.close();
  });
});
