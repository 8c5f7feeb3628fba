// Notifications: the inbox (live over the WebSocket the shell keeps open), mark read, read
// all, delete, deliveries; publishing for owners and admins.
import { api, claims } from '../api.js';
import { live, setUnread } from '../live.js';
import { attempt, field, form, h, render, say, when } from '../ui.js';

let unreadOnly = false;

export async function show(_, context) {
  const list = h('ul', { class: 'plain', id: 'inbox' });
  const load = async () => {
    const page = await api(`/notifications?limit=50${unreadOnly ? '&unread=true' : ''}`);
    list.replaceChildren(...(page.items.length ? page.items.map(item) : [h('li', { class: 'muted' }, 'No notifications.')]));
    setUnread((await api('/notifications/unread-count')).unread);
  };
  const item = (notification) => h('li', { class: notification.readAt ? '' : 'unread', dataset: { id: notification.id } },
    h('div', {}, h('strong', {}, notification.title), ' ', h('span', { class: 'muted' }, `${notification.type} · `), when(notification.createdAt)),
    notification.body ? h('p', {}, notification.body) : null,
    h('div', { class: 'row' },
      notification.readAt ? null : h('button', { type: 'button', class: 'secondary', onclick: () => attempt(async () => { await api(`/notifications/${notification.id}/read`, { method: 'POST' }); load(); }) }, 'Mark read'),
      h('button', { type: 'button', class: 'secondary', onclick: () => attempt(async () => {
        const deliveries = await api(`/notifications/${notification.id}/deliveries`);
        say(`${(deliveries.items || deliveries).length} deliveries: ${(deliveries.items || deliveries).map((delivery) => `${delivery.channel} ${delivery.state}`).join(', ') || 'in-app only'}`);
      }) }, 'Deliveries'),
      h('button', { type: 'button', class: 'danger', onclick: () => attempt(async () => { await api(`/notifications/${notification.id}`, { method: 'DELETE' }); load(); }) }, 'Delete')));
  const onLive = () => load().catch(() => {});
  live.add(onLive);
  context.signal.addEventListener('abort', () => live.delete(onLive));
  const isAdmin = ['owner', 'admin'].includes(claims()?.role);
  render(
    h('h1', {}, 'Notifications'),
    h('div', { class: 'row' },
      h('label', { class: 'inline' }, h('input', { type: 'checkbox', checked: unreadOnly, onchange: (event) => { unreadOnly = event.target.checked; attempt(load); } }), ' Unread only'),
      h('button', { type: 'button', id: 'read-all', onclick: () => attempt(async () => { await api('/notifications/read-all', { method: 'POST', body: {} }); say('All read.'); load(); }) }, 'Mark all read')),
    list,
    isAdmin ? h('section', { class: 'card' }, h('h2', {}, 'Publish'),
      form({ id: 'publish-form' }, [
        h('div', { class: 'row' },
          field('Type', h('input', { name: 'type', value: 'message', required: true, pattern: '[a-z][a-z0-9_.]{0,63}' })),
          field('Audience', h('select', { name: 'audience' }, h('option', { value: 'tenant' }, 'Everyone in the workspace'), h('option', { value: 'me' }, 'Only me'), h('option', { value: 'users' }, 'These user ids…'))),
          field('User ids (comma-separated)', h('input', { name: 'userIds' }))),
        field('Title', h('input', { name: 'title', required: true, maxLength: 200 })),
        field('Body', h('textarea', { name: 'body', maxLength: 10000 })),
        h('button', { type: 'submit' }, 'Publish'),
      ], async (values, element) => {
        const body = { type: values.type, title: values.title, body: values.body || undefined };
        if (values.audience === 'tenant') body.audience = 'tenant';
        else if (values.audience === 'me') body.userIds = [claims().sub];
        else body.userIds = values.userIds.split(',').map((value) => value.trim()).filter(Boolean);
        await api('/notifications', { method: 'POST', body, headers: { 'Idempotency-Key': crypto.randomUUID() } });
        element.reset();
        say('Published.');
      })) : null);
  await load();
  return undefined;
}
