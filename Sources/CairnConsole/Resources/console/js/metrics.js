// Prometheus text exposition (version 0.0.4) parsing and small SVG line charts.
import { h } from './ui.js';

/** Parses exposition text into [{name, labels, value}]. */
export function parse(text) {
  const samples = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const labels = {};
    for (const pair of (match[3] || '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]] = pair[2].replace(/\\(.)/g, '$1');
    samples.push({ name: match[1], labels, value: Number(match[4]) });
  }
  return samples;
}

/** Sums the samples named `name`, grouped by the label `by` (or all into ''). */
export function sum(samples, name, by, where = () => true) {
  const groups = new Map();
  for (const sample of samples) {
    if (sample.name !== name || !where(sample.labels)) continue;
    const key = by ? sample.labels[by] ?? '' : '';
    groups.set(key, (groups.get(key) || 0) + sample.value);
  }
  return groups;
}

/** The `q` quantile from cumulative histogram bucket deltas {le: count}. */
export function quantile(buckets, q) {
  const bounds = [...buckets.keys()].map((le) => (le === '+Inf' ? Infinity : Number(le))).sort((a, b) => a - b);
  const total = buckets.get('+Inf') || 0;
  if (!total) return null;
  const target = total * q;
  for (const bound of bounds) {
    const key = bound === Infinity ? '+Inf' : [...buckets.keys()].find((le) => Number(le) === bound);
    if (buckets.get(key) >= target) return bound;
  }
  return null;
}

/** An SVG line chart of `series` [{label, points: [number|null]}] with a y-axis label. */
export function chart(title, series, unit) {
  const width = 600;
  const height = 160;
  const pad = 28;
  const values = series.flatMap((line) => line.points).filter((value) => Number.isFinite(value));
  const max = Math.max(1e-9, ...values) * 1.1;
  const count = Math.max(2, ...series.map((line) => line.points.length));
  const x = (index) => pad + (index * (width - pad - 4)) / (count - 1);
  const y = (value) => height - pad + 8 - (value / max) * (height - pad - 4);
  const svg = h('svg', { class: 'chart', viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': `${title}: ${series.map((line) => `${line.label} ${format(line.points.at(-1))} ${line.unit ?? unit}`).join(', ')}` },
    h('title', {}, title),
    h('line', { class: 'axis', x1: pad, y1: height - pad + 8, x2: width, y2: height - pad + 8 }),
    h('line', { class: 'axis', x1: pad, y1: 4, x2: pad, y2: height - pad + 8 }),
    h('text', { x: 2, y: 12 }, format(max)),
    h('text', { x: 2, y: height - pad + 8 }, '0'),
    series.slice(0, 2).map((line, index) => h('polyline', {
      class: index ? 'line2' : 'line',
      points: line.points.map((value, position) => (Number.isFinite(value) ? `${x(position).toFixed(1)},${y(value).toFixed(1)}` : null)).filter(Boolean).join(' '),
    })));
  return h('figure', { class: 'card' }, h('figcaption', {}, h('strong', {}, title), ' ', h('span', { class: 'legend' }, series.map(legend).join(' · '))), svg);

  // A line needs two samples (rates are differences between them); until then it says so.
  function legend(line) {
    if (line.points.filter((value) => Number.isFinite(value)).length < 2) return `${line.label}: collecting…`;
    return `${line.label}: ${format(line.points.at(-1))} ${line.unit ?? unit}`;
  }
}

function format(value) {
  if (!Number.isFinite(value)) return '—';
  if (Math.abs(value) >= 100) return value.toFixed(0);
  if (Math.abs(value) >= 1) return value.toFixed(1);
  return value.toFixed(3);
}
