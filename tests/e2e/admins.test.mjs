// Issue 13 item 7: admins. The Admins view lists admins (email, created, last sign-in), adds
// one, removes one (never the last), and changes your own password (which ends your other
// sign-ins) — on the v2 routes. And `catalytic admin create` on a terminal asks for the
// password without echoing it.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import {
  BIN, ADMIN_EMAIL, ADMIN_PASSWORD, freshServer, launchBrowser, openPage, until, signIn,
  waitLive, unexpectedErrors, preflight, tempDir, removeDir, sleep,
} from './lib.mjs';

const T = { timeout: 90_000 };
const NEW = 'newcomer@example.com';
const NEW_PASSWORD = 'seven orange kites above 31 rivers';

describe('the Admins view', { timeout: 300_000 }, () => {
  let server;
  let browser;
  let elsewhere; // the same admin signed in from another browser
  let page;

  before(async () => {
    preflight(assert);
    server = await freshServer();
    browser = await launchBrowser();
    elsewhere = await launchBrowser();
    page = await openPage(browser.context, `${server.base}/`);
    await signIn(page);
    await waitLive(page);
  });
  after(async () => {
    for (const b of [browser, elsewhere]) if (b) await b.close();
    if (server) await server.cleanup();
  });

  test('lists the admins; the only one cannot be removed', T, async () => {
    await page.getByRole('link', { name: 'Admins' }).click();
    await page.getByRole('heading', { name: 'Admins', level: 1 }).waitFor();
    const rows = page.locator('#admins-body tr');
    await until(async () => (await rows.count()) === 1, { what: 'one admin' });
    assert.match(await rows.first().textContent(), new RegExp(`${ADMIN_EMAIL} \\(you\\)`));
    assert.match(await rows.first().locator('td').nth(2).textContent(), /\d\d:\d\d/, 'last sign-in: the sign-in just now');
    assert.equal(await rows.first().getByRole('button', { name: `Remove admin ${ADMIN_EMAIL}` }).isDisabled(), true);
  });

  test('Add admin: the rule is stated, mistakes are explained, the new admin appears', T, async () => {
    const form = page.locator('#add-admin-form');
    assert.match(await form.textContent(), /At least 10 characters/);
    await form.getByLabel('Email').fill(NEW);
    await form.getByLabel('Password', { exact: true }).fill(NEW_PASSWORD);
    await form.getByLabel('Repeat the password').fill(`${NEW_PASSWORD}!`);
    await form.getByRole('button', { name: 'Add admin' }).click();
    assert.equal(await page.locator('#add-admin-error').textContent(), 'The two passwords are not the same.');
    await form.getByLabel('Password', { exact: true }).fill('short');
    await form.getByLabel('Repeat the password').fill('short');
    await form.getByRole('button', { name: 'Add admin' }).click();
    assert.match(await page.locator('#add-admin-error').textContent(), /at least 10 characters/);

    await form.getByLabel('Password', { exact: true }).fill(NEW_PASSWORD);
    await form.getByLabel('Repeat the password').fill(NEW_PASSWORD);
    await form.getByRole('button', { name: 'Add admin' }).click();
    await until(async () => (await page.locator('#admins-body tr').count()) === 2, { what: 'two admins' });
    assert.match(await page.locator('#admins-body tr').nth(1).textContent(), /Never/);

    // The same email again: the server's 409, as a sentence.
    await form.getByLabel('Email').fill(NEW.toUpperCase());
    await form.getByLabel('Password', { exact: true }).fill(NEW_PASSWORD);
    await form.getByLabel('Repeat the password').fill(NEW_PASSWORD);
    await form.getByRole('button', { name: 'Add admin' }).click();
    await until(async () => /already exists\.$/.test(await page.locator('#add-admin-error').textContent()), { what: 'the 409' });
  });

  test('Remove asks first; the removed admin is signed out everywhere', T, async () => {
    const theirs = await openPage(elsewhere.context, `${server.base}/`);
    await signIn(theirs, NEW, NEW_PASSWORD);
    await waitLive(theirs);
    await page.getByRole('button', { name: `Remove admin ${NEW}` }).click();
    const dialog = page.getByRole('dialog');
    assert.match(await dialog.textContent(), /signed out everywhere/);
    await dialog.getByRole('button', { name: 'Remove admin' }).click();
    await until(async () => (await page.locator('#admins-body tr').count()) === 1, { what: 'one admin again' });
    await theirs.getByRole('button', { name: 'Sign in', exact: true }).waitFor({ timeout: 5_000 });
    await theirs.close();
  });

  test('Change your password: wrong current password explained; the other sign-ins end, this one stays', T, async () => {
    const other = await openPage(elsewhere.context, `${server.base}/`);
    await signIn(other);
    await waitLive(other);
    const form = page.locator('#password-form');
    await form.getByLabel('Current password', { exact: true }).fill('not my password at all');
    await form.getByLabel('New password', { exact: true }).fill(NEW_PASSWORD);
    await form.getByLabel('Repeat the new password').fill(NEW_PASSWORD);
    await form.getByRole('button', { name: 'Change password' }).click();
    await until(async () => (await page.locator('#password-error').textContent()) === 'The current password is wrong.', { what: '403 explained' });

    await form.getByLabel('Current password', { exact: true }).fill(ADMIN_PASSWORD);
    await form.getByRole('button', { name: 'Change password' }).click();
    await until(async () => /password has been changed/.test(await page.locator('#admins-notice').textContent()), { what: 'the notice' });
    await other.getByRole('button', { name: 'Sign in', exact: true }).waitFor({ timeout: 5_000 });
    await sleep(500);
    assert.equal(await page.locator('#conn .conn-text').textContent(), 'Live', 'this sign-in stays');
    assert.deepEqual(unexpectedErrors(page, [/403/, /409/]), []);
    await other.close();
  });
});

describe('catalytic admin create on a terminal', { timeout: 60_000 }, () => {
  test('asks twice and never echoes the password', { timeout: 30_000 }, async () => {
    const dir = tempDir();
    const db = path.join(dir, 'db.sqlite');
    // `script` gives the command a pseudo-terminal, as a person at a shell has.
    const env = { ...process.env };
    delete env.CATALYTIC_ADMIN_PASSWORD;
    const child = spawn('script', ['-qec', `${BIN} admin create --email tty@example.com --db ${db}`, '/dev/null'], { env });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    const exit = new Promise((r) => child.on('exit', r));
    await until(() => out.includes('Password for the new admin:'), { timeout: 10_000, what: `the prompt (got ${JSON.stringify(out)})` });
    child.stdin.write(`${NEW_PASSWORD}\n`);
    await until(() => out.includes('Repeat the password:'), { timeout: 10_000, what: 'the second prompt' });
    child.stdin.write(`${NEW_PASSWORD}\n`);
    const code = await exit;
    removeDir(dir);
    assert.equal(code, 0, out);
    assert.match(out, /admin tty@example\.com created/);
    assert.ok(!out.includes(NEW_PASSWORD), `the password was echoed: ${JSON.stringify(out)}`);
  });
});
