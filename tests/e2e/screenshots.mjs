// Regenerates the README's screenshots in docs/screenshots/ — run on purpose, never by the
// test suites (which write theirs to a temporary directory):
//
//   cargo build --release && CATALYTIC_BIN=target/release/catalytic node tests/e2e/screenshots.mjs
//
// It starts the real binary on a temporary database, fills it with a small realistic set of
// invitees (invited, in progress, completed, a link that ran out), opens an invitee's page and a
// second admin's dashboard so presence shows, lets the System view sample for a minute, and
// takes: the dashboard in light and dark, the session page at 375 px before the start, running
// and done, and the System view.

import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { mkdirSync } from 'node:fs';

/** The files this script writes (the README shows each). */
export const SHOTS = [
  'dashboard.png',
  'dashboard-dark.png',
  'session-375-start.png',
  'session-375-running.png',
  'session-375-done.png',
  'system.png',
];

const PEOPLE = [
  ['Ada', 'Lovelace'], ['Alan', 'Turing'], ['Grace', 'Hopper'], ['Edsger', 'Dijkstra'],
  ['Barbara', 'Liskov'], ['Donald', 'Knuth'], ['Margaret', 'Hamilton'], ['Ken', 'Thompson'],
  ['Frances', 'Allen'], ['John', 'Backus'], ['Radia', 'Perlman'], ['Tony', 'Hoare'],
];

async function main() {
  const out = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'docs', 'screenshots');
  process.env.CATALYTIC_SCREENSHOT_DIR = out;
  mkdirSync(out, { recursive: true });
  const lib = await import('./lib.mjs');
  const { freshServer, launchBrowser, openPage, apiLogin, signIn, waitLive, onBase, sleep, until, createUsers } = lib;
  const shot = (page, name, opts = {}) => page.screenshot({ path: path.join(out, name), ...opts });

  // Links last 20 s here, so the first invitees' unused links run out while we watch.
  const server = await freshServer(['--session-minutes', '30', '--invite-ttl-hours', String(20 / 3600)]);
  const api = await apiLogin(server.base);
  const second = 'lin@example.com';
  const secondPassword = 'purple elephant juggles 97 lanterns';
  await api.call('POST', '/api/admins', { email: second, password: secondPassword });
  const mail = (f, l) => `${f}.${l}@example.com`.toLowerCase();
  const post = (p, body) => fetch(`${server.base}${p}`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  const tokenOf = (u) => new URL(u.invite_url).searchParams.get('token');

  // Two links that will run out unused; three invitees who started at once (two in progress,
  // one finished); the rest are invited at the end, so their links are still valid.
  await createUsers(api, 2, (i) => ({ first_name: PEOPLE[i][0], last_name: PEOPLE[i][1], email: mail(...PEOPLE[i]) }), 1);
  const started = await createUsers(api, 3, (i) => ({ first_name: PEOPLE[i + 2][0], last_name: PEOPLE[i + 2][1], email: mail(...PEOPLE[i + 2]), questions_total: 8 }), 1);
  for (const [u, answers] of [[started[0], 3], [started[1], 6], [started[2], 8]]) {
    await post('/api/session/activate', { token: tokenOf(u) });
    for (let i = 0; i < answers; i++) await post('/api/session/answer', { token: tokenOf(u) });
  }
  const done = started[2];
  await api.call('PATCH', `/api/users/${done.id}`, { transcript_url: 'https://example.com/transcripts/liskov', summary_url: 'https://example.com/summaries/liskov' });

  const browser = await launchBrowser();
  const other = await launchBrowser();
  try {
    // The second admin watches too ("Also here").
    const theirs = await openPage(other.context, `${server.base}/`);
    await signIn(theirs, second, secondPassword);
    await waitLive(theirs);

    const dash = await openPage(browser.context, `${server.base}/`);
    await signIn(dash);
    await waitLive(dash);
    // The System view samples from sign-in on: a minute of activity for it to draw — an
    // invitee's page that reconnects now and then, and changes broadcast to both admins.
    const t0 = Date.now();
    let n = 0;
    let grace = null;
    while (Date.now() - t0 < 60_000) {
      if (n % 12 === 0) {
        if (grace) await grace.close();
        grace = await openPage(other.context, onBase(server.base, started[0].invite_url));
        await grace.getByRole('button', { name: 'Start interview' }).click();
        await waitLive(grace);
      }
      await api.call('PATCH', `/api/users/${done.id}`, { summary_url: `https://example.com/summaries/liskov?v=${n}` });
      n++;
      await sleep(700);
    }
    // The rest are invited now: their links are valid.
    await createUsers(api, 7, (i) => ({ first_name: PEOPLE[i + 5][0], last_name: PEOPLE[i + 5][1], email: mail(...PEOPLE[i + 5]) }), 1);
    await until(async () => (await dash.locator('#users-body tr').count()) === 12, { what: '12 rows' });
    await sleep(1500);
    await shot(dash, 'dashboard.png', { fullPage: true });
    await dash.emulateMedia({ colorScheme: 'dark' });
    await shot(dash, 'dashboard-dark.png', { fullPage: true });
    await dash.emulateMedia({ colorScheme: 'light' });

    await dash.getByRole('link', { name: 'System' }).click();
    await dash.locator('figure.chart').first().waitFor();
    await sleep(5500);
    await shot(dash, 'system.png', { fullPage: true });

    // A fresh invitee's page at phone width: before the start, running, done.
    const r = await api.call('POST', '/api/users', { first_name: 'Niklaus', last_name: 'Wirth', email: 'niklaus.wirth@example.com', questions_total: 3 });
    const phone = await openPage(browser.context);
    await phone.setViewportSize({ width: 375, height: 740 });
    await phone.goto(onBase(server.base, r.data.invite_url));
    await phone.getByRole('button', { name: 'Start interview' }).waitFor();
    await shot(phone, 'session-375-start.png', { fullPage: true });
    await phone.getByRole('button', { name: 'Start interview' }).click();
    await waitLive(phone);
    await phone.getByRole('button', { name: 'Answer', exact: true }).click();
    await until(async () => (await phone.locator('#progress-text').textContent()) === '1/3', { what: '1/3' });
    await sleep(2500);
    await phone.locator('#main').focus();
    await shot(phone, 'session-375-running.png', { fullPage: true });
    for (let i = 0; i < 2; i++) await phone.getByRole('button', { name: 'Answer', exact: true }).click();
    await phone.getByRole('heading', { name: 'All questions answered' }).waitFor();
    await phone.locator('#main').focus();
    await shot(phone, 'session-375-done.png', { fullPage: true });
    console.log(`wrote ${SHOTS.join(', ')} to ${out}`);
  } finally {
    await browser.close();
    await other.close();
    await server.cleanup();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
