// Issue 13 item 10: hygiene. The test suites write nothing into the checkout (screenshots go to
// a temporary directory unless screenshots.mjs asks for docs/screenshots on purpose), and the
// README shows the screenshots that script makes. The CLI half of the item (--version, --help,
// errors naming their environment variable, --db in a missing directory, "created new
// database") is tested against the binary in tests/cli.rs.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { REPO_ROOT, SCREENSHOTS } from './lib.mjs';
import { SHOTS } from './screenshots.mjs';

test('test screenshots go outside the checkout', () => {
  if (process.env.CATALYTIC_SCREENSHOT_DIR) return; // screenshots.mjs, on purpose
  const rel = path.relative(REPO_ROOT, SCREENSHOTS);
  assert.ok(rel.startsWith('..') || path.isAbsolute(rel), `screenshots would land in the checkout: ${SCREENSHOTS}`);
});

test('the README shows every screenshot screenshots.mjs makes, and they exist', () => {
  const readme = readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');
  for (const name of SHOTS) {
    assert.ok(readme.includes(`docs/screenshots/${name}`), `README lacks ${name}`);
    assert.ok(existsSync(path.join(REPO_ROOT, 'docs', 'screenshots', name)), `docs/screenshots/${name} is missing`);
  }
});
