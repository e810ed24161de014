// Issue 13 item 9: polish — status badges in words, errors as sentences, the "signed out" note
// cleared on a new attempt, the setup page's password rule and confirm field, dark mode, invite
// links that can be told apart, the sign-in form offering "Sign in with <provider>" — and every
// page passing the axe-core accessibility checks (WCAG 2.1 A/AA), in light and dark.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  SCREENSHOTS, ADMIN_PASSWORD, freshServer, launchBrowser, openPage, until, apiLogin, signIn,
  waitLive, rowByEmail, onBase, unexpectedErrors, preflight, ensureScreenshotDir, axeViolations,
  sleep,
} from './lib.mjs';

const T = { timeout: 90_000 };

describe('polish', { timeout: 400_000 }, () => {
  let server;
  let browser;
  let api;

  before(async () => {
    preflight(assert);
    ensureScreenshotDir();
    server = await freshServer(['--session-minutes', '10']);
    api = await apiLogin(server.base);
    for (const [f, l, e] of [['Ada', 'Lovelace', 'ada@example.com'], ['Alan', 'Turing', 'alan@example.com'], ['Grace', 'Hopper', 'grace@example.com']]) {
      await api.call('POST', '/api/users', { first_name: f, last_name: l, email: e, questions_total: 3 });
    }
    browser = await launchBrowser();
  });
  after(async () => {
    if (browser) await browser.close();
    if (server) await server.cleanup();
  });

  test('errors are sentences; the "signed out" note goes on a new attempt', T, async () => {
    const page = await openPage(browser.context, `${server.base}/`);
    await signIn(page, 'admin@example.com', 'wrong password entirely');
    const err = page.locator('#signin-error');
    await err.waitFor();
    assert.match(await err.textContent(), /^[A-Z][^]*\.$/, `a sentence: ${await err.textContent()}`);
    await signIn(page);
    await waitLive(page);
    await page.getByRole('button', { name: 'Sign out' }).click();
    const note = page.locator('#signin-note');
    await until(async () => (await note.textContent()) === 'You are signed out.', { what: 'the signed-out note' });
    await signIn(page, 'admin@example.com', 'wrong again, sorry');
    await err.waitFor();
    assert.notEqual(await note.textContent(), 'You are signed out.', 'the note is cleared by the new attempt');
    await page.close();
  });

  test('status badges in words; links that can be told apart; dark mode', T, async () => {
    const page = await openPage(browser.context, `${server.base}/`);
    await signIn(page);
    await waitLive(page);
    await page.locator('#users-body tr').first().waitFor();
    const labels = await page.locator('#counts button .badge, #counts button .count-label').allTextContents();
    assert.deepEqual(labels, ['All', 'Invited', 'In progress', 'Completed', 'Expired']);
    const links = await page.locator('#users-body .link-text').allTextContents();
    assert.equal(new Set(links).size, links.length, `distinct link texts: ${links}`);
    for (const l of links) assert.ok(l.length >= 12, `enough of the link shown: ${l}`);

    await page.emulateMedia({ colorScheme: 'dark' });
    const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    const [r, g, b] = bg.match(/\d+/g).map(Number);
    assert.ok(r + g + b < 120, `a dark background in dark mode: ${bg}`);
    await page.screenshot({ path: path.join(SCREENSHOTS, 'dashboard-dark.png') });
    await page.emulateMedia({ colorScheme: 'light' });
    await page.close();
  });

  test('the sign-in form offers "Sign in with <provider>" when the server says so, and shows ?signin_error', T, async () => {
    await browser.context.clearCookies();
    const page = await openPage(browser.context);
    // Until the OIDC routes are on this server, its answer is played by the browser.
    await page.route('**/api/admin/auth', (route) => route.fulfill({
      status: 200, contentType: 'application/json', body: JSON.stringify({ password: true, oidc: { name: 'Acme SSO' } }),
    }));
    await page.goto(`${server.base}/?signin_error=email%20not%20verified`);
    const link = page.getByRole('link', { name: 'Sign in with Acme SSO' });
    await link.waitFor();
    assert.equal(await link.getAttribute('href'), '/api/admin/oidc/login');
    assert.equal(await page.locator('#signin-problem').textContent(), 'Sign-in did not work: Email not verified.');
    assert.equal(new URL(page.url()).search, '', 'the error leaves the address bar');
    assert.equal(await page.getByLabel('Password', { exact: true }).isVisible(), true, 'and the password form');

    await page.route('**/api/admin/auth', (route) => route.fulfill({
      status: 200, contentType: 'application/json', body: JSON.stringify({ password: false, oidc: { name: 'Acme SSO' } }),
    }));
    await page.reload();
    await page.getByRole('link', { name: 'Sign in with Acme SSO' }).waitFor();
    assert.equal(await page.locator('#signin-form').isHidden(), true, 'no password form when password sign-in is off');

    await page.unroute('**/api/admin/auth');
    await page.reload();
    await page.getByLabel('Password', { exact: true }).waitFor();
    await sleep(300);
    const offersOidc = await page.locator('#signin-oidc').isVisible();
    const auth = await fetch(`${server.base}/api/admin/auth`);
    assert.equal(offersOidc, auth.status === 200 && Boolean((await auth.json()).oidc), 'the real server decides');
    await page.close();
  });

  test('setup states the password rule, asks twice, and shows the server\'s reason for a weak one', T, async () => {
    const s = await freshServer([], { withAdmin: false });
    try {
      const m = await until(() => /\/setup\?code=([A-Za-z0-9_\-%.~]+)/.exec(s.log()), { timeout: 5_000, what: 'a setup URL' });
      const page = await openPage(browser.context, `${s.base}/setup?code=${m[1]}`);
      assert.match(await page.locator('#password-hint').textContent(), /At least 10 characters/);
      await page.getByLabel('Email', { exact: true }).fill('first@example.com');
      await page.getByLabel('Password', { exact: true }).fill(ADMIN_PASSWORD);
      await page.getByLabel('Repeat the password').fill('something else entirely');
      await page.getByRole('button', { name: 'Create admin account' }).click();
      assert.equal(await page.locator('#setup-error').textContent(), 'The two passwords are not the same.');
      // Long enough, but easy to guess: the server refuses it (422) and says why.
      await page.getByLabel('Password', { exact: true }).fill('password1234');
      await page.getByLabel('Repeat the password').fill('password1234');
      const mismatch = await page.locator('#setup-error').textContent();
      await page.getByRole('button', { name: 'Create admin account' }).click();
      await until(async () => new URL(page.url()).pathname !== '/setup' || (await page.locator('#setup-error').textContent({ timeout: 500 })) !== mismatch,
        { what: 'an answer to the weak password' });
      assert.equal(new URL(page.url()).pathname, '/setup', 'a weak password is refused: still on the setup page');
      assert.match(await page.locator('#setup-error').textContent(), /^[A-Z].+\.$/, 'the server\'s reason, as a sentence');
      assert.deepEqual(unexpectedErrors(page, [/422/]), []);
      await page.close();
    } finally {
      await s.cleanup();
    }
  });

  test('every page passes the axe-core checks, light and dark', { timeout: 180_000 }, async () => {
    const failures = [];
    const check = async (page, what) => {
      for (const scheme of ['light', 'dark']) {
        await page.emulateMedia({ colorScheme: scheme });
        const v = await axeViolations(page);
        if (v.length) failures.push(`${what} (${scheme}): ${v.join('; ')}`);
      }
      await page.emulateMedia({ colorScheme: 'light' });
    };
    await browser.context.clearCookies();
    const page = await openPage(browser.context, `${server.base}/`);
    await page.getByLabel('Password', { exact: true }).waitFor();
    await check(page, 'sign-in');
    await signIn(page);
    await waitLive(page);

    // An invitee online with a running session, so dots, badges and timers are in the scan.
    const u = (await api.call('GET', '/api/users')).data.find((x) => x.email === 'ada@example.com');
    const session = await openPage(browser.context, onBase(server.base, u.invite_url));
    await check(session, 'session page before the start');
    await session.getByRole('button', { name: 'Start interview' }).click();
    await waitLive(session);
    await check(session, 'session page running');
    await rowByEmail(page, 'ada@example.com').locator('.badge', { hasText: 'In progress' }).waitFor();
    await check(page, 'dashboard');
    for (let i = 0; i < 3; i++) await session.getByRole('button', { name: 'Answer', exact: true }).click();
    await session.getByRole('heading', { name: 'All questions answered' }).waitFor().catch(() => {});
    await check(session, 'session page done');

    await page.getByRole('link', { name: 'Admins' }).click();
    await page.locator('#admins-body tr').first().waitFor();
    await check(page, 'admins');
    await page.getByRole('link', { name: 'System' }).click();
    await page.locator('figure.chart').first().waitFor();
    await check(page, 'system');
    await page.getByRole('link', { name: 'Invitees' }).click();
    await page.locator('#users-body tr').first().waitFor();
    await page.getByRole('button', { name: 'Import CSV…' }).click();
    await check(page, 'import dialog');
    await page.keyboard.press('Escape');
    await rowByEmail(page, 'alan@example.com').getByRole('button', { name: 'Edit' }).click();
    await check(page, 'edit dialog');
    await page.keyboard.press('Escape');

    for (const p of ['/session/expired', '/session/expired?reason=unused', '/session', '/setup']) {
      const other = await openPage(browser.context, `${server.base}${p}`);
      await other.locator('h1:visible').first().waitFor();
      await check(other, p);
      await other.close();
    }
    assert.deepEqual(failures, []);
    await session.close();
    await page.close();
  });
});
