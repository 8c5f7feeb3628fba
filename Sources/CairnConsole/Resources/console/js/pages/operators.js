// Operators: health, and charts from /metrics (request rate and latency by route, job
// throughput and queue depth, live connections, cache hit ratio), sampled every 2 seconds.
import { api } from '../api.js';
import { chart, parse, quantile, sum } from '../metrics.js';
import { h, render, table } from '../ui.js';

const history = [];
const keep = 60;

async function sample() {
  const text = await (await fetch('/metrics')).text();
  const samples = parse(text);
  const byRoute = sum(samples, 'http_server_request_duration_count', 'http_route');
  const secondsByRoute = sum(samples, 'http_server_request_duration_sum', 'http_route');
  const buckets = sum(samples, 'http_server_request_duration_bucket', 'le');
  const jobs = sum(samples, 'cairn_jobs', 'state');
  return {
    at: Date.now(), byRoute, secondsByRoute, buckets,
    finished: [...sum(samples, 'cairn_jobs_finished_total').values()][0] || 0,
    depth: ['available', 'scheduled', 'retryable'].reduce((total, state) => total + (jobs.get(state) || 0), 0),
    running: jobs.get('running') || 0,
    connections: [...sum(samples, 'cairn_notifications_connections').values()][0] || 0,
    active: [...sum(samples, 'http_server_active_requests').values()][0] || 0,
    hitRatio: [...sum(samples, 'cairn_catalog_cache_hit_ratio').values()][0],
  };
}

function rates() {
  const points = { requests: [], p95: [], throughput: [], depth: [], running: [], connections: [], active: [], hitRatio: [] };
  for (let index = 1; index < history.length; index += 1) {
    const [before, after] = [history[index - 1], history[index]];
    const seconds = (after.at - before.at) / 1000;
    const total = (map) => [...map.values()].reduce((a, b) => a + b, 0);
    points.requests.push((total(after.byRoute) - total(before.byRoute)) / seconds);
    const delta = new Map([...after.buckets].map(([le, count]) => [le, count - (before.buckets.get(le) || 0)]));
    const p95 = quantile(delta, 0.95);
    points.p95.push(p95 === null || p95 === Infinity ? null : p95 * 1000);
    points.throughput.push((after.finished - before.finished) / seconds);
    points.depth.push(after.depth);
    points.running.push(after.running);
    points.connections.push(after.connections);
    points.active.push(after.active);
    points.hitRatio.push(Number.isFinite(after.hitRatio) ? after.hitRatio * 100 : null);
  }
  return points;
}

function routeTable() {
  if (history.length < 2) return h('p', { class: 'muted' }, 'Collecting…');
  const first = history[0];
  const last = history.at(-1);
  const seconds = Math.max(1, (last.at - first.at) / 1000);
  const rows = [...last.byRoute.keys()].map((route) => {
    const count = last.byRoute.get(route) - (first.byRoute.get(route) || 0);
    const time = last.secondsByRoute.get(route) - (first.secondsByRoute.get(route) || 0);
    return { route, rate: count / seconds, mean: count ? (time / count) * 1000 : null, total: last.byRoute.get(route) };
  }).sort((a, b) => b.rate - a.rate || b.total - a.total).slice(0, 12);
  return table([
    { label: 'Route', value: (row) => h('code', {}, row.route) },
    { label: 'Requests/s', value: (row) => row.rate.toFixed(2) },
    { label: 'Mean latency (ms)', value: (row) => (row.mean === null ? '—' : row.mean.toFixed(1)) },
    { label: 'Total', value: (row) => row.total },
  ], rows);
}

export async function show(_, context) {
  const health = h('div', { id: 'health' });
  const charts = h('div', { class: 'charts', id: 'charts' });
  const routes = h('div', { id: 'routes' });
  render(h('h1', {}, 'Operators'), health, h('h2', {}, 'Live metrics (every 2 s)'), charts, h('h2', {}, 'By route'), routes);
  const tick = async () => {
    const [live, ready] = await Promise.all([
      fetch('/health/live').then((response) => response.ok).catch(() => false),
      fetch('/health/ready').then(async (response) => ({ ok: response.ok, body: await response.json().catch(() => ({})) })).catch(() => ({ ok: false, body: {} })),
    ]);
    health.replaceChildren(h('p', {},
      h('span', { class: live ? 'ok' : 'error' }, live ? '● live' : '● not live'), ' · ',
      h('span', { class: ready.ok ? 'ok' : 'error' }, ready.ok ? '● ready' : `● not ready${ready.body.detail ? `: ${ready.body.detail}` : ''}`)));
    history.push(await sample());
    while (history.length > keep + 1) history.shift();
    const points = rates();
    charts.replaceChildren(
      chart('Request rate', [{ label: 'all routes', points: points.requests }], 'req/s'),
      chart('Latency p95', [{ label: 'all routes', points: points.p95 }], 'ms'),
      chart('Jobs', [{ label: 'finished', points: points.throughput, unit: 'per s' }, { label: 'running', points: points.running, unit: '' }], ''),
      chart('Queue depth', [{ label: 'waiting', points: points.depth }], 'jobs'),
      chart('Live connections', [{ label: 'notification sockets and streams', points: points.connections }, { label: 'requests in flight', points: points.active }], ''),
      chart('Catalog cache hit ratio', [{ label: 'hits', points: points.hitRatio }], '%'));
    routes.replaceChildren(routeTable());
  };
  await tick();
  const timer = setInterval(() => tick().catch(() => {}), 2000);
  context.signal.addEventListener('abort', () => clearInterval(timer));
  await api('/users/me');
}
