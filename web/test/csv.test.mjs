import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { parseCsv, inviteRows, validEmail } from '../js/csv.js';

const fields = (text) => parseCsv(text).map((r) => r.fields);

describe('parseCsv (RFC 4180, lenient)', () => {
  test('plain rows, LF and CRLF, blank lines skipped, fields trimmed', () => {
    assert.deepEqual(fields('a,b,c\r\n\r\n d , e ,f\n'), [['a', 'b', 'c'], ['d', 'e', 'f']]);
    assert.deepEqual(parseCsv('a\n\nb').map((r) => r.line), [1, 3]);
  });
  test('quoted fields: commas, quotes, line breaks, spaces kept', () => {
    assert.deepEqual(fields('"Smith, Jr.","O""Brien"," x "\n'), [['Smith, Jr.', 'O"Brien', ' x ']]);
    const recs = parseCsv('"two\nlines",b,c\nnext,row,here');
    assert.deepEqual(recs.map((r) => [r.line, r.fields[0]]), [[1, 'two\nlines'], [3, 'next']]);
  });
  test('a byte-order mark and a missing final newline are fine', () => {
    assert.deepEqual(fields('\uFEFFa,b,c'), [['a', 'b', 'c']]);
  });
  test('an unterminated quote is flagged, not swallowed silently', () => {
    const recs = parseCsv('a,b,c\n"open,x,y');
    assert.equal(recs.length, 2);
    assert.equal(recs[1].open, true);
  });
});

describe('inviteRows', () => {
  test('header optional; 3 or 4 columns; questions_total only when given', () => {
    const text = 'first_name,last_name,email,questions_total\nAda,Lovelace,ada@example.com,12\nAlan,Turing,alan@example.com\n';
    const r = inviteRows(text);
    assert.equal(r.header, true);
    assert.deepEqual(r.errors, []);
    assert.deepEqual(r.rows, [
      { line: 2, first_name: 'Ada', last_name: 'Lovelace', email: 'ada@example.com', questions_total: 12 },
      { line: 3, first_name: 'Alan', last_name: 'Turing', email: 'alan@example.com' },
    ]);
    const noHeader = inviteRows('Ada,Lovelace,ada@example.com');
    assert.equal(noHeader.header, false);
    assert.equal(noHeader.rows.length, 1);
    assert.equal(inviteRows('First name,Last name,E-mail\nA,B,a@b.co').header, true);
  });

  test('each bad line says why, as a sentence with its line number; good ones still go', () => {
    const text = [
      'Ada,Lovelace,ada@example.com',
      'OnlyTwo,fields',
      'Too,many,x@y.zz,3,extra',
      ',Empty,first@example.com',
      'Bad,Email,not-an-email',
      'Bad,Count,c@example.com,0',
      'Bad,Count,d@example.com,ten',
      'Dup,Licate,ADA@example.com',
      `${'x'.repeat(201)},Long,long@example.com`,
      'Spoof\u202Ename,X,spoof@example.com',
      'Trailing,Commas,t@example.com,,',
    ].join('\n');
    const r = inviteRows(text);
    assert.deepEqual(r.rows.map((x) => x.email), ['ada@example.com', 't@example.com']);
    const byLine = Object.fromEntries(r.errors.map((e) => [e.line, e.reason]));
    assert.deepEqual(Object.keys(byLine).map(Number), [2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert.match(byLine[2], /^Line 2: expected first name, last name and email/);
    assert.match(byLine[3], /at most 4 fields, found 5\.$/);
    assert.match(byLine[4], /first name is empty/);
    assert.match(byLine[5], /“not-an-email” is not an email address\.$/);
    assert.match(byLine[6], /whole number from 1 to 10,000/);
    assert.match(byLine[7], /whole number/);
    assert.match(byLine[8], /already on line 1/);
    assert.match(byLine[9], /longer than 200 characters/);
    assert.match(byLine[10], /control or text-direction character/);
    for (const e of r.errors) assert.match(e.reason, /^Line \d+: .+\.$/);
  });

  test('more rows than allowed are refused line by line', () => {
    const text = Array.from({ length: 5 }, (_, i) => `A,B,a${i}@example.com`).join('\n');
    const r = inviteRows(text, { maxRows: 3 });
    assert.equal(r.rows.length, 3);
    assert.equal(r.errors.length, 2);
  });

  test('1,000 rows parse in well under a second', () => {
    const text = Array.from({ length: 1000 }, (_, i) => `First${i},Last${i},p${i}@example.com,${(i % 20) + 1}`).join('\n');
    const t0 = performance.now();
    const r = inviteRows(text);
    assert.equal(r.rows.length, 1000);
    assert.ok(performance.now() - t0 < 500);
  });

  test('validEmail matches the server rules', () => {
    for (const ok of ['a@b.co', 'first.last+tag@example.com', 'x@localhost']) assert.ok(validEmail(ok), ok);
    for (const bad of ['', 'a', '@b.co', 'a@', 'a@@b.co', 'a@.b', 'a@b.', 'a@b..c', 'a b@c.d', 'a@b,c']) {
      assert.ok(!validEmail(bad), bad);
    }
  });
});
