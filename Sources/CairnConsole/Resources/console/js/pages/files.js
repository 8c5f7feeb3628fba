// Files: drag-and-drop upload over tus with progress and resume; list, download, delete; a
// preview of the first rows of CSV, JSON and XML files (a ranged read of the first 64 KiB).
import { api } from '../api.js';
import { Upload } from '../tus.js';
import { attempt, bytes, dangerButton, h, parseCSV, render, say, table, when } from '../ui.js';

let cursors = [null];

export async function show() {
  const cursor = cursors[cursors.length - 1];
  const page = await api(`/files?limit=20${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
  const progress = h('progress', { id: 'upload-progress', max: 100, value: 0, 'aria-label': 'Upload progress' });
  const progressText = h('span', { id: 'upload-percent', 'aria-live': 'polite' }, '');
  const uploadStatus = h('p', { id: 'upload-status', class: 'muted' }, '');
  const input = h('input', { type: 'file', id: 'file-input', 'aria-label': 'Choose a file to upload' });
  const pauseButton = h('button', { type: 'button', class: 'secondary', id: 'upload-pause', disabled: true }, 'Pause');
  let upload = null;
  const begin = async (file) => {
    upload = new Upload(file, {
      onProgress: (done, total) => {
        const percent = total ? Math.floor((done / total) * 100) : 100;
        progress.value = percent;
        progressText.textContent = `${percent}% (${bytes(done)} of ${bytes(total)})`;
      },
      onStatus: (text) => { uploadStatus.textContent = text; },
    });
    uploadStatus.textContent = upload.resumable ? `Resuming ${file.name}…` : `Uploading ${file.name}…`;
    pauseButton.disabled = false;
    pauseButton.hidden = false;
    pauseButton.textContent = 'Pause';
    pauseButton.onclick = () => {
      if (upload.stopped) { pauseButton.textContent = 'Pause'; run(); } else { upload.pause(); pauseButton.textContent = 'Resume'; uploadStatus.textContent = 'Paused.'; }
    };
    const run = async () => {
      try {
        const fileId = await upload.start();
        uploadStatus.textContent = upload.resumedFrom ? `Uploaded ${file.name} (resumed at ${bytes(upload.resumedFrom)}).` : `Uploaded ${file.name}.`;
        uploadStatus.dataset.resumedFrom = String(upload.resumedFrom);
        uploadStatus.dataset.fileId = fileId || '';
        pauseButton.disabled = true;
        pauseButton.hidden = true;
        say(`Uploaded ${file.name}.`);
        await refreshList();
      } catch (error) {
        if (!upload.stopped) { uploadStatus.textContent = `Upload failed: ${error.message}`; say(error.message, 'error'); }
      }
    };
    await run();
  };
  input.addEventListener('change', () => { if (input.files[0]) begin(input.files[0]); });
  const zone = h('div', { class: 'dropzone', id: 'dropzone' }, h('p', {}, 'Drop a CSV, JSON, NDJSON or XML file here, or '), input);
  zone.addEventListener('dragover', (event) => { event.preventDefault(); zone.classList.add('over'); });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', (event) => { event.preventDefault(); zone.classList.remove('over'); if (event.dataTransfer.files[0]) begin(event.dataTransfer.files[0]); });
  const list = h('div', { id: 'file-list' });
  const preview = h('section', { id: 'file-preview', 'aria-live': 'polite' });
  const refreshList = async () => {
    const fresh = await api(`/files?limit=20${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    list.replaceChildren(fileTable(fresh.items, preview, refreshList));
  };
  list.append(fileTable(page.items, preview, refreshList));
  render(
    h('h1', {}, 'Files'),
    h('section', { class: 'card' }, h('h2', {}, 'Upload (resumable, tus 1.0)'), zone, h('div', { class: 'row' }, progress, progressText, pauseButton), uploadStatus,
      h('p', { class: 'muted' }, 'An interrupted upload continues where it stopped: choose the same file again, even after reloading the page.')),
    h('h2', {}, 'Your files'), list,
    h('div', { class: 'pager' },
      h('button', { class: 'secondary', type: 'button', disabled: cursors.length === 1, onclick: () => { cursors.pop(); show(); } }, 'Previous'),
      h('button', { class: 'secondary', type: 'button', disabled: !page.nextCursor, onclick: () => { cursors.push(page.nextCursor); show(); } }, 'Next')),
    preview);
}

function fileTable(items, preview, refreshList) {
  return table([
    { label: 'Name', value: (file) => file.name },
    { label: 'Format', value: (file) => file.format },
    { label: 'Size', value: (file) => bytes(file.size) },
    { label: 'Uploaded', value: (file) => when(file.createdAt) },
    { label: 'Actions', value: (file) => h('span', { class: 'row' },
      h('button', { class: 'secondary', type: 'button', onclick: () => attempt(() => showPreview(file, preview)) }, 'Preview'),
      h('button', { class: 'secondary', type: 'button', onclick: () => attempt(() => download(file)) }, 'Download'),
      dangerButton('Delete', `Delete the file ${file.name}?`, async () => { await api(`/files/${file.id}`, { method: 'DELETE' }); say('File deleted.'); await refreshList(); })) },
  ], items, 'No files yet.');
}

/** Downloads through fetch (the token is a header, not a URL) and hands the bytes to the browser. */
export async function download(file) {
  const response = await api(`/files/${file.id}/content`, { raw: true });
  const url = URL.createObjectURL(await response.blob());
  const link = h('a', { href: url, download: file.name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

/** The first rows of a file, from its first 64 KiB. */
export async function showPreview(file, target) {
  const response = await api(`/files/${file.id}/content`, { raw: true, headers: { Range: 'bytes=0-65535' } });
  const text = await response.text();
  let body;
  if (file.format === 'csv') {
    const rows = parseCSV(text, 21);
    if (text.length >= 65536) rows.pop();
    const [header = [], ...data] = rows;
    body = h('div', { class: 'table-wrap' }, h('table', {}, h('thead', {}, h('tr', {}, header.map((name) => h('th', { scope: 'col' }, name)))),
      h('tbody', {}, data.map((row) => h('tr', {}, row.map((cell) => h('td', {}, cell)))))));
  } else if (file.format === 'ndjson') {
    body = h('pre', {}, text.split('\n').slice(0, 20).join('\n'));
  } else {
    body = h('pre', {}, text.slice(0, 4000));
  }
  target.replaceChildren(h('div', { class: 'card' }, h('h2', {}, `Preview of ${file.name}`), body));
}
