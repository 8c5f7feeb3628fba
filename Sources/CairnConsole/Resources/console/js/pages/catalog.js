// Catalog: products with search, filters and sort; create and edit for owners and admins;
// imports (CSV or NDJSON, or an uploaded file) followed as jobs with their per-row errors.
import { api, claims, events } from '../api.js';
import { attempt, field, form, h, render, say, stateLabel, table } from '../ui.js';

const query = { q: '', category: '', minPrice: '', maxPrice: '', sort: 'name' };
let cursors = [null];

const money = (product) => `${(product.priceMinor / 100).toFixed(2)} ${product.currency}`;

export async function show(_, context) {
  const isAdmin = ['owner', 'admin'].includes(claims()?.role);
  const params = new URLSearchParams({ limit: '20', sort: query.sort });
  for (const name of ['q', 'category', 'minPrice', 'maxPrice']) if (query[name]) params.set(name, query[name]);
  const cursor = cursors[cursors.length - 1];
  if (cursor) params.set('cursor', cursor);
  const page = await api(`/products?${params}`);
  const editor = h('div', { id: 'product-editor' });
  const edit = (product) => {
    editor.replaceChildren(h('section', { class: 'card' }, h('h2', {}, product ? `Edit ${product.sku}` : 'New product'),
      form({}, [
        h('div', { class: 'row' },
          field('SKU', h('input', { name: 'sku', value: product?.sku || '', required: true, readOnly: Boolean(product) })),
          field('Name', h('input', { name: 'name', value: product?.name || '', required: true })),
          field('Price (minor units)', h('input', { name: 'priceMinor', type: 'number', min: 0, value: product?.priceMinor ?? '', required: true })),
          field('Currency', h('input', { name: 'currency', value: product?.currency || 'EUR', pattern: '[A-Z]{3}', required: true })),
          field('Category', h('input', { name: 'category', value: product?.category || '' })),
          field('Stock', h('input', { name: 'stock', type: 'number', min: 0, value: product?.stock ?? 0 }))),
        field('Description', h('textarea', { name: 'description' }, product?.description || '')),
        h('button', { type: 'submit' }, 'Save'),
      ], async (values) => {
        const body = { name: values.name, priceMinor: Number(values.priceMinor), currency: values.currency, category: values.category || null, stock: Number(values.stock || 0), description: values.description || undefined };
        if (product) {
          const current = await api(`/products/${product.id}`, { raw: true });
          await api(`/products/${product.id}`, { method: 'PATCH', body, headers: { 'If-Match': current.headers.get('ETag') } });
        } else await api('/products', { method: 'POST', body: { ...body, sku: values.sku } });
        say('Product saved.');
        show(_, context);
      })));
  };
  const importState = h('div', { id: 'import-state', 'aria-live': 'polite' });
  render(
    h('h1', {}, 'Catalog'),
    form({ class: 'row', role: 'search' }, [
      field('Search', h('input', { name: 'q', type: 'search', value: query.q })),
      field('Category', h('input', { name: 'category', value: query.category })),
      field('Min price', h('input', { name: 'minPrice', type: 'number', min: 0, value: query.minPrice })),
      field('Max price', h('input', { name: 'maxPrice', type: 'number', min: 0, value: query.maxPrice })),
      field('Sort', h('select', { name: 'sort' }, [['name', 'Name'], ['-name', 'Name, Z–A'], ['price', 'Price'], ['-price', 'Price, high first'], ['-updatedAt', 'Recently updated']].map(([value, label]) => h('option', { value, selected: query.sort === value }, label)))),
      h('button', { type: 'submit' }, 'Apply'),
    ], async (values) => { Object.assign(query, values); cursors = [null]; show(_, context); }),
    table([
      { label: 'SKU', value: (product) => product.sku },
      { label: 'Name', value: (product) => product.name },
      { label: 'Category', value: (product) => product.category || '' },
      { label: 'Price', value: money },
      { label: 'Stock', value: (product) => product.stock },
      ...(isAdmin ? [{ label: 'Actions', value: (product) => h('span', { class: 'row' },
        h('button', { type: 'button', class: 'secondary', onclick: () => edit(product) }, 'Edit'),
        h('button', { type: 'button', class: 'danger', onclick: () => attempt(async () => { await api(`/products/${product.id}`, { method: 'DELETE' }); show(_, context); }) }, 'Delete')) }] : []),
    ], page.items, 'No products match.'),
    h('div', { class: 'pager' },
      h('button', { class: 'secondary', type: 'button', disabled: cursors.length === 1, onclick: () => { cursors.pop(); show(_, context); } }, 'Previous'),
      h('button', { class: 'secondary', type: 'button', disabled: !page.nextCursor, onclick: () => { cursors.push(page.nextCursor); show(_, context); } }, 'Next')),
    isAdmin ? [h('button', { type: 'button', onclick: () => edit(null) }, 'New product'), editor,
      h('section', { class: 'card' }, h('h2', {}, 'Import'),
        h('p', { class: 'muted' }, 'CSV with a header row (sku,name,description,priceMinor,currency,category,stock,attributes) or NDJSON; rows are upserted by SKU.'),
        form({ class: 'row' }, [field('File', h('input', { type: 'file', name: 'file', accept: '.csv,.ndjson,.jsonl', required: true })), h('button', { type: 'submit' }, 'Import')], async (_values, element) => {
          const file = element.elements.file.files[0];
          const type = /\.csv$/i.test(file.name) ? 'text/csv' : 'application/x-ndjson';
          const job = await api('/products:import', { method: 'POST', body: file, headers: { 'Content-Type': type } });
          await events(`/jobs/${job.id}/events`, (event) => {
            if (event.event !== 'job') return;
            const current = JSON.parse(event.data);
            const progress = current.progress || {};
            importState.replaceChildren(h('p', {}, stateLabel(current.state), ` ${progress.rowsDone ?? 0} of ${progress.rowsTotal ?? '?'} rows, ${progress.imported ?? 0} imported, ${progress.failed ?? 0} failed`),
              progress.errors?.length ? table([{ label: 'Row', value: (error) => error.row }, { label: 'Field', value: (error) => error.field }, { label: 'Issue', value: (error) => error.issue }], progress.errors) : null);
          }, context.signal);
        }), importState)] : null);
  return undefined;
}
