// Tasks: list with a filter and cursor paging, create, edit, complete, delete (If-Match).
import { api } from '../api.js';
import { attempt, dangerButton, field, form, h, render, say, table, when } from '../ui.js';

const state = { filter: '', cursors: [null] };

export async function show() {
  const cursor = state.cursors[state.cursors.length - 1];
  const query = new URLSearchParams({ limit: '20' });
  if (state.filter) query.set('completed', state.filter);
  if (cursor) query.set('cursor', cursor);
  const page = await api(`/tasks?${query}`);
  const edit = async (task, patch) => {
    const current = await api(`/tasks/${task.id}`, { raw: true });
    await api(`/tasks/${task.id}`, { method: 'PATCH', body: patch, headers: { 'If-Match': current.headers.get('ETag') } });
    show();
  };
  render(
    h('h1', {}, 'Tasks'),
    h('section', { class: 'card' },
      h('h2', {}, 'New task'),
      form({ class: 'row', id: 'task-form' }, [
        field('Title', h('input', { name: 'title', required: true, maxLength: 200, autocomplete: 'off' })),
        field('Description', h('input', { name: 'description', autocomplete: 'off' })),
        h('button', { type: 'submit' }, 'Add task'),
      ], async (values, element) => {
        await api('/tasks', { method: 'POST', body: { title: values.title, description: values.description || undefined } });
        element.reset();
        say('Task added.');
        show();
      })),
    h('div', { class: 'row' }, field('Show', h('select', {
      onchange: (event) => { state.filter = event.target.value; state.cursors = [null]; show(); },
    }, [['', 'All'], ['false', 'Open'], ['true', 'Completed']].map(([value, label]) => h('option', { value, selected: state.filter === value }, label))))),
    table([
      { label: 'Done', value: (task) => h('input', { type: 'checkbox', checked: task.completed, 'aria-label': `Completed: ${task.title}`, onchange: (event) => attempt(() => edit(task, { completed: event.target.checked })) }) },
      { label: 'Title', value: (task) => h('span', { class: 'task-title' }, task.title) },
      { label: 'Description', value: (task) => task.description || '' },
      { label: 'Updated', value: (task) => when(task.updatedAt) },
      { label: 'Actions', value: (task) => h('span', { class: 'row' },
        h('button', { class: 'secondary', type: 'button', onclick: () => { const title = prompt('Title', task.title); if (title) attempt(() => edit(task, { title })); } }, 'Edit'),
        dangerButton('Delete', `Delete the task “${task.title}”?`, async () => { await api(`/tasks/${task.id}`, { method: 'DELETE' }); say('Task deleted.'); show(); }, { class: 'danger task-delete' })) },
    ], page.items, 'No tasks.'),
    h('div', { class: 'pager' },
      h('button', { class: 'secondary', type: 'button', disabled: state.cursors.length === 1, onclick: () => { state.cursors.pop(); show(); } }, 'Previous'),
      h('button', { class: 'secondary', type: 'button', disabled: !page.nextCursor, onclick: () => { state.cursors.push(page.nextCursor); show(); } }, 'Next')));
}
