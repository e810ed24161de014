// The System view's numbers, from periodic samples of `GET /metrics` (Prometheus text).
// Pure: parsing, rates, histogram quantiles and chart geometry. Unit-tested in
// web/test/metrics.test.mjs; the DOM side is system.js.
//
// Rates are per minute over the last minute of samples (or what there is of it), from the
// differences of counters; a counter that went down (a server restart) starts a new baseline
// instead of producing a negative rate. Broadcast latency quantiles come from the difference
// of the histogram buckets over the same window, interpolated inside a bucket as Prometheus'
// histogram_quantile does; a window with no broadcast has no latency (null), not zero.

/** How long samples are kept (the chart's span). */
export const SPAN_MS = 10 * 60 * 1000;
/** The window of rates and latency quantiles. */
export const WINDOW_MS = 60 * 1000;

const STREAMS = ['admin', 'session', 'agent'];

/**
 * Parse the text format: `name{label="v",...} value` lines; comments and malformed lines are
 * skipped. Returns a Map from metric name to [{labels, value}].
 */
export function parseMetrics(text) {
  const out = new Map();
  for (const raw of String(text || '').split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const value = parseValue(m[4]);
    if (value == null) continue;
    const labels = {};
    if (m[3]) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
      let l;
      while ((l = re.exec(m[3]))) labels[l[1]] = l[2].replace(/\\(.)/g, '$1');
    }
    if (!out.has(m[1])) out.set(m[1], []);
    out.get(m[1]).push({ labels, value });
  }
  return out;
}

function parseValue(s) {
  if (s === '+Inf') return Infinity;
  if (s === '-Inf') return -Infinity;
  const v = Number(s);
  return Number.isNaN(v) ? null : v;
}

/** Sum of the samples of `name` whose labels include `where`. */
function total(parsed, name, where = {}) {
  let sum = 0;
  for (const s of parsed.get(name) || []) {
    if (Object.entries(where).every(([k, v]) => s.labels[k] === v)) sum += s.value;
  }
  return sum;
}

/**
 * The numbers the System view follows, from one scrape at wall time `t` (ms): open streams by
 * kind, cumulative reconnects and closes, and the broadcast histogram summed over streams.
 */
export function sampleFrom(text, t) {
  const p = parseMetrics(text);
  const streams = {};
  for (const k of STREAMS) streams[k] = total(p, 'catalytic_ws_connections', { stream: k });
  const les = new Map();
  for (const s of p.get('catalytic_broadcast_seconds_bucket') || []) {
    const le = parseValue(s.labels.le);
    if (le == null) continue;
    les.set(le, (les.get(le) || 0) + s.value);
  }
  return {
    t,
    streams,
    reconnects: total(p, 'catalytic_ws_reconnects_total'),
    slow: total(p, 'catalytic_ws_closed_total', { reason: 'slow_consumer' }),
    heartbeat: total(p, 'catalytic_ws_closed_total', { reason: 'heartbeat' }),
    buckets: [...les.entries()].sort((a, b) => a[0] - b[0]),
  };
}

/** Keep the samples of the last `span` ms (plus one older, so the window has a start). */
export function trim(samples, now, span = SPAN_MS) {
  let i = 0;
  while (i + 1 < samples.length && samples[i + 1].t <= now - span) i++;
  return i > 0 ? samples.slice(i) : samples;
}

/**
 * The φ-quantile of a cumulative histogram [[le, count], ...] sorted by le (the last le is
 * +Inf). Linear inside a bucket; the +Inf bucket answers with the largest finite bound.
 * null when the histogram is empty.
 */
export function quantile(buckets, q) {
  if (!buckets.length) return null;
  const count = buckets[buckets.length - 1][1];
  if (!(count > 0)) return null;
  const rank = q * count;
  let prevLe = 0;
  let prevCount = 0;
  for (const [le, c] of buckets) {
    if (c >= rank) {
      if (le === Infinity) return prevLe;
      if (c === prevCount) return le;
      return prevLe + ((le - prevLe) * (rank - prevCount)) / (c - prevCount);
    }
    prevLe = le;
    prevCount = c;
  }
  return prevLe;
}

/** Bucket-wise difference of two cumulative histograms (same bounds), or null on a reset. */
function bucketDelta(a, b) {
  if (!a || a.length !== b.length) return b;
  const out = [];
  for (let i = 0; i < b.length; i++) {
    if (a[i][0] !== b[i][0]) return b;
    const d = b[i][1] - a[i][1];
    if (d < 0) return b; // the server restarted: the newer sample is the whole window
    out.push([b[i][0], d]);
  }
  return out;
}

function perMinute(a, b, key) {
  const dt = b.t - a.t;
  if (dt <= 0) return null;
  const d = b[key] - a[key];
  return ((d < 0 ? b[key] : d) * 60000) / dt;
}

/**
 * One point per sample (from the second on): open streams, rates per minute and latency
 * quantiles (seconds) over the `window` ending at that sample.
 */
export function derive(samples, window = WINDOW_MS) {
  const points = [];
  let start = 0;
  for (let i = 1; i < samples.length; i++) {
    const b = samples[i];
    while (start < i - 1 && samples[start + 1].t <= b.t - window) start++;
    const a = samples[start];
    const hist = bucketDelta(a.buckets, b.buckets);
    points.push({
      t: b.t,
      ...b.streams,
      reconnects: perMinute(a, b, 'reconnects'),
      slow: perMinute(a, b, 'slow'),
      heartbeat: perMinute(a, b, 'heartbeat'),
      p50: quantile(hist, 0.5),
      p99: quantile(hist, 0.99),
    });
  }
  return points;
}

/** A round upper bound for an axis: 1, 2, 5 × 10^n at or above `max` (at least `floor`). */
export function niceMax(max, floor = 1) {
  const m = Math.max(max, floor);
  const p = 10 ** Math.floor(Math.log10(m));
  for (const f of [1, 2, 5, 10]) if (f * p >= m) return f * p;
  return 10 * p;
}

/**
 * SVG path data for each of `keys` over the time range [t0, t1] in a width×height box (y grows
 * down). Null values break the line. Returns {paths: {key: d}, max} with `max` the y-axis top.
 */
export function chartPaths(points, keys, { width, height, t0, t1, floor = 1 }) {
  let max = 0;
  for (const p of points) for (const k of keys) if (Number.isFinite(p[k])) max = Math.max(max, p[k]);
  max = niceMax(max, floor);
  const span = Math.max(1, t1 - t0);
  const x = (t) => (((t - t0) / span) * width).toFixed(1);
  const y = (v) => (height - (v / max) * height).toFixed(1);
  const paths = {};
  for (const k of keys) {
    let d = '';
    let pen = false;
    for (const p of points) {
      if (p.t < t0 || !Number.isFinite(p[k])) {
        pen = false;
        continue;
      }
      d += `${pen ? 'L' : 'M'}${x(p.t)} ${y(p[k])}`;
      pen = true;
    }
    paths[k] = d;
  }
  return { paths, max };
}
