// Issue 13 item 3 and issue 9 item 8: who is here. An "online" dot (that text for screen
// readers) on an invitee whose session page is open, the other admins watching in the header
// ("Also here: …"), and a dashboard whose stream drops resumes where it was (?epoch=&since=).

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  freshServer, startServer, launchBrowser, openPage, until, apiLogin, signIn, waitLive,
  rowByEmail, onBase, unexpectedErrors, preflight,
} from './lib.mjs';

const T = { timeout: 90_000 };
const OTHER = 'second@example.com';
const OTHER_PASSWORD = 'purple elephant juggles 97 lanterns';

describe('presence and resume', { timeout: 400_000 }, () => {
  let server;
  let mine; // this admin's browser
  let theirs; // another admin's browser
  let dash;
  let api;

  before(async () => {
    preflight(assert);
    server = await freshServer(['--session-minutes', '10']);
    api = await apiLogin(server.base);
    const r = await api.call('POST', '/api/admins', { email: OTHER, password: OTHER_PASSWORD });
    assert.equal(r.status, 201, JSON.stringify(r.data));
    mine = await launchBrowser();
    theirs = await launchBrowser();
    dash = await openPage(mine.context, `${server.base}/`);
    await signIn(dash);
    await waitLive(dash);
  });
  after(async () => {
    for (const b of [mine, theirs]) if (b) await b.close();
    if (server) await server.cleanup();
  });

  test('an invitee with the session page open gets an "online" dot, gone when they leave', T, async () => {
    const r = await api.call('POST', '/api/users', { first_name: 'Olive', last_name: 'Online', email: 'olive@example.com' });
    const row = rowByEmail(dash, 'olive@example.com');
    await row.waitFor();
    const dot = row.locator('.presence');
    assert.equal(await dot.isHidden(), true);

    const invitee = await openPage(theirs.context, onBase(server.base, r.data.invite_url));
    await invitee.getByRole('button', { name: 'Start interview' }).click();
    await waitLive(invitee);
    await until(() => dot.isVisible(), { timeout: 3_000, what: 'the online dot within 2 s (+ margin)' });
    // Screen readers hear "online"; sighted admins see the dot and its tooltip.
    assert.equal((await dot.innerText()).trim(), 'online');
    assert.ok(await row.getByText('online', { exact: true }).count() === 1);

    await invitee.close();
    await until(() => dot.isHidden(), { timeout: 3_000, what: 'the dot to go within 2 s (+ margin)' });
  });

  test('the header names the other admins watching', T, async () => {
    const also = dash.locator('#also-here');
    assert.equal(await also.isHidden(), true, 'alone: no "Also here"');
    const other = await openPage(theirs.context, `${server.base}/`);
    await signIn(other, OTHER, OTHER_PASSWORD);
    await waitLive(other);
    await until(async () => (await also.isVisible()) && (await also.textContent()) === `Also here: ${OTHER}`, { timeout: 3_000, what: '"Also here" on my dashboard' });
    await until(async () => (await other.locator('#also-here').textContent()) === 'Also here: admin@example.com', { timeout: 3_000, what: '"Also here" on theirs' });
    await other.getByRole('button', { name: 'Sign out' }).click();
    await until(() => also.isHidden(), { timeout: 3_000, what: '"Also here" to go' });
    assert.deepEqual(unexpectedErrors(other), []);
    await other.close();
  });

  test('after a server restart the dashboard resumes from its last event (?epoch=&since=)', { timeout: 120_000 }, async () => {
    const urls = [];
    const firstFrames = [];
    dash.on('websocket', (ws) => {
      urls.push(ws.url());
      let first = true;
      ws.on('framereceived', (f) => {
        if (first) firstFrames.push(String(f.payload).slice(0, 40));
        first = false;
      });
    });
    const port = server.port;
    await server.stop('SIGTERM');
    await until(async () => /^Reconnecting/.test(await dash.locator('#conn .conn-text').textContent()), { what: 'Reconnecting' });
    const again = await startServer({ db: server.db, listen: `127.0.0.1:${port}`, args: ['--session-minutes', '10'] });
    server.stop = again.stop; // cleanup() stops the process running now
    await dash.locator('#conn .conn-retry').click().catch(() => {}); // skip the backoff wait
    await waitLive(dash, 45_000);
    const resumeUrl = urls.find((u) => /since=\d+/.test(u));
    assert.ok(resumeUrl && /epoch=[^&]+&since=\d+/.test(resumeUrl), `a resuming handshake: ${urls.join(' ')}`);
    // "Live" shows when the socket opens; the first frame follows once the server has read the
    // missed events from storage, a moment later.
    await until(() => firstFrames.length > 0, { timeout: 5_000, what: 'the first frame after the reconnect' });
    assert.ok(firstFrames.some((f) => f.startsWith('{"type":"resumed"')), `answered with resumed: ${firstFrames.join(' | ')}`);
    // Events after the resume still arrive.
    const r = await api.call('POST', '/api/users', { first_name: 'Later', last_name: 'One', email: 'later@example.com' });
    assert.equal(r.status, 201, 'the admin session survives the restart');
    await rowByEmail(dash, 'later@example.com').waitFor();
    assert.equal(await rowByEmail(dash, 'olive@example.com').count(), 1, 'the rows from before are kept');
  });
});
