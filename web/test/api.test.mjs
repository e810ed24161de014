import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { retryBusy } from '../js/api.js';

// Answers in the shape `request` resolves to.
const answer = (status, retryAfter = null) => ({ ok: status < 400, status, data: null, error: status < 400 ? null : 'x', retryAfter });

/** A `send` that gives the scripted answers in turn, and the waits `retryBusy` asked for. */
function script(...answers) {
  const calls = [];
  const waits = [];
  return {
    send: async () => {
      calls.push(calls.length);
      return answers[Math.min(calls.length - 1, answers.length - 1)];
    },
    sleep: async (ms) => {
      waits.push(ms);
    },
    calls,
    waits,
  };
}

describe('retryBusy (CSV import under overload)', () => {
  test('a 503 with Retry-After is waited out as told, then the same request goes again and the import continues', async () => {
    const s = script(answer(503, '1'), answer(503, '2'), answer(201));
    const res = await retryBusy(s.send, { sleep: s.sleep });
    assert.equal(res.status, 201);
    assert.equal(s.calls.length, 3);
    assert.deepEqual(s.waits, [1000, 2000]);
  });
  test('other answers are returned at once, errors included', async () => {
    for (const status of [201, 409, 422, 401, 0]) {
      const s = script(answer(status));
      assert.equal((await retryBusy(s.send, { sleep: s.sleep })).status, status);
      assert.equal(s.calls.length, 1);
      assert.deepEqual(s.waits, []);
    }
  });
  test('without Retry-After it backs off by attempt; waits are capped at 5 s; tries are bounded', async () => {
    const s = script(answer(503), answer(503, 'soon'), answer(503, '60'), answer(503));
    const res = await retryBusy(s.send, { tries: 4, sleep: s.sleep });
    assert.equal(res.status, 503, 'the last 503 is returned once the tries are spent');
    assert.equal(s.calls.length, 4);
    assert.deepEqual(s.waits, [1000, 2000, 5000]);
  });
});
