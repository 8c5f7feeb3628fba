// DOM helpers: elements are built with properties and text nodes, never from HTML strings, so
// no data from the server can become markup.

/** Creates an element: h('button', {class: 'x', onclick: fn}, 'text', child…). */
export function h(tag, attributes = {}, ...children) {
  const svg = ['svg', 'path', 'line', 'text', 'g', 'rect', 'polyline', 'circle', 'title'].includes(tag);
  const element = svg ? document.createElementNS('http://www.w3.org/2000/svg', tag) : document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') element.addEventListener(name.slice(2), value);
    else if (name === 'dataset') Object.assign(element.dataset, value);
    else if (!svg && name in element && typeof value !== 'string') element[name] = value;
    else element.setAttribute(name, value === true ? '' : String(value));
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces the main area with `children` and moves focus to it (for screen readers). */
export function render(...children) {
  const main = document.getElementById('main');
  main.replaceChildren();
  append(main, children);
}

/** Shows a message in the status line (role=status). */
export function say(message, kind = 'ok') {
  const status = document.getElementById('status');
  status.replaceChildren(message ? h('span', { class: kind }, message) : '');
  if (kind === 'ok' && message) setTimeout(() => { if (status.textContent === message) status.replaceChildren(); }, 5000);
}

/** Shows an error: a problem document's title, detail and field issues. */
export function sayError(error) {
  const issues = (error.problem?.errors || []).map((issue) => `${issue.field}: ${issue.issue}`).join('; ');
  say([error.message, issues].filter(Boolean).join(' — '), 'error');
}

/** A labelled form control. */
export function field(label, control) {
  return h('label', {}, label, control);
}

/** A table of `rows` with `columns` [{label, value: row => node|string}]. */
export function table(columns, rows, empty = 'Nothing here yet.') {
  if (!rows.length) return h('p', { class: 'muted' }, empty);
  return h('div', { class: 'table-wrap' }, h('table', {},
    h('thead', {}, h('tr', {}, columns.map((column) => h('th', { scope: 'col' }, column.label)))),
    h('tbody', {}, rows.map((row) => h('tr', {}, columns.map((column) => h('td', {}, column.value(row))))))));
}

/** A form whose submit calls `action(values)` with the named controls' values. */
export function form(attributes, children, action) {
  const element = h('form', attributes, children);
  element.addEventListener('submit', async (event) => {
    event.preventDefault();
    const button = element.querySelector('button[type=submit]');
    if (button) button.disabled = true;
    try {
      await action(Object.fromEntries(new FormData(element).entries()), element);
    } catch (error) {
      sayError(error);
    } finally {
      if (button) button.disabled = false;
    }
  });
  return element;
}

/** Runs `action`, reporting a thrown error in the status line. */
export async function attempt(action) {
  try { return await action(); } catch (error) { sayError(error); return undefined; }
}

/** A job state as a small coloured label. */
export function stateLabel(state) {
  return h('span', { class: `state state-${state}` }, state);
}

/** A timestamp for people (local time), with the exact value as a title. */
export function when(value) {
  if (!value) return '—';
  const date = new Date(value);
  return h('time', { datetime: value, title: value }, date.toLocaleString());
}

/** Bytes for people. */
export function bytes(count) {
  if (count < 1024) return `${count} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = count;
  let unit = -1;
  do { value /= 1024; unit += 1; } while (value >= 1024 && unit < units.length - 1);
  return `${value.toFixed(1)} ${units[unit]}`;
}

/** Parses the first rows of CSV text (RFC 4180 quoting), for previews. */
export function parseCSV(text, maxRows = 20) {
  const rows = [];
  let row = [];
  let cell = '';
  let quoted = false;
  for (let index = 0; index < text.length && rows.length < maxRows; index += 1) {
    const char = text[index];
    if (quoted) {
      if (char === '"' && text[index + 1] === '"') { cell += '"'; index += 1; } else if (char === '"') quoted = false; else cell += char;
    } else if (char === '"') quoted = true;
    else if (char === ',') { row.push(cell); cell = ''; } else if (char === '\n') { row.push(cell.replace(/\r$/, '')); rows.push(row); row = []; cell = ''; } else cell += char;
  }
  return rows;
}

/**
 * Asks before something destructive: a modal <dialog> (Escape or Cancel says no; focus starts
 * on Cancel, so Enter alone never destroys). Resolves true when the person confirms.
 */
export function confirmAction(question, confirmLabel = 'Delete') {
  return new Promise((resolve) => {
    const cancel = h('button', { type: 'button', class: 'secondary', id: 'confirm-cancel' }, 'Cancel');
    const ok = h('button', { type: 'button', class: 'danger', id: 'confirm-ok' }, confirmLabel);
    const dialog = h('dialog', { class: 'confirm', id: 'confirm-dialog', 'aria-labelledby': 'confirm-question' },
      h('p', { id: 'confirm-question' }, question), h('div', { class: 'row' }, cancel, ok));
    const opener = document.activeElement;
    let answer = false;
    cancel.addEventListener('click', () => dialog.close());
    ok.addEventListener('click', () => { answer = true; dialog.close(); });
    dialog.addEventListener('close', () => {
      dialog.remove();
      if (opener && opener.isConnected) opener.focus();
      resolve(answer);
    });
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  });
}

/** A danger button that asks `question` first and then runs `action`, reporting errors. */
export function dangerButton(label, question, action, attributes = {}) {
  return h('button', { type: 'button', class: 'danger', ...attributes, onclick: () => attempt(async () => {
    if (await confirmAction(question, label)) await action();
  }) }, label);
}
