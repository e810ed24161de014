// The System view: the server at a glance for admins — open streams by kind, reconnects and
// slow-consumer / heartbeat closes per minute, broadcast latency p50/p99 — with small charts of
// the last 10 minutes, drawn as inline SVG from samples of GET /metrics.
//
// Sampling starts when an admin signs in (every 5 s; a scrape is a few KiB) so the charts have
// history when the view is opened, and stops at sign-out. Samples older than the chart's span
// are dropped, so memory stays bounded however long the page is open.

import { sampleFrom, derive, trim, chartPaths, SPAN_MS } from './metrics.js';
import { setText } from './dom.js';

const $ = (id) => document.getElementById(id);
const EVERY_MS = 5000;
const SVG = 'http://www.w3.org/2000/svg';

let samples = [];
let timer = null;
let listener = null; // the mounted view's redraw
let lastError = '';

async function scrape() {
  try {
    const res = await fetch('/metrics', { credentials: 'same-origin', cache: 'no-store' });
    if (!res.ok) throw new Error(`the server answered ${res.status}`);
    const text = await res.text();
    const now = Date.now();
    samples = trim([...samples, sampleFrom(text, now)], now);
    lastError = '';
  } catch (err) {
    lastError = `Could not read /metrics: ${err.message || err}. Trying again in 5 seconds.`;
  }
  if (listener) listener();
}

/** Background sampling while an admin is signed in. */
export const sampler = {
  start() {
    if (timer != null) return;
    scrape();
    timer = setInterval(scrape, EVERY_MS);
  },
  stop() {
    clearInterval(timer);
    timer = null;
    samples = [];
  },
};

const FIGURES = [
  ['admin', 'Admin streams', (v) => fmtInt(v)],
  ['session', 'Session pages', (v) => fmtInt(v)],
  ['agent', 'Agent streams', (v) => fmtInt(v)],
  ['reconnects', 'Reconnects / min', fmtRate],
  ['slow', 'Slow-consumer closes / min', fmtRate],
  ['heartbeat', 'Heartbeat closes / min', fmtRate],
  ['p50', 'Broadcast latency p50', fmtSeconds],
  ['p99', 'Broadcast latency p99', fmtSeconds],
];

const CHARTS = [
  { id: 'streams', title: 'Open streams', keys: [['admin', 'admin'], ['session', 'session'], ['agent', 'agent']], fmt: fmtInt, floor: 1 },
  { id: 'rates', title: 'Per minute', keys: [['reconnects', 'reconnects'], ['slow', 'slow-consumer closes'], ['heartbeat', 'heartbeat closes']], fmt: fmtRate, floor: 1 },
  { id: 'latency', title: 'Broadcast latency', keys: [['p50', 'p50'], ['p99', 'p99']], fmt: fmtSeconds, floor: 0.001 },
];

export function mountSystem() {
  const figures = $('system-figures');
  const charts = $('system-charts');
  const values = new Map();
  for (const [key, label] of FIGURES) {
    const div = document.createElement('div');
    div.className = 'figure';
    const dt = document.createElement('dt');
    dt.textContent = label;
    const dd = document.createElement('dd');
    dd.textContent = '…';
    div.append(dt, dd);
    figures.append(div);
    values.set(key, dd);
  }
  const drawn = CHARTS.map((c) => buildChart(charts, c));

  function redraw() {
    const points = derive(samples);
    const last = points[points.length - 1];
    for (const [key, , fmt] of FIGURES) {
      const v = last ? last[key] : null;
      setText(values.get(key), last ? fmt(v) : 'waiting for a second sample…');
    }
    // The last 10 minutes, or since the first sample when there is less history than that.
    const now = samples.length ? samples[samples.length - 1].t : Date.now();
    const from = Math.max(now - SPAN_MS, samples.length ? samples[0].t : now - SPAN_MS);
    for (const d of drawn) d.draw(points, Math.min(from, now - 10_000), now);
    const err = $('system-error');
    err.hidden = !lastError;
    setText(err, lastError);
  }

  listener = redraw;
  redraw();
  if (timer == null) sampler.start();
  return {
    unmount() {
      listener = null;
    },
  };
}

const W = 600;
const H = 140;

function svg(tag, attrs = {}) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function span(className, text = '') {
  const e = document.createElement('span');
  e.className = className;
  e.textContent = text;
  return e;
}

/**
 * One chart: a figure with a title, an SVG of lines (stretched to the box; the labels are HTML
 * around it so they never stretch), a legend, and the whole summarised in words for screen
 * readers (role img + title).
 */
function buildChart(parent, c) {
  const fig = document.createElement('figure');
  fig.className = 'chart';
  const cap = document.createElement('figcaption');
  cap.textContent = c.title;
  const top = span('axis axis-top');
  const box = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', preserveAspectRatio: 'none', class: 'chart-svg' });
  const title = svg('title');
  box.append(title);
  for (const f of [0, 0.5, 1]) {
    box.append(svg('line', { x1: 0, x2: W, y1: (H * f).toFixed(1), y2: (H * f).toFixed(1), class: 'grid' }));
  }
  const lines = c.keys.map(([key], i) => {
    const p = svg('path', { class: `line line-${i}`, fill: 'none' });
    box.append(p);
    return [key, p];
  });
  const axis = document.createElement('div');
  axis.className = 'axis axis-x';
  const from = span('axis-from');
  axis.append(from, span('axis-now', 'now'));
  const legend = document.createElement('ul');
  legend.className = 'legend';
  c.keys.forEach(([, label], i) => {
    const li = document.createElement('li');
    const sw = span(`swatch line-${i}`);
    sw.setAttribute('aria-hidden', 'true');
    li.append(sw, label);
    legend.append(li);
  });
  fig.append(cap, top, box, axis, legend);
  parent.append(fig);
  return {
    draw(points, t0, t1) {
      const { paths, max } = chartPaths(points, c.keys.map(([k]) => k), { width: W, height: H, t0, t1, floor: c.floor });
      for (const [key, p] of lines) p.setAttribute('d', paths[key] || '');
      setText(top, c.fmt(max));
      setText(from, `−${span_(t1 - t0)}`);
      const last = points[points.length - 1];
      title.textContent = last
        ? `${c.title} over the last ${span_(t1 - t0)}; now ${c.keys.map(([k, label]) => `${label} ${c.fmt(last[k])}`).join(', ')}.`
        : `${c.title}: no samples yet.`;
    },
  };
}

/** "10 min", "2 min", "35 s". */
function span_(ms) {
  const s = Math.round(ms / 1000);
  return s >= 60 ? `${Math.round(s / 60)} min` : `${s} s`;
}

function fmtInt(v) {
  return Number.isFinite(v) ? Math.round(v).toLocaleString('en') : '—';
}

function fmtRate(v) {
  if (!Number.isFinite(v)) return '—';
  return v >= 10 ? Math.round(v).toLocaleString('en') : String(Math.round(v * 10) / 10);
}

function fmtSeconds(v) {
  if (!Number.isFinite(v)) return 'no broadcasts';
  if (v < 0.001) return `${(v * 1e6).toFixed(0)} µs`;
  if (v < 1) return `${(v * 1000).toFixed(v < 0.01 ? 2 : 1)} ms`;
  return `${v.toFixed(2)} s`;
}
