// Admin sign-in through a real OpenID provider's pages in Chromium: oidc-provider
// (tests/oidc/provider.mjs) on 127.0.0.2, catalytic on 127.0.0.1 — two sites, so the
// provider's redirect back is a cross-site navigation, which the attempt cookie must survive
// (SameSite=Lax). Needs `(cd tests/oidc && npm install)`.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import {
  REPO_ROOT, tempDir, removeDir, startServer, launchBrowser, openPage, until,
} from './lib.mjs';

const PROVIDER_DIR = path.join(REPO_ROOT, 'tests', 'oidc');
const CLIENT_ID = 'catalytic-e2e';
const CLIENT_SECRET = 'e2e-client-secret-0123456789';

function freePort(host) {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Start the test provider; resolves once it logs its listening line. */
function startProvider(port, redirectUri) {
  const child = spawn(
    process.execPath,
    ['provider.mjs', '--host', '127.0.0.2', '--port', String(port), '--redirect-uri', redirectUri,
      '--client-id', CLIENT_ID, '--client-secret', CLIENT_SECRET],
    { cwd: PROVIDER_DIR, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`provider did not start within 20 s:\n${output}`));
    }, 20_000);
    const onData = (chunk) => {
      output += chunk;
      if (/provider listening on/.test(output)) {
        clearTimeout(timer);
        resolve({ stop: () => child.kill('SIGTERM'), log: () => output });
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`provider exited (${code}):\n${output}`));
    });
  });
}

test('an admin signs in through the identity provider in Chromium', async (t) => {
  assert.ok(
    existsSync(path.join(PROVIDER_DIR, 'node_modules', 'oidc-provider')),
    'run (cd tests/oidc && npm install) first',
  );
  const dir = tempDir();
  t.after(() => removeDir(dir));
  const secret = path.join(dir, 'client-secret');
  writeFileSync(secret, CLIENT_SECRET, { mode: 0o600 });
  const pport = await freePort('127.0.0.2');
  const sport = await freePort('127.0.0.1');
  const provider = await startProvider(pport, `http://127.0.0.1:${sport}/api/admin/oidc/callback`);
  t.after(() => provider.stop());
  const server = await startServer({
    db: path.join(dir, 'db.sqlite'),
    listen: `127.0.0.1:${sport}`,
    args: [
      '--oidc-issuer', `http://127.0.0.2:${pport}`,
      '--oidc-client-id', CLIENT_ID,
      '--oidc-client-secret-file', secret,
      '--oidc-allowed-domains', 'allowed.test',
      '--oidc-name', 'Test IdP',
    ],
  });
  t.after(() => server.stop());
  await until(
    async () => (await fetch(`${server.base}/api/admin/oidc/login`, { redirect: 'manual' })).status === 302,
    { timeout: 15_000, what: 'catalytic to discover the provider' },
  );

  const browser = await launchBrowser();
  t.after(() => browser.close());
  // Loopback only: the provider's development pages import a web font from the internet.
  await browser.context.route((url) => !/^http:\/\/127\.0\.0\.[12]:/.test(url.href), (r) => r.abort());
  const page = await openPage(browser.context, `${server.base}/`);
  // The sign-in form offers the provider (it asks GET /api/admin/auth).
  await page.getByRole('link', { name: 'Sign in with Test IdP' }).click();

  // The provider's own login page, then its consent page.
  await page.waitForURL((u) => u.host === `127.0.0.2:${pport}`);
  await page.fill('input[name=login]', 'ada');
  await page.fill('input[name=password]', 'any password');
  await page.click('button[type=submit]');
  await page.getByText('Continue').click();

  // Back on the dashboard, signed in.
  await page.waitForURL(`${server.base}/`);
  assert.equal(new URL(page.url()).search, '', `no signin_error: ${page.url()}`);
  const cookies = await browser.context.cookies(server.base);
  const session = cookies.find((c) => c.name === 'admin_session');
  assert.ok(session, `admin_session cookie: ${JSON.stringify(cookies)}`);
  assert.equal(session.sameSite, 'Strict');
  assert.ok(!cookies.some((c) => c.name === 'oidc_attempt'), 'the attempt cookie is gone');
  const status = await page.evaluate(async () => (await fetch('/api/users')).status);
  assert.equal(status, 200, 'the session works from the page');
  assert.match(server.log(), /signed in through OpenID Connect/);
});
