// Issue 13 item 8: operations at a glance. The System view shows open streams by kind,
// reconnects and slow-consumer / heartbeat closes per minute, broadcast latency p50/p99, and
// inline-SVG charts of the last 10 minutes drawn from samples of /metrics.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  SCREENSHOTS, freshServer, launchBrowser, openPage, until, apiLogin, signIn, waitLive, onBase,
  unexpectedErrors, preflight, ensureScreenshotDir,
} from './lib.mjs';

describe('the System view', { timeout: 200_000 }, () => {
  let server;
  let browser;

  before(async () => {
    preflight(assert);
    ensureScreenshotDir();
    server = await freshServer(['--session-minutes', '10']);
    browser = await launchBrowser();
  });
  after(async () => {
    if (browser) await browser.close();
    if (server) await server.cleanup();
  });

  const figure = (page, label) => page.locator('.figure', { has: page.getByText(label, { exact: true }) }).locator('dd');

  test('figures and charts follow the server', { timeout: 120_000 }, async () => {
    const page = await openPage(browser.context, `${server.base}/#/system`);
    await signIn(page);
    await waitLive(page);
    await page.getByRole('heading', { name: 'System', level: 1 }).waitFor();
    await until(async () => (await figure(page, 'Admin streams').textContent()) === '1', { timeout: 15_000, what: '1 admin stream' });

    // An invitee opens their page, and the admin does something that is broadcast.
    const api = await apiLogin(server.base);
    const r = await api.call('POST', '/api/users', { first_name: 'Sam', last_name: 'Sample', email: 'sam@example.com' });
    const invitee = await openPage(browser.context, onBase(server.base, r.data.invite_url));
    await invitee.getByRole('button', { name: 'Start interview' }).click();
    await waitLive(invitee);
    for (let i = 0; i < 5; i++) await api.call('PATCH', `/api/users/${r.data.id}`, { last_name: `Sample${i}` });

    await until(async () => (await figure(page, 'Session pages').textContent()) === '1', { timeout: 15_000, what: '1 session page' });
    await until(async () => /(µs|ms|s)$/.test(await figure(page, 'Broadcast latency p99').textContent()), { timeout: 15_000, what: 'a p99 latency' });
    for (const label of ['Reconnects / min', 'Slow-consumer closes / min', 'Heartbeat closes / min']) {
      assert.match(await figure(page, label).textContent(), /^\d/, label);
    }
    // Three charts, each an SVG image with lines that have points and a summary in words.
    const charts = page.locator('figure.chart');
    assert.equal(await charts.count(), 3);
    await until(async () => (await page.locator('figure.chart path.line-0').first().getAttribute('d') || '').includes('L'), { timeout: 15_000, what: 'a line with two points' });
    assert.match(await charts.first().locator('svg title').textContent(), /Open streams over the last .*admin 1/);
    assert.equal(await page.locator('script[src*="chart"], link[href*="chart"]').count(), 0, 'no chart library');
    await page.screenshot({ path: path.join(SCREENSHOTS, 'system.png'), fullPage: true });
    assert.deepEqual(unexpectedErrors(page), []);
    await invitee.close();
    await page.close();
  });
});
