// Issue 13 item 6: bulk invite. "Import CSV" takes pasted or uploaded rows
// `first_name,last_name,email[,questions_total]` (header optional), says which lines failed and
// why, invites the rest — 1,000 rows in seconds — and every other admin sees them arrive.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  freshServer, launchBrowser, openPage, until, apiLogin, signIn, waitLive, unexpectedErrors,
  preflight,
} from './lib.mjs';

const T = { timeout: 180_000 };

describe('bulk invite from CSV', { timeout: 400_000 }, () => {
  let server;
  let browser;
  let dash;
  let watcher;

  before(async () => {
    preflight(assert);
    server = await freshServer();
    const api = await apiLogin(server.base);
    await api.call('POST', '/api/users', { first_name: 'Already', last_name: 'Here', email: 'here@example.com' });
    browser = await launchBrowser();
    dash = await openPage(browser.context, `${server.base}/`);
    await signIn(dash);
    await waitLive(dash);
    watcher = await openPage(browser.context, `${server.base}/`);
    await waitLive(watcher);
  });
  after(async () => {
    if (browser) await browser.close();
    if (server) await server.cleanup();
  });

  test('1,000 pasted rows are invited in seconds; bad lines are listed with the reason', T, async () => {
    const lines = ['first_name,last_name,email,questions_total'];
    for (let i = 0; i < 1000; i++) lines.push(`First${i},"Last, ${i}",bulk${i}@example.com,${(i % 15) + 1}`);
    lines.push('Broken,Line');
    lines.push('Bad,Email,nope');
    lines.push('Dup,Licate,here@example.com'); // the server refuses it: the email exists
    await dash.getByRole('button', { name: 'Import CSV…' }).click();
    const dialog = dash.getByRole('dialog', { name: 'Import invitees from CSV' });
    await dialog.getByLabel('Rows').fill(lines.join('\n'), { timeout: 30_000 });
    const t0 = Date.now();
    await dialog.getByRole('button', { name: 'Invite', exact: true }).click();
    const status = dialog.locator('#import-status');
    await until(async () => /^Invited /.test(await status.textContent()), { timeout: 60_000, interval: 50, what: 'the import to finish' });
    const took = Date.now() - t0;
    console.log(`import of 1,000 CSV rows: ${took} ms until the page reported it done`);
    assert.equal(await status.textContent(), 'Invited 1,000 people. 3 lines were not imported; see below.');
    const problems = await dialog.locator('#import-problem-list li').allTextContents();
    assert.deepEqual(problems.map((p) => p.split(':')[0]), ['Line 1002', 'Line 1003', 'Line 1004']);
    assert.match(problems[0], /expected first name, last name and email/);
    assert.match(problems[1], /“nope” is not an email address\./);
    assert.match(problems[2], /^Line 1004: [A-Z].*\.$/, `the server's reason as a sentence: ${problems[2]}`);
    assert.ok(took < 30_000, `1,000 rows took ${took} ms`);

    // The other admin's dashboard got every one of them through the stream.
    await until(async () => (await watcher.locator('#counts .count-total .count-n').textContent({ timeout: 1_000 })) === '1,001', { timeout: 15_000, what: 'all rows in the other tab' })
      .catch(async (err) => {
        throw new Error(`${err.message}\nthe other tab shows: ${(await watcher.locator('main').innerText()).slice(0, 300)}\nerrors: ${watcher.errors.join(' | ')}`);
      });
    await dialog.getByRole('button', { name: 'Close' }).click();
    assert.deepEqual(unexpectedErrors(dash, [/409/]), []);
    assert.deepEqual(unexpectedErrors(watcher), []);
  });

  test('an uploaded file fills the rows', T, async () => {
    if (await dash.locator('dialog[open]').count()) await dash.keyboard.press('Escape');
    await dash.getByRole('button', { name: 'Import CSV…' }).click();
    const dialog = dash.getByRole('dialog', { name: 'Import invitees from CSV' });
    await dialog.getByLabel('CSV file').setInputFiles({
      name: 'people.csv', mimeType: 'text/csv', buffer: Buffer.from('\uFEFFGrace,Hopper,grace@example.com\r\n'),
    });
    await until(async () => (await dialog.getByLabel('Rows').inputValue()).includes('grace@example.com'), { what: 'the file read' });
    await dialog.getByRole('button', { name: 'Invite', exact: true }).click();
    await until(async () => (await dialog.locator('#import-status').textContent()) === 'Invited 1 person.', { what: 'done' });
    await dialog.getByRole('button', { name: 'Close' }).click();
  });
});
