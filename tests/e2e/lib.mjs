// Helpers for the end-to-end tests: run the real catalytic binary on loopback, drive the
// system Chromium through playwright-core (never a downloaded browser), collect console errors.
// Every wait here is bounded.

import { spawn, execFile } from 'node:child_process';
import { mkdtempSync, rmSync, mkdirSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BIN = process.env.CATALYTIC_BIN
  ? path.resolve(process.env.CATALYTIC_BIN)
  : path.join(REPO_ROOT, 'target', 'debug', 'catalytic');
export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
export const ADMIN_EMAIL = 'admin@example.com';
// Strong enough for the contract's rule (≥ 10 characters, zxcvbn score ≥ 3).
export const ADMIN_PASSWORD = 'correct horse battery staple 42';
// Tests write their screenshots outside the checkout, so a test run leaves it clean. The
// README's screenshots are made on purpose by screenshots.mjs, which points this at
// docs/screenshots.
export const SCREENSHOTS = process.env.CATALYTIC_SCREENSHOT_DIR
  ? path.resolve(process.env.CATALYTIC_SCREENSHOT_DIR)
  : path.join(tmpdir(), 'catalytic-e2e-screenshots');

const ANSI = /\x1b\[[0-9;]*m/g;

export function tempDir(prefix = 'catalytic-e2e-') {
  return mkdtempSync(path.join(tmpdir(), prefix));
}

export function removeDir(dir) {
  try {
    rmSync(dir, { recursive: true, force: true });
  } catch {
    /* best effort */
  }
}

/** `catalytic admin create --email EMAIL --db DB`, password from the environment. */
export function createAdmin(db, email = ADMIN_EMAIL, password = ADMIN_PASSWORD) {
  return new Promise((resolve, reject) => {
    execFile(
      BIN,
      ['admin', 'create', '--email', email, '--db', db],
      { env: { ...process.env, CATALYTIC_ADMIN_PASSWORD: password }, timeout: 60_000 },
      (err, stdout, stderr) => {
        if (err) reject(new Error(`admin create failed: ${err.message}\n${stdout}\n${stderr}`));
        else resolve();
      },
    );
  });
}

/**
 * Start `catalytic serve` and resolve once it logs `listening on http://HOST:PORT`.
 * Returns {base, port, child, log(), stop(signal)}.
 */
export function startServer({ db, listen = '127.0.0.1:0', args = [], timeoutMs = 30_000 }) {
  const child = spawn(
    BIN,
    ['serve', '--listen', listen, '--db', db, '--log-level', 'info', ...args],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env } },
  );
  let output = '';
  let exited = null;
  const exitPromise = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      resolve(exited);
    });
  });
  return new Promise((resolve, reject) => {
    let done = false;
    const timer = setTimeout(() => {
      if (done) return;
      done = true;
      child.kill('SIGKILL');
      reject(new Error(`server did not log "listening on" within ${timeoutMs} ms:\n${output}`));
    }, timeoutMs);
    const onData = (chunk) => {
      output += chunk.toString('utf8').replace(ANSI, '');
      if (done) return;
      const m = /listening on (http:\/\/[^\s"',]+)/.exec(output);
      if (!m) return;
      done = true;
      clearTimeout(timer);
      const base = m[1].replace(/[.)\]]+$/, '').replace(/\/$/, '');
      const port = Number(new URL(base).port);
      resolve({
        base,
        port,
        child,
        log: () => output,
        exited: () => exited,
        /** Send `signal` and wait (bounded) for the process to exit; resolves {code, signal}. */
        async stop(sig = 'SIGTERM', waitMs = 15_000) {
          if (exited) return exited;
          child.kill(sig);
          const t = new Promise((r) => setTimeout(() => r(null), waitMs));
          const res = await Promise.race([exitPromise, t]);
          if (res) return res;
          child.kill('SIGKILL');
          await exitPromise;
          return { code: null, signal: 'SIGKILL', timedOut: true };
        },
      });
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('error', (err) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      reject(new Error(`cannot start ${BIN}: ${err.message}`));
    });
    exitPromise.then((e) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      reject(new Error(`server exited early (${JSON.stringify(e)}):\n${output}`));
    });
  });
}

/** Headless system Chromium with a fresh profile. Pages of one context share cookies. */
export async function launchBrowser() {
  const profile = tempDir('catalytic-chromium-');
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1280, height: 860 },
    timeout: 60_000,
  });
  context.setDefaultTimeout(10_000);
  context.setDefaultNavigationTimeout(15_000);
  return {
    context,
    async close() {
      await Promise.race([context.close(), sleep(10_000)]);
      removeDir(profile);
    },
  };
}

/** Open a page that records console errors and uncaught exceptions into page.errors. */
export async function openPage(context, url) {
  const page = await context.newPage();
  page.errors = [];
  page.on('console', (msg) => {
    if (msg.type() === 'error') page.errors.push(`console: ${msg.text()} ${(msg.location() && msg.location().url) || ''}`.trim());
  });
  page.on('pageerror', (err) => page.errors.push(`pageerror: ${err.message}`));
  if (url) await page.goto(url);
  return page;
}

export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/** Poll `fn` until it returns a truthy value; throw after `timeout` ms with `what`. */
export async function until(fn, { timeout = 10_000, interval = 100, what = 'condition' } = {}) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${last})`);
    await sleep(interval);
  }
}

/** Text of the connection indicator. */
export function connText(page) {
  return page.locator('#conn .conn-text').textContent();
}

export function mmssToSeconds(text) {
  const m = /^(\d+):(\d\d)$/.exec(String(text).trim());
  return m ? Number(m[1]) * 60 + Number(m[2]) : null;
}

export function ensureScreenshotDir() {
  mkdirSync(SCREENSHOTS, { recursive: true });
}

/**
 * Run the axe-core accessibility checks on the page as it is now; returns the violations
 * (WCAG 2.x A and AA rules). Injected through the DevTools protocol, which the page's CSP
 * does not apply to.
 */
export async function axeViolations(page, { exclude = [] } = {}) {
  const src = readFileSync(path.join(REPO_ROOT, 'tests', 'e2e', 'node_modules', 'axe-core', 'axe.min.js'), 'utf8');
  await page.evaluate(src);
  return page.evaluate(async (ex) => {
    // eslint-disable-next-line no-undef
    const r = await axe.run({ exclude: ex }, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } });
    return r.violations.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).slice(0, 3).join(', ')})`);
  }, exclude);
}

/** Minimal API client with its own cookie jar (admin_session), for setup work outside the browser. */
export async function apiLogin(base, email = ADMIN_EMAIL, password = ADMIN_PASSWORD) {
  const res = await fetch(`${base}/api/admin/login`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ email, password }),
    signal: AbortSignal.timeout(10_000),
  });
  if (res.status !== 204) throw new Error(`login: expected 204, got ${res.status} ${await res.text()}`);
  const cookie = (res.headers.get('set-cookie') || '').split(';')[0];
  return {
    cookie,
    async call(method, p, body) {
      const r = await fetch(`${base}${p}`, {
        method,
        headers: { Cookie: cookie, ...(body ? { 'Content-Type': 'application/json' } : {}) },
        body: body ? JSON.stringify(body) : undefined,
        signal: AbortSignal.timeout(10_000),
      });
      const text = await r.text();
      let data = null;
      try {
        data = text ? JSON.parse(text) : null;
      } catch {
        data = text;
      }
      return { status: r.status, data };
    },
  };
}

/** Path and query of an invite URL, re-based on the server we actually talk to. */
export function onBase(base, inviteUrl) {
  const u = new URL(inviteUrl, base);
  return `${base}${u.pathname}${u.search}`;
}

/**
 * Create `n` invitees through the API, `parallel` requests at a time; returns them in creation
 * order. `make(i)` gives the body of the i-th.
 */
export async function createUsers(api, n, make, parallel = 8) {
  const out = new Array(n);
  let next = 0;
  async function worker() {
    while (next < n) {
      const i = next++;
      const r = await api.call('POST', '/api/users', make(i));
      if (r.status !== 201) throw new Error(`POST /api/users #${i}: ${r.status} ${JSON.stringify(r.data)}`);
      out[i] = r.data;
    }
  }
  await Promise.all(Array.from({ length: parallel }, worker));
  return out;
}

/** Start a server with a fresh temp database and the default admin; `cleanup()` removes both. */
export async function freshServer(args = [], { withAdmin = true } = {}) {
  const dir = tempDir();
  const db = path.join(dir, 'db.sqlite');
  if (withAdmin) await createAdmin(db);
  const server = await startServer({ db, args });
  const s = {
    ...server,
    db,
    dir,
    /** Stop the server (whichever process `s.stop` stops now) and remove its files. */
    async cleanup() {
      await s.stop('SIGTERM');
      removeDir(dir);
    },
  };
  return s;
}

/** Sign in through the page's form; returns once the form is gone or shows an error. */
export async function signIn(page, email = ADMIN_EMAIL, password = ADMIN_PASSWORD) {
  await page.getByLabel('Email', { exact: true }).fill(email);
  await page.getByLabel('Password', { exact: true }).fill(password);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await until(async () => (await page.locator('#signin').count()) === 0 || page.locator('#signin-error').isVisible(),
    { what: 'the sign-in to be answered' });
}

/** Wait until the connection indicator is shown and says "Live". */
export async function waitLive(page, timeout = 15_000) {
  await until(async () => (await page.locator('#conn').isVisible()) && (await connText(page)) === 'Live',
    { timeout, what: 'connection indicator "Live"' });
}

/** The table row of the invitee with this email. */
export function rowByEmail(page, email) {
  return page.locator('#users-body tr', { has: page.locator('.user-email', { hasText: email }) });
}

/** Emails of the rows shown, in order. */
export function rowEmails(page) {
  return page.locator('#users-body .user-email').allTextContents();
}

/** Console errors of a page, minus the ones a scenario expects (e.g. a deliberate 401). */
export function unexpectedErrors(page, allowed = []) {
  return page.errors.filter((e) => !allowed.some((re) => re.test(e)));
}

/** Fail early with a clear message when the binary or the browser is missing. */
export function preflight(assert) {
  assert.ok(existsSync(BIN), `catalytic binary not found at ${BIN}: run \`cargo build\` first or set CATALYTIC_BIN`);
  assert.ok(existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM}: apt-get install -y chromium (or set CHROMIUM_PATH)`);
}
