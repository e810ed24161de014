// Issue 13 item 2 (the invitee's page) and issue 12 item 10 (activation waits for a click; the
// token leaves the address bar; the cookie carries the session), in headless Chromium against
// the real binary. Screenshots of the page at 375 px before the start, running and done.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  SCREENSHOTS, freshServer, launchBrowser, openPage, until, sleep, apiLogin, onBase,
  unexpectedErrors, ensureScreenshotDir, preflight, mmssToSeconds, waitLive,
} from './lib.mjs';

const T = { timeout: 90_000 };

describe('the invitee session page', { timeout: 400_000 }, () => {
  let server;
  let browser;
  let api;

  before(async () => {
    preflight(assert);
    ensureScreenshotDir();
    server = await freshServer(['--session-minutes', '5']);
    api = await apiLogin(server.base);
    browser = await launchBrowser();
  });
  after(async () => {
    if (browser) await browser.close();
    if (server) await server.cleanup();
  });

  async function invitee(email, questions = 3) {
    const r = await api.call('POST', '/api/users', { first_name: 'Ivy', last_name: 'Invitee', email, questions_total: questions });
    assert.equal(r.status, 201, JSON.stringify(r.data));
    return r.data;
  }
  const status = async (id) => (await api.call('GET', '/api/users')).data.find((u) => u.id === id).status;

  test('nothing starts until "Start interview"; then the token leaves the address bar and the cookie carries the session', T, async () => {
    const u = await invitee('ivy@example.com', 3);
    const page = await openPage(browser.context);
    const sockets = [];
    const posts = [];
    page.on('websocket', (ws) => sockets.push(ws.url()));
    page.on('request', (r) => {
      if (r.method() === 'POST') posts.push({ url: r.url(), body: r.postData() || '' });
    });
    await page.setViewportSize({ width: 375, height: 740 });
    await page.goto(onBase(server.base, u.invite_url));
    await page.getByRole('button', { name: 'Start interview' }).waitFor();
    await sleep(1_000); // a link scanner would have run the page's scripts by now
    assert.equal(await status(u.id), 'invited', 'opening the link alone starts nothing');
    assert.equal(posts.length, 0, 'no request before the click');
    await page.screenshot({ path: path.join(SCREENSHOTS, 'session-375-start.png') });

    await page.getByRole('button', { name: 'Start interview' }).click();
    await page.getByRole('heading', { name: 'Your interview session' }).waitFor();
    assert.equal(new URL(page.url()).search, '', `the token is gone from the address bar: ${page.url()}`);
    assert.equal(await status(u.id), 'in_progress');
    // Progress is there from the first frame (contract v2: `progress` on open), not "—".
    await until(async () => (await page.locator('#progress-text').textContent()) === '0/3', { what: 'progress 0/3 from the first frame' });
    await until(async () => mmssToSeconds(await page.locator('#remaining').textContent()) > 0, { what: 'countdown' });

    await page.getByRole('button', { name: 'Answer', exact: true }).click();
    await until(async () => (await page.locator('#progress-text').textContent()) === '1/3', { what: '1/3' });
    await page.screenshot({ path: path.join(SCREENSHOTS, 'session-375-running.png') });

    assert.ok(sockets.length >= 1);
    for (const url of sockets) assert.ok(!/token=/.test(url), `stream without ?token=: ${url}`);
    const answer = posts.find((p) => p.url.endsWith('/api/session/answer'));
    assert.ok(answer && !/token/.test(answer.body), `answer without the token: ${answer && answer.body}`);

    // A reload keeps going with the cookie and shows the progress at once.
    await page.reload();
    await page.getByRole('heading', { name: 'Your interview session' }).waitFor();
    await until(async () => (await page.locator('#progress-text').textContent()) === '1/3', { what: '1/3 after a reload' });
    assert.equal(new URL(page.url()).search, '');

    // The last answers: the page says it is over and Answer stops.
    for (const n of [2, 3]) {
      await page.getByRole('button', { name: 'Answer', exact: true }).click();
      await until(async () => (await page.locator('#progress-text').textContent()) === `${n}/3`, { what: `${n}/3` });
    }
    await page.getByRole('heading', { name: 'All questions answered' }).waitFor();
    assert.equal(await page.getByRole('button', { name: 'Answer', exact: true }).isDisabled(), true);
    assert.equal((await page.locator('#session-msg').textContent()).trim(), '', 'no stale "Answer recorded"');
    assert.equal(await page.locator('#remaining').textContent(), 'Done', 'the timer no longer runs');
    await sleep(1_200);
    assert.equal(await page.locator('#remaining').textContent(), 'Done');
    await page.screenshot({ path: path.join(SCREENSHOTS, 'session-375-done.png') });
    assert.deepEqual(unexpectedErrors(page), []);
    await page.close();
  });

  test('reopening a finished session shows "All questions answered" at once', T, async () => {
    const u = await invitee('done@example.com', 2);
    const page = await openPage(browser.context, onBase(server.base, u.invite_url));
    await page.getByRole('button', { name: 'Start interview' }).click();
    await page.getByRole('heading', { name: 'Your interview session' }).waitFor();
    await waitLive(page);
    const patched = await api.call('PATCH', `/api/users/${u.id}`, { questions_answered: 2 });
    assert.equal(patched.status, 200);
    await page.getByRole('heading', { name: 'All questions answered' }).waitFor();
    const again = await openPage(browser.context, onBase(server.base, u.invite_url));
    await again.getByRole('button', { name: 'Start interview' }).click();
    await again.getByRole('heading', { name: 'All questions answered' }).waitFor();
    assert.equal(await again.locator('#progress-text').textContent(), '2/2');
    await page.close();
    await again.close();
  });
});

describe('the expired page', { timeout: 200_000 }, () => {
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

  test('a link that ran out unused says the interview never started, not that answers were saved', T, async () => {
    const s = await freshServer(['--invite-ttl-hours', '0.0005']); // 1.8 s
    servers.push(s);
    const api = await apiLogin(s.base);
    const r = await api.call('POST', '/api/users', { first_name: 'Late', last_name: 'Comer', email: 'late@example.com' });
    const page = await openPage(browser.context, onBase(s.base, r.data.invite_url));
    await sleep(2_500);
    await page.getByRole('button', { name: 'Start interview' }).click();
    await page.waitForURL(/\/session\/expired\?reason=unused$/, { timeout: 10_000 });
    await page.getByRole('heading', { name: 'This invite link has expired' }).waitFor();
    const text = await page.locator('main').innerText();
    assert.ok(!/saved/i.test(text), `no "saved" for someone who never started: ${text}`);
    assert.match(text, /never started/);
    await page.close();
  });

  test('a session whose time ran out ends on "Your session has ended"', T, async () => {
    const s = await freshServer(['--session-minutes', '0.05']);
    servers.push(s);
    const api = await apiLogin(s.base);
    const r = await api.call('POST', '/api/users', { first_name: 'Short', last_name: 'Session', email: 'short@example.com' });
    const page = await openPage(browser.context, onBase(s.base, r.data.invite_url));
    await page.getByRole('button', { name: 'Start interview' }).click();
    await page.waitForURL(/\/session\/expired$/, { timeout: 30_000 });
    await page.getByRole('heading', { name: 'Your session has ended' }).waitFor();
    assert.match(await page.locator('main').innerText(), /has been saved/);
    await page.close();
  });
});
