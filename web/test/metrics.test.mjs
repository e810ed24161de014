import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  parseMetrics, sampleFrom, quantile, derive, trim, chartPaths, niceMax, SPAN_MS,
} from '../js/metrics.js';

function scrape({ admin = 0, session = 0, agent = 0, reconnects = 0, slow = 0, heartbeat = 0, buckets = [] }) {
  const lines = [
    '# HELP catalytic_ws_connections open streams',
    '# TYPE catalytic_ws_connections gauge',
    `catalytic_ws_connections{stream="admin"} ${admin}`,
    `catalytic_ws_connections{stream="session"} ${session}`,
    `catalytic_ws_connections{stream="agent"} ${agent}`,
    `catalytic_ws_reconnects_total{stream="admin"} ${reconnects}`,
    'catalytic_ws_reconnects_total{stream="session"} 0',
    `catalytic_ws_closed_total{reason="slow_consumer"} ${slow}`,
    `catalytic_ws_closed_total{reason="heartbeat"} ${heartbeat}`,
    'catalytic_ws_closed_total{reason="client"} 99',
  ];
  // Two streams' histograms; the sample sums them.
  for (const stream of ['admin', 'session']) {
    for (const [le, n] of buckets) lines.push(`catalytic_broadcast_seconds_bucket{stream="${stream}",le="${le}"} ${n}`);
  }
  return lines.join('\n');
}

describe('parsing the text format', () => {
  test('names, labels (with escapes), values; comments and junk skipped', () => {
    const p = parseMetrics('# c\nfoo 1\nbar{a="x",b="q\\"uote"} 2.5\nbad line\nbaz{le="+Inf"} +Inf\n');
    assert.equal(p.get('foo')[0].value, 1);
    assert.deepEqual(p.get('bar')[0], { labels: { a: 'x', b: 'q"uote' }, value: 2.5 });
    assert.equal(p.get('baz')[0].value, Infinity);
    assert.equal(p.has('bad'), false);
  });

  test('a sample keeps streams by kind, cumulative counters and the summed histogram', () => {
    const s = sampleFrom(scrape({ admin: 3, session: 2, reconnects: 4, slow: 1, heartbeat: 2, buckets: [['0.001', 1], ['0.01', 3], ['+Inf', 4]] }), 1000);
    assert.deepEqual(s.streams, { admin: 3, session: 2, agent: 0 });
    assert.deepEqual([s.reconnects, s.slow, s.heartbeat], [4, 1, 2]);
    assert.deepEqual(s.buckets, [[0.001, 2], [0.01, 6], [Infinity, 8]]);
  });
});

describe('quantiles from buckets', () => {
  test('linear inside the bucket, like histogram_quantile', () => {
    const h = [[0.001, 0], [0.002, 50], [0.004, 100], [Infinity, 100]];
    assert.ok(Math.abs(quantile(h, 0.5) - 0.002) < 1e-12);
    assert.ok(Math.abs(quantile(h, 0.75) - 0.003) < 1e-12);
    assert.ok(Math.abs(quantile(h, 0.99) - 0.00396) < 1e-12);
  });
  test('the +Inf bucket answers with the largest finite bound; empty is null', () => {
    assert.equal(quantile([[0.1, 0], [Infinity, 5]], 0.99), 0.1);
    assert.equal(quantile([[0.1, 0], [Infinity, 0]], 0.5), null);
    assert.equal(quantile([], 0.5), null);
  });
});

describe('rates and latency over the last minute', () => {
  test('per-minute rates from counter differences; quantiles from bucket differences', () => {
    const samples = [
      sampleFrom(scrape({ reconnects: 10, slow: 0, buckets: [['0.001', 100], ['0.01', 100], ['+Inf', 100]] }), 0),
      sampleFrom(scrape({ reconnects: 15, slow: 1, buckets: [['0.001', 100], ['0.01', 150], ['+Inf', 150]] }), 30_000),
    ];
    const [p] = derive(samples);
    assert.equal(p.reconnects, 10, '5 in 30 s = 10 a minute');
    assert.equal(p.slow, 2);
    assert.equal(p.heartbeat, 0);
    assert.ok(p.p50 > 0.001 && p.p50 <= 0.01, `p50 ${p.p50} lies in the bucket that got the new observations`);
  });

  test('a window without broadcasts has no latency, and a restart never gives negative rates', () => {
    const h = [['0.001', 5], ['+Inf', 5]];
    const samples = [
      sampleFrom(scrape({ reconnects: 50, buckets: h }), 0),
      sampleFrom(scrape({ reconnects: 50, buckets: h }), 5_000),
      sampleFrom(scrape({ reconnects: 2, buckets: [['0.001', 1], ['+Inf', 1]] }), 10_000),
    ];
    const pts = derive(samples);
    assert.equal(pts[0].p50, null);
    assert.equal(pts[0].reconnects, 0);
    assert.ok(pts[1].reconnects >= 0, `after a restart: ${pts[1].reconnects}`);
  });

  test('the window slides: rates use the samples of the last minute', () => {
    const samples = [];
    for (let i = 0; i <= 24; i++) samples.push(sampleFrom(scrape({ reconnects: i < 12 ? 0 : 6 }), i * 5000));
    const pts = derive(samples);
    // The 6 reconnects happened at 60 s; at 120 s the window [60 s, 120 s] no longer sees them.
    assert.equal(pts.at(-1).reconnects, 0);
    assert.ok(pts[11].reconnects > 0);
  });

  test('trim keeps ten minutes and one sample before', () => {
    const samples = Array.from({ length: 200 }, (_, i) => ({ t: i * 5000 }));
    const kept = trim(samples, 199 * 5000);
    assert.ok(kept[0].t <= 199 * 5000 - SPAN_MS && kept[1].t > 199 * 5000 - SPAN_MS);
    assert.equal(kept.at(-1).t, 199 * 5000);
  });
});

describe('chart geometry', () => {
  test('niceMax rounds up to 1, 2 or 5 × 10^n', () => {
    assert.deepEqual([niceMax(0), niceMax(3), niceMax(7), niceMax(12), niceMax(0.003, 0.001)], [1, 5, 10, 20, 0.005]);
  });
  test('paths span the box; null values break the line', () => {
    const pts = [{ t: 0, a: 0 }, { t: 50, a: null }, { t: 100, a: 10 }];
    const { paths, max } = chartPaths(pts, ['a'], { width: 200, height: 100, t0: 0, t1: 100 });
    assert.equal(max, 10);
    assert.equal(paths.a, 'M0.0 100.0M200.0 0.0');
  });
});
