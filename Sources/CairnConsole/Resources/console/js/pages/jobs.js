// Jobs: list by state and kind (refreshed live while the page is open), one job with its
// error history and live events, retry of dead letters, cancel, delete.
import { api, claims, events } from '../api.js';
import { attempt, field, h, render, say, stateLabel, table, when } from '../ui.js';

const states = ['', 'available', 'scheduled', 'running', 'retryable', 'succeeded', 'cancelled', 'discarded'];
const filter = { state: '', kind: '' };

function actions(job, after) {
  const act = (path, method, message) => attempt(async () => { await api(path, { method }); say(message); after(); });
  return h('span', { class: 'row' },
    ['discarded', 'cancelled'].includes(job.state) ? h('button', { type: 'button', class: 'retry', dataset: { job: job.id }, onclick: () => act(`/jobs/${job.id}/retry`, 'POST', 'Job queued again.') }, 'Retry') : null,
    ['scheduled', 'available', 'running', 'retryable'].includes(job.state) ? h('button', { type: 'button', class: 'secondary', onclick: () => act(`/jobs/${job.id}/cancel`, 'POST', 'Job cancelled.') }, 'Cancel') : null,
    job.state !== 'running' ? h('button', { type: 'button', class: 'danger', onclick: () => act(`/jobs/${job.id}`, 'DELETE', 'Job deleted.') }, 'Delete') : null);
}

export async function show([id], context) {
  if (id) return detail(id, context);
  const list = h('div', { id: 'job-list' });
  const load = async () => {
    const query = new URLSearchParams({ limit: '50' });
    if (filter.state) query.set('state', filter.state);
    if (filter.kind) query.set('kind', filter.kind);
    const page = await api(`/jobs?${query}`);
    list.replaceChildren(table([
      { label: 'Job', value: (job) => h('a', { href: `#/jobs/${job.id}` }, job.id.slice(-8)) },
      { label: 'Kind', value: (job) => job.kind },
      { label: 'State', value: (job) => stateLabel(job.state) },
      { label: 'Attempt', value: (job) => `${job.attempt}/${job.maxAttempts}` },
      { label: 'Last error', value: (job) => job.errors.at(-1)?.error || '' },
      { label: 'Created', value: (job) => when(job.createdAt) },
      { label: 'Actions', value: (job) => actions(job, load) },
    ], page.items, 'No jobs match.'));
  };
  const isAdmin = ['owner', 'admin'].includes(claims()?.role);
  render(
    h('h1', {}, 'Jobs'),
    h('div', { class: 'row' },
      field('State', h('select', { id: 'job-state', onchange: (event) => { filter.state = event.target.value; attempt(load); } },
        states.map((state) => h('option', { value: state, selected: filter.state === state }, state === 'discarded' ? 'discarded (dead letters)' : state || 'any')))),
      field('Kind', h('input', { id: 'job-kind', value: filter.kind, placeholder: 'e.g. pipeline.run', onchange: (event) => { filter.kind = event.target.value.trim(); attempt(load); } })),
      isAdmin ? h('button', { type: 'button', class: 'secondary', onclick: () => attempt(async () => {
        await api('/jobs', { method: 'POST', body: { kind: 'noop', args: { sleepMs: 2000 } } });
        say('A noop job was queued.');
        load();
      }) }, 'Queue a test job') : null),
    h('p', { class: 'muted' }, 'Refreshed every 2 seconds while this page is open.'),
    list);
  await load();
  const timer = setInterval(() => load().catch(() => {}), 2000);
  context.signal.addEventListener('abort', () => clearInterval(timer));
  return undefined;
}

async function detail(id, context) {
  const view = h('div', { id: 'job-detail' });
  const draw = (job) => view.replaceChildren(
    h('p', {}, stateLabel(job.state), ` ${job.kind} · attempt ${job.attempt} of ${job.maxAttempts} · queue ${job.queue}`),
    job.progress && Number.isFinite(Number(job.progress.fraction)) ? h('progress', { max: 1, value: Number(job.progress.fraction), 'aria-label': 'Progress' }) : null,
    actions(job, () => detail(id, context)),
    h('h2', {}, 'Errors'),
    table([{ label: 'Attempt', value: (error) => error.attempt }, { label: 'At', value: (error) => when(error.at) }, { label: 'Error', value: (error) => error.error }], job.errors, 'No failed attempts.'),
    h('h2', {}, 'Arguments'), h('pre', {}, JSON.stringify(job.args, null, 2)),
    h('h2', {}, 'Progress'), h('pre', {}, JSON.stringify(job.progress, null, 2)),
    h('h2', {}, 'Result'), h('pre', {}, JSON.stringify(job.result, null, 2)));
  draw(await api(`/jobs/${id}`));
  render(h('p', {}, h('a', { href: '#/jobs' }, '← All jobs')), h('h1', {}, `Job ${id.slice(-8)}`), view);
  events(`/jobs/${id}/events`, (event) => { if (event.event === 'job') draw(JSON.parse(event.data)); }, context.signal).catch(() => {});
  return undefined;
}
