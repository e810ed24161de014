import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  formatCountdown, parseTimer, parseProgress, remainingAt, fullName, sessionReducer, streamUrl,
  secondsUntil, statusLabel, sentence, shortLink, shortTime, longTime,
} from '../js/util.js';

describe('countdown helpers', () => {
  test('formatCountdown', () => {
    assert.equal(formatCountdown(0), '00:00');
    assert.equal(formatCountdown(5), '00:05');
    assert.equal(formatCountdown(59), '00:59');
    assert.equal(formatCountdown(60), '01:00');
    assert.equal(formatCountdown(754), '12:34');
    assert.equal(formatCountdown(1800), '30:00');
    assert.equal(formatCountdown(5400), '90:00');
    assert.equal(formatCountdown(61.9), '01:01');
    assert.equal(formatCountdown(-3), '00:00');
    assert.equal(formatCountdown(NaN), '00:00');
    assert.equal(formatCountdown(null), '00:00');
  });

  test('parseTimer', () => {
    assert.equal(parseTimer('12:34'), 754);
    assert.equal(parseTimer('00:00'), 0);
    assert.equal(parseTimer('90:00'), 5400);
    assert.equal(parseTimer('1:00:05'), 3605);
    assert.equal(parseTimer(null), null);
    assert.equal(parseTimer(''), null);
    assert.equal(parseTimer('12'), null);
    assert.equal(parseTimer('ab:cd'), null);
    assert.equal(parseTimer('-1:00'), null);
  });

  test('parseTimer and formatCountdown round-trip', () => {
    for (let s = 0; s < 7200; s += 37) assert.equal(parseTimer(formatCountdown(s)), s);
  });

  test('remainingAt ticks down locally and never goes negative', () => {
    assert.equal(remainingAt(null, 0, 5000), null);
    assert.equal(remainingAt(100, 1000, 1000), 100);
    assert.equal(remainingAt(100, 1000, 1999), 100);
    assert.equal(remainingAt(100, 1000, 2000), 99);
    assert.equal(remainingAt(100, 1000, 61_000), 40);
    assert.equal(remainingAt(3, 0, 10_000), 0);
    assert.equal(remainingAt(30, 5000, 4000), 30, 'clock going backwards does not add time');
  });

  test('secondsUntil rounds up', () => {
    assert.equal(secondsUntil(5000, 0), 5);
    assert.equal(secondsUntil(4001, 0), 5);
    assert.equal(secondsUntil(0, 100), 0);
  });

  test('parseProgress', () => {
    assert.deepEqual(parseProgress('3/10'), { answered: 3, total: 10 });
    assert.deepEqual(parseProgress(' 0 / 0 '), { answered: 0, total: 0 });
    assert.deepEqual(parseProgress('x'), { answered: 0, total: 0 });
    assert.deepEqual(parseProgress(undefined), { answered: 0, total: 0 });
  });
});

describe('words for people', () => {
  test('fullName', () => {
    assert.equal(fullName({ first_name: 'Ada', last_name: 'Lovelace' }), 'Ada Lovelace');
    assert.equal(fullName({ first_name: '', last_name: '', email: 'a@b.c' }), 'a@b.c');
  });

  test('statusLabel: badges in words', () => {
    assert.equal(statusLabel('invited'), 'Invited');
    assert.equal(statusLabel('in_progress'), 'In progress');
    assert.equal(statusLabel('completed'), 'Completed');
    assert.equal(statusLabel('expired'), 'Expired');
    assert.equal(statusLabel('paused_for_lunch'), 'paused for lunch');
    assert.equal(statusLabel(undefined), 'Unknown');
  });

  test('sentence: capital letter and full stop, once', () => {
    assert.equal(sentence('wrong email or password'), 'Wrong email or password.');
    assert.equal(sentence('Already a sentence.'), 'Already a sentence.');
    assert.equal(sentence('is it?'), 'Is it?');
    assert.equal(sentence('  padded  '), 'Padded.');
    assert.equal(sentence(''), '');
    assert.equal(sentence(null), '');
  });

  test('shortLink keeps both ends of the token, so two links differ visibly', () => {
    const a = 'http://127.0.0.1:8080/session?token=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA1234';
    const b = 'http://127.0.0.1:8080/session?token=BBBBBBAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA9999';
    assert.equal(shortLink(a), 'AAAAAAAA…AA1234');
    assert.equal(shortLink(b), 'BBBBBBAA…AA9999');
    assert.equal(shortLink('http://h/session?token=short'), 'short');
    assert.equal(shortLink('http://h/other'), 'http://h/other');
    assert.equal(shortLink(''), '');
  });

  test('shortTime: time today, day and time this year, date before', () => {
    const now = Date.UTC(2026, 11, 3, 15, 0);
    const today = new Date(now - 3_600_000).toISOString();
    const thisYear = new Date(Date.UTC(2026, 5, 1, 12)).toISOString();
    const before = new Date(Date.UTC(2024, 5, 1, 12)).toISOString();
    assert.match(shortTime(today, now, 'en-GB'), /^\d\d:\d\d$/);
    assert.match(shortTime(thisYear, now, 'en-GB'), /^1 Jun \d\d:\d\d$/);
    assert.match(shortTime(before, now, 'en-GB'), /2024/);
    assert.equal(shortTime(null, now), '');
    assert.equal(shortTime('not a date', now), '');
    assert.match(longTime(before, 'en-GB'), /2024/);
    assert.equal(longTime(undefined), '');
  });
});

describe('sessionReducer', () => {
  test('time_update, progress, session_expired, unknown', () => {
    let s = sessionReducer(undefined, null, 0);
    assert.equal(s.remaining, null);
    s = sessionReducer(s, { type: 'time_update', remaining_seconds: 120 }, 1000);
    assert.equal(s.remaining, 120);
    assert.equal(s.at, 1000);
    s = sessionReducer(s, { type: 'progress', questions_answered: 2, questions_total: 10 }, 2000);
    assert.equal(s.answered, 2);
    assert.equal(s.total, 10);
    assert.equal(s.at, 1000, 'progress does not move the countdown base');
    const same = sessionReducer(s, { type: 'whatever' }, 3000);
    assert.equal(same, s);
    assert.equal(sessionReducer(s, { type: 'time_update', remaining_seconds: 'x' }), s);
    s = sessionReducer(s, { type: 'session_expired' }, 4000);
    assert.equal(s.expired, true);
    assert.equal(s.remaining, 0);
  });
});

describe('streamUrl', () => {
  test('follows the page protocol and host', () => {
    assert.equal(streamUrl('/admin/stream', new URL('http://127.0.0.1:8080/')), 'ws://127.0.0.1:8080/admin/stream');
    assert.equal(streamUrl('/admin/stream', new URL('https://example.com/session?token=x')), 'wss://example.com/admin/stream');
    assert.equal(streamUrl('/session/3/stream?token=a%20b', new URL('http://[::1]:9/')), 'ws://[::1]:9/session/3/stream?token=a%20b');
  });
});
