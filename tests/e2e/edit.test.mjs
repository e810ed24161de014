// Issue 13 item 5: edit and confirm. "Edit" per row (names, email, questions total) through
// PATCH; "New invite link" and "Delete" ask first and say what happens; the times people ask
// for (invited, started, completed or ended, and when the link expires) are on the row.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  freshServer, launchBrowser, openPage, until, apiLogin, signIn, waitLive, rowByEmail,
  unexpectedErrors, preflight,
} from './lib.mjs';

const T = { timeout: 90_000 };

describe('edit and confirm', { timeout: 300_000 }, () => {
  let server;
  let browser;
  let dash;
  let other; // a second tab: every change arrives there through the stream
  let api;

  before(async () => {
    preflight(assert);
    server = await freshServer(['--session-minutes', '10']);
    api = await apiLogin(server.base);
    for (const [f, l, e] of [['Ada', 'Lovelace', 'ada@example.com'], ['Alan', 'Turing', 'alan@example.com']]) {
      assert.equal((await api.call('POST', '/api/users', { first_name: f, last_name: l, email: e })).status, 201);
    }
    browser = await launchBrowser();
    dash = await openPage(browser.context, `${server.base}/`);
    await signIn(dash);
    await waitLive(dash);
    other = await openPage(browser.context, `${server.base}/`);
    await waitLive(other);
  });
  after(async () => {
    if (browser) await browser.close();
    if (server) await server.cleanup();
  });

  test('Edit changes names, email and the number of questions; a clash is explained', T, async () => {
    const row = rowByEmail(dash, 'ada@example.com');
    await row.getByRole('button', { name: 'Edit', exact: true }).click();
    const dialog = dash.getByRole('dialog', { name: 'Edit Ada Lovelace' });
    await dialog.waitFor();
    assert.equal(await dialog.getByLabel('First name').inputValue(), 'Ada');
    assert.equal(await dialog.getByLabel('Questions in the interview').inputValue(), '10');

    await dialog.getByLabel('Email').fill('alan@example.com');
    await dialog.getByRole('button', { name: 'Save' }).click();
    const err = dialog.locator('#edit-error');
    await err.waitFor();
    assert.match(await err.textContent(), /^[A-Z].*\.$/, 'the server\'s 409 as a sentence');

    await dialog.getByLabel('Email').fill('ada.king@example.com');
    await dialog.getByLabel('Last name').fill('King');
    await dialog.getByLabel('Questions in the interview').fill('12');
    await dialog.getByRole('button', { name: 'Save' }).click();
    await dialog.waitFor({ state: 'detached' });
    const moved = rowByEmail(other, 'ada.king@example.com');
    await moved.waitFor();
    assert.equal(await moved.locator('.user-name').textContent(), 'Ada King');
    assert.equal(await moved.locator('.progress-text').textContent(), '0/12');
    await until(async () => (await dash.getByLabel('First name').count()) === 1, { what: 'the dialog to leave no second "First name" field' });
  });

  test('New invite link and Delete ask first and say what happens to a running interview', T, async () => {
    const u = (await api.call('GET', '/api/users')).data.find((x) => x.email === 'alan@example.com');
    const token = new URL(u.invite_url).searchParams.get('token');
    await fetch(`${server.base}/api/session/activate`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ token }) });
    const row = rowByEmail(dash, 'alan@example.com');
    await until(async () => (await row.locator('.badge').textContent()) === 'In progress', { what: 'In progress' });

    const oldLink = await row.locator('.link-text').getAttribute('title');
    await row.getByRole('button', { name: 'New invite link' }).click();
    let dialog = dash.getByRole('dialog');
    await dialog.waitFor();
    const text = await dialog.textContent();
    assert.match(text, /current link stops working/);
    assert.match(text, /starts over/);
    await dialog.getByRole('button', { name: 'Cancel' }).click();
    assert.equal(await row.locator('.link-text').getAttribute('title'), oldLink, 'Cancel changes nothing');

    await row.getByRole('button', { name: 'New invite link' }).click();
    await dash.getByRole('dialog').getByRole('button', { name: 'Create new link' }).click();
    await until(async () => (await rowByEmail(other, 'alan@example.com').locator('.link-text').getAttribute('title')) !== oldLink, { what: 'the new link in the other tab' });
    assert.equal(await row.locator('.badge').textContent(), 'Invited', 'the session was reset');

    await row.getByRole('button', { name: 'Delete' }).click();
    dialog = dash.getByRole('dialog');
    await dialog.waitFor();
    assert.match(await dialog.textContent(), /cannot be undone/);
    await dialog.getByRole('button', { name: 'Delete', exact: true }).click();
    await until(async () => (await rowByEmail(other, 'alan@example.com').count()) === 0, { what: 'the row gone in the other tab' });
    assert.deepEqual(unexpectedErrors(dash, [/409/]), []);
  });

  test('the row shows when they were invited, when the link expires, and when the session started and ended', T, async () => {
    const r = await api.call('POST', '/api/users', { first_name: 'Tim', last_name: 'Times', email: 'tim@example.com', questions_total: 1 });
    const row = rowByEmail(dash, 'tim@example.com');
    await row.waitFor();
    assert.ok(r.data.invited_at && r.data.invite_expires_at, `v2 time fields in the user object: ${JSON.stringify(r.data)}`);
    assert.match(await row.locator('.cell-invited time').textContent(), /\d\d:\d\d/);
    assert.match(await row.locator('.validity').textContent(), /^Valid until .*\d\d:\d\d/);
    const token = new URL(r.data.invite_url).searchParams.get('token');
    const post = (p) => fetch(`${server.base}${p}`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ token }) });
    await post('/api/session/activate');
    await until(async () => /^Started \d/.test(await row.locator('.session-time').first().textContent()), { what: '"Started …"' });
    await post('/api/session/answer');
    await until(async () => /^Completed \d/.test(await row.locator('.session-time').nth(1).textContent()), { what: '"Completed …"' });
    assert.ok(await row.locator('.session-time').first().getAttribute('title'), 'the full date on hover');
  });
});
