// Admin (owners and admins): users and roles, service tokens (the secret shown once),
// webhooks, notification providers (secrets are never shown back).
import { api, claims } from '../api.js';
import { attempt, dangerButton, field, form, h, render, say, table, when } from '../ui.js';

/** Shows the page; `secret` (nodes) is a just-created secret shown once above the lists' refresh. */
export async function show(_, context, secret = []) {
  const [users, tokens, webhooks, providers] = await Promise.all([
    api('/users?limit=100'), api('/service-tokens?limit=100'), api('/webhooks'), api('/notification-providers')]);
  const reload = (shown = []) => show(_, context, shown);
  const secretBox = h('div', { id: 'secret-once', 'aria-live': 'polite' }, secret);
  const self = claims()?.sub;
  const list = (value) => value.items || value;
  render(
    h('h1', {}, 'Admin'),
    h('section', { class: 'card' }, h('h2', {}, 'Users'),
      table([
        { label: 'Name', value: (user) => user.name }, { label: 'Email', value: (user) => user.email },
        { label: 'Role', value: (user) => h('select', { 'aria-label': `Role of ${user.email}`, onchange: (event) => attempt(async () => {
          await api(`/users/${user.id}`, { method: 'PATCH', body: { role: event.target.value } });
          say(`${user.email} is now ${event.target.value}.`);
        }) }, ['member', 'admin', 'owner'].map((role) => h('option', { value: role, selected: user.role === role }, role))) },
        { label: 'Since', value: (user) => when(user.createdAt) },
        // No one removes themselves here (that would end their own access mid-page).
        { label: '', value: (user) => (user.id === self ? h('span', { class: 'muted' }, 'you') : dangerButton('Remove', `Remove ${user.email} from this workspace?`, async () => { await api(`/users/${user.id}`, { method: 'DELETE' }); reload(); })) },
      ], list(users)),
      form({ class: 'row' }, [
        field('Name', h('input', { name: 'name', required: true, autocomplete: 'off' })), field('Email', h('input', { name: 'email', type: 'email', required: true, autocomplete: 'off' })),
        field('Role', h('select', { name: 'role' }, ['member', 'admin', 'owner'].map((role) => h('option', { value: role }, role)))),
        field('Initial password', h('input', { name: 'password', type: 'password', minLength: 8, required: true, autocomplete: 'new-password' })),
        h('button', { type: 'submit' }, 'Add user'),
      ], async (values) => { await api('/users', { method: 'POST', body: values }); say('User added.'); reload(); })),
    h('section', { class: 'card' }, h('h2', {}, 'Service tokens'),
      table([
        { label: 'Name', value: (token) => token.name }, { label: 'Scopes', value: (token) => token.scopes.join(', ') },
        { label: 'Hint', value: (token) => h('code', {}, token.hint) }, { label: 'Created', value: (token) => when(token.createdAt) },
        { label: '', value: (token) => dangerButton('Revoke', `Revoke the service token ${token.name}? Clients using it stop working.`, async () => { await api(`/service-tokens/${token.id}`, { method: 'DELETE' }); reload(); }) },
      ], list(tokens), 'No service tokens.'),
      form({ class: 'row' }, [
        field('Name', h('input', { name: 'name', required: true, maxLength: 100, autocomplete: 'off', id: 'token-name' })),
        field('Scope', h('select', { name: 'scope' }, h('option', { value: 'notifications:publish' }, 'notifications:publish'))),
        h('button', { type: 'submit', id: 'token-create' }, 'Create token'),
      ], async (values) => {
        const created = await api('/service-tokens', { method: 'POST', body: { name: values.name, scopes: [values.scope] } });
        say('Service token created.');
        await reload([h('p', {}, 'Copy this secret now; it is not shown again:'), h('p', { class: 'secret' }, created.token)]);
      }), secretBox),
    h('section', { class: 'card' }, h('h2', {}, 'Webhooks'),
      table([
        { label: 'URL', value: (hook) => hook.url }, { label: 'Types', value: (hook) => hook.types.join(', ') },
        { label: 'Enabled', value: (hook) => (hook.enabled ? 'yes' : 'disabled after dead letters') }, { label: 'Dead letters', value: (hook) => hook.deadLetters },
        { label: '', value: (hook) => dangerButton('Delete', `Delete the webhook to ${hook.url}?`, async () => { await api(`/webhooks/${hook.id}`, { method: 'DELETE' }); reload(); }) },
      ], list(webhooks), 'No webhooks.'),
      h('p', { class: 'muted' }, 'Each notification\'s deliveries (webhook, email, push) are listed from its entry in Notifications.'),
      form({ class: 'row' }, [
        field('URL', h('input', { name: 'url', type: 'url', required: true })),
        field('Types (comma-separated, * for all)', h('input', { name: 'types', value: '*' })),
        h('button', { type: 'submit' }, 'Add webhook'),
      ], async (values) => {
        const created = await api('/webhooks', { method: 'POST', body: { url: values.url, types: values.types.split(',').map((type) => type.trim()).filter(Boolean) } });
        await reload([h('p', {}, 'The webhook\'s signing secret, shown once:'), h('p', { class: 'secret' }, created.secret || '')]);
      })),
    h('section', { class: 'card' }, h('h2', {}, 'Notification providers'),
      table([
        { label: 'Provider', value: (provider) => provider.provider }, { label: 'Channel', value: (provider) => provider.channel },
        { label: 'Settings', value: (provider) => h('code', {}, JSON.stringify(provider.settings)) }, { label: 'Updated', value: (provider) => when(provider.updatedAt) },
        { label: '', value: (provider) => dangerButton('Remove', `Remove the ${provider.provider} provider and its stored secrets?`, async () => { await api(`/notification-providers/${provider.provider}`, { method: 'DELETE' }); reload(); }) },
      ], list(providers), 'No providers configured.'),
      form({}, [
        field('Provider', h('select', { name: 'provider' }, ['sendgrid', 'fcm', 'apns'].map((name) => h('option', { value: name }, name)))),
        field('Settings (JSON; secrets are stored sealed and never shown again)', h('textarea', { name: 'settings', required: true }, '{"apiKey": "", "fromEmail": "noreply@example.com"}')),
        h('button', { type: 'submit' }, 'Save provider'),
      ], async (values) => {
        let body;
        try { body = JSON.parse(values.settings); } catch { throw new Error('The settings are not valid JSON.'); }
        await api(`/notification-providers/${values.provider}`, { method: 'PUT', body });
        say('Provider saved.');
        reload();
      })));
}
