// Pipelines: list, create and edit (SQL editor beside the input's columns), run on a chosen
// file with a live progress bar from the job's event stream, the result's first rows, row
// errors, the output's download, and the schedule's next five runs.
import { api, events } from '../api.js';
import * as cron from '../cron.js';
import { attempt, bytes, dangerButton, field, form, h, parseCSV, render, say, stateLabel, table, when } from '../ui.js';
import { download } from './files.js';

const formats = ['csv', 'json', 'ndjson', 'xml'];

export async function show([id], context) {
  if (id) return detail(id, context);
  const page = await api('/pipelines?limit=100');
  render(
    h('h1', {}, 'Pipelines'),
    h('p', { class: 'muted' }, 'A pipeline is one SQL query (SQLite dialect) over an uploaded file, read as the table ', h('code', {}, 'input'), '.'),
    table([
      { label: 'Name', value: (pipeline) => h('a', { href: `#/pipelines/${pipeline.id}` }, pipeline.name) },
      { label: 'Input', value: (pipeline) => pipeline.input.format },
      { label: 'Output', value: (pipeline) => pipeline.output.format },
      { label: 'Schedule', value: (pipeline) => pipeline.schedule ? h('code', {}, pipeline.schedule.cron) : '—' },
      { label: 'Updated', value: (pipeline) => when(pipeline.updatedAt) },
    ], page.items, 'No pipelines yet.'),
    h('section', { class: 'card' }, h('h2', {}, 'New pipeline'),
      form({ id: 'pipeline-create' }, [
        h('div', { class: 'row' },
          field('Name', h('input', { name: 'name', id: 'pipeline-name', required: true, maxLength: 100 })),
          field('Input format', h('select', { name: 'format', id: 'pipeline-format' }, formats.map((format) => h('option', { value: format }, format)))),
          field('Output format', h('select', { name: 'output' }, ['csv', 'ndjson', 'json'].map((format) => h('option', { value: format }, format))))),
        field('SQL', h('textarea', { name: 'sql', id: 'pipeline-sql', class: 'sql', required: true, spellcheck: false }, 'SELECT * FROM input LIMIT 100')),
        h('button', { type: 'submit', id: 'pipeline-create-submit' }, 'Create pipeline'),
      ], async (values) => {
        const created = await api('/pipelines', { method: 'POST', body: { name: values.name, input: { format: values.format }, sql: values.sql, output: { format: values.output } } });
        say('Pipeline created.');
        location.hash = `#/pipelines/${created.id}`;
      })));
  return undefined;
}

/** Infers column types from sample rows as the server does (integer, real, boolean, timestamp, text). */
function inferColumns(header, rows) {
  return header.map((name, index) => {
    const values = rows.map((row) => row[index]).filter((value) => value !== undefined && value !== '' && value !== 'NA' && value !== 'NULL');
    const all = (test) => values.length > 0 && values.every(test);
    let type = 'text';
    if (all((value) => /^[-+]?\d+$/.test(value))) type = 'integer';
    else if (all((value) => /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(value))) type = 'real';
    else if (all((value) => /^(true|false)$/i.test(value))) type = 'boolean';
    else if (all((value) => /^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/.test(value))) type = 'timestamp';
    return { name, type };
  });
}

async function sampleColumns(file) {
  const response = await api(`/files/${file.id}/content`, { raw: true, headers: { Range: 'bytes=0-65535' } });
  const text = await response.text();
  if (file.format === 'csv') {
    const rows = parseCSV(text, 200);
    if (text.length >= 65536) rows.pop();
    const [header = [], ...data] = rows;
    return inferColumns(header, data);
  }
  if (file.format === 'ndjson') {
    const objects = text.split('\n').slice(0, 50).flatMap((line) => { try { return [JSON.parse(line)]; } catch { return []; } });
    const names = [...new Set(objects.flatMap((object) => Object.keys(object)))];
    return inferColumns(names, objects.map((object) => names.map((name) => object[name] === null || object[name] === undefined ? '' : String(object[name]))));
  }
  return [];
}

function columnList(columns, note) {
  return h('div', { id: 'pipeline-columns' },
    h('p', { class: 'muted' }, note),
    columns.length ? h('ul', { class: 'columns' }, columns.map((column) => h('li', {}, h('code', {}, column.name), ` ${column.type}`))) : h('p', { class: 'muted' }, 'No columns known yet.'));
}

async function detail(id, context) {
  const response = await api(`/pipelines/${id}`, { raw: true });
  const etag = response.headers.get('ETag');
  const pipeline = await response.json();
  const allRuns = (await api('/jobs?kind=pipeline.run&limit=100')).items;
  let runs = allRuns.filter((job) => job.args?.pipelineId === id);
  // Pipelines' outputs are files too: known by the runs that wrote them, or by the name a run
  // gives its output (<pipeline>-<job id>.<format>). They go last and are never the default.
  const outputIds = new Set(allRuns.map((job) => job.result?.outputFileId).filter(Boolean));
  const isOutput = (file) => outputIds.has(file.id) || /-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.(csv|json|ndjson)$/i.test(file.name);
  const candidates = (await api('/files?limit=100')).items.filter((file) => file.format === pipeline.input.format);
  const files = [...candidates.filter((file) => !isOutput(file)), ...candidates.filter(isOutput)];
  const lastInput = runs.map((job) => job.args?.fileId || job.result?.inputFileId).find((fileId) => files.some((file) => file.id === fileId));
  const defaultFile = lastInput || files.find((file) => !isOutput(file))?.id;
  const columnsBox = h('div', {}, columnList([], 'Choose an input file to see its columns.'));
  const fileSelect = h('select', { id: 'run-file', name: 'fileId' }, files.map((file) => h('option', { value: file.id, selected: file.id === defaultFile, dataset: { output: isOutput(file) ? '1' : '0' } }, `${file.name} (${bytes(file.size)})${isOutput(file) ? ' — a pipeline output' : ''}`)));
  const showColumns = async () => {
    const file = files.find((candidate) => candidate.id === fileSelect.value);
    if (!file) return;
    const last = runs.find((job) => job.result?.columns?.length && job.result.inputFileId === file.id);
    if (last) columnsBox.replaceChildren(columnList(last.result.columns, `Columns of ${file.name} as the last run loaded them:`));
    else columnsBox.replaceChildren(columnList(await sampleColumns(file), `Columns of ${file.name}, inferred from its first rows:`));
  };
  fileSelect.addEventListener('change', () => attempt(showColumns));
  const progress = h('progress', { id: 'run-progress', max: 1, value: 0, 'aria-label': 'Run progress' });
  const runState = h('p', { id: 'run-state', 'aria-live': 'polite' }, 'Not started.');
  const resultBox = h('div', { id: 'run-result' });
  const nextRuns = h('ul', { id: 'next-runs', class: 'plain' });
  const showNext = (expression, zone) => {
    nextRuns.replaceChildren();
    if (!expression) return;
    try {
      for (const date of cron.next(expression, zone || 'UTC', 5)) nextRuns.append(h('li', {}, h('time', { datetime: date.toISOString() }, `${date.toLocaleString()} (${date.toISOString()})`)));
    } catch (error) { nextRuns.append(h('li', { class: 'error' }, error.message)); }
  };
  const cronInput = h('input', { name: 'cron', id: 'pipeline-cron', value: pipeline.schedule?.cron || '', placeholder: 'e.g. 0 6 * * 1-5' });
  const zoneInput = h('input', { name: 'timeZone', value: pipeline.schedule?.timeZone || 'UTC' });
  cronInput.addEventListener('input', () => showNext(cronInput.value, zoneInput.value));
  zoneInput.addEventListener('input', () => showNext(cronInput.value, zoneInput.value));
  showNext(pipeline.schedule?.cron, pipeline.schedule?.timeZone);

  const follow = async (jobId) => {
    runState.textContent = 'Queued…';
    progress.value = 0;
    resultBox.replaceChildren();
    let last = null;
    await events(`/jobs/${jobId}/events`, (event) => {
      if (event.event !== 'job') return;
      last = JSON.parse(event.data);
      const fraction = Number(last.progress?.fraction ?? 0);
      progress.value = last.state === 'succeeded' ? 1 : fraction;
      progress.dataset.fraction = String(progress.value);
      const rows = last.progress?.rowsDone ? `, ${last.progress.rowsDone.toLocaleString()} rows read` : '';
      // A run that has failed for good reads "failed" (its job state, discarded, is an engine word).
      const failed = last.state === 'discarded' || last.state === 'cancelled';
      const phase = failed ? '' : ` ${last.progress?.phase || ''}`;
      runState.replaceChildren(failed ? stateLabel('failed') : stateLabel(last.state), `${phase}${rows} · ${Math.round(progress.value * 100)}%`);
    }, context.signal);
    if (!last) last = await api(`/jobs/${jobId}`);
    await showResult(last);
    await refreshRuns();
  };
  const runsBox = h('div', { id: 'recent-runs' });
  const runsTable = () => table([
    { label: 'Job', value: (job) => h('a', { href: `#/jobs/${job.id}` }, job.id.slice(-8)) },
    { label: 'State', value: (job) => stateLabel(job.state) },
    { label: 'Started', value: (job) => when(job.createdAt) },
    { label: '', value: (job) => h('button', { type: 'button', class: 'secondary', onclick: () => attempt(() => follow(job.id)) }, 'Show') },
  ], runs.slice(0, 10), 'No runs yet.');
  runsBox.append(runsTable());
  // After a run (or when one is started) the list shows it without a reload.
  const refreshRuns = async () => {
    runs = (await api('/jobs?kind=pipeline.run&limit=100')).items.filter((job) => job.args?.pipelineId === id);
    runsBox.replaceChildren(runsTable());
  };
  const showResult = async (job) => {
    const result = job.result || {};
    const parts = [];
    if (result.failure) parts.push(h('p', { class: 'error', id: 'run-failure' }, `Failed: ${result.failure}`));
    for (const warning of result.warnings || []) parts.push(h('p', { class: 'muted' }, warning));
    if (result.outputFileId) {
      const output = await api(`/files/${result.outputFileId}`);
      parts.push(h('p', { id: 'run-summary' }, `${(result.rowsOutput ?? 0).toLocaleString()} result rows · ${(result.rowsLoaded ?? 0).toLocaleString()} input rows loaded (${(result.rowsSkipped ?? 0).toLocaleString()} skipped) `,
        h('button', { type: 'button', class: 'secondary', id: 'run-download', onclick: () => attempt(() => download(output)) }, `Download ${output.name}`)));
      const text = await (await api(`/files/${output.id}/content`, { raw: true, headers: { Range: 'bytes=0-65535' } })).text();
      let header = [];
      let rows = [];
      if (output.format === 'csv') {
        const parsed = parseCSV(text, 51);
        if (text.length >= 65536) parsed.pop();
        [header = [], ...rows] = parsed;
      } else {
        const objects = (output.format === 'json' ? (() => { try { return JSON.parse(text); } catch { return []; } })() : text.split('\n').flatMap((line) => { try { return [JSON.parse(line)]; } catch { return []; } })).slice(0, 50);
        header = [...new Set(objects.flatMap((object) => Object.keys(object)))];
        rows = objects.map((object) => header.map((name) => object[name] ?? ''));
      }
      parts.push(h('div', { class: 'table-wrap' }, h('table', { id: 'result-table' },
        h('caption', { class: 'muted' }, `First ${rows.length} rows`),
        h('thead', {}, h('tr', {}, header.map((name) => h('th', { scope: 'col' }, name)))),
        h('tbody', {}, rows.map((row) => h('tr', {}, row.map((cell) => h('td', {}, String(cell)))))))));
    }
    if (result.errors?.length) {
      parts.push(h('h3', {}, 'Row errors'), table([
        { label: 'Row', value: (error) => error.row }, { label: 'Column', value: (error) => error.column || '' },
        { label: 'Byte offset', value: (error) => error.byteOffset ?? '' }, { label: 'Message', value: (error) => error.message },
      ], result.errors));
    }
    if (result.columns?.length) columnsBox.replaceChildren(columnList(result.columns, 'Columns as this run loaded them:'));
    resultBox.replaceChildren(...parts);
  };

  render(
    h('p', {}, h('a', { href: '#/pipelines' }, '← All pipelines')),
    h('h1', {}, pipeline.name),
    h('div', { class: 'grid' },
      h('section', { class: 'card' }, h('h2', {}, 'Query'),
        form({ id: 'pipeline-edit' }, [
          h('div', { class: 'row' },
            field('Name', h('input', { name: 'name', value: pipeline.name, required: true })),
            field('Output', h('select', { name: 'output' }, ['csv', 'ndjson', 'json'].map((format) => h('option', { value: format, selected: pipeline.output.format === format }, format)))),
            field('On a bad row', h('select', { name: 'onRowError' }, ['fail', 'skip'].map((mode) => h('option', { value: mode, selected: pipeline.onRowError === mode }, mode))))),
          field('SQL (the file is the table input)', h('textarea', { name: 'sql', class: 'sql', spellcheck: false, required: true }, pipeline.sql)),
          h('div', { class: 'row' }, field('Schedule (cron, empty for none)', cronInput), field('Time zone', zoneInput)),
          h('h3', {}, 'Next five runs'), nextRuns,
          h('div', { class: 'row' },
            h('button', { type: 'submit' }, 'Save'),
            dangerButton('Delete', `Delete the pipeline ${pipeline.name} and its schedule?`, async () => {
              await api(`/pipelines/${id}`, { method: 'DELETE', headers: { 'If-Match': etag } });
              say('Pipeline deleted.');
              location.hash = '#/pipelines';
            })),
        ], async (values) => {
          const body = { name: values.name, sql: values.sql, output: { format: values.output }, onRowError: values.onRowError, schedule: values.cron ? { cron: values.cron, timeZone: values.timeZone || 'UTC' } : null };
          await api(`/pipelines/${id}`, { method: 'PATCH', body, headers: { 'If-Match': etag } });
          say('Pipeline saved.');
          show([id], context);
        })),
      h('section', { class: 'card' }, h('h2', {}, 'Input columns'), columnsBox)),
    h('section', { class: 'card' }, h('h2', {}, 'Run'),
      files.length ? form({ id: 'run-form', class: 'row' }, [field(`Input file (${pipeline.input.format})`, fileSelect), h('button', { type: 'submit', id: 'run-submit' }, 'Run')], async (values) => {
        const job = await api(`/pipelines/${id}/runs`, { method: 'POST', body: { fileId: values.fileId }, headers: { 'Idempotency-Key': crypto.randomUUID() } });
        refreshRuns().catch(() => { /* the list catches up when the run ends */ });
        await follow(job.id);
      }) : h('p', { class: 'muted' }, `Upload a ${pipeline.input.format} file first (Files).`),
      progress, runState, resultBox),
    h('section', { class: 'card' }, h('h2', {}, 'Recent runs'), runsBox));
  if (files.length) attempt(showColumns);
  return undefined;
}
