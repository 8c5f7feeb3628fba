// The caller's account: profile, password, sessions, notification preferences, push devices.
import { adopt, api, forget } from '../api.js';
import { attempt, field, form, h, render, say, table, when } from '../ui.js';

export async function show() {
  const me = await api('/users/me');
  const preferences = await api('/users/me/notification-preferences');
  const devices = await api('/users/me/devices');
  const types = ['message', 'friend_request', 'system_alert', 'job_status', ...Object.keys(preferences.types || {})];
  const channels = ['in_app', 'webhook', 'email', 'push'];
  const uniqueTypes = [...new Set(types)];
  render(
    h('h1', {}, 'Account'),
    h('div', { class: 'grid' },
      h('section', { class: 'card', 'aria-labelledby': 'profile-h' },
        h('h2', { id: 'profile-h' }, 'Profile'),
        h('p', { class: 'muted' }, `Role: ${me.role} · member since `, when(me.createdAt)),
        form({}, [
          field('Name', h('input', { name: 'name', value: me.name, required: true })),
          field('Email', h('input', { name: 'email', type: 'email', value: me.email, required: true })),
          h('button', { type: 'submit' }, 'Save profile'),
        ], async (values) => { await api('/users/me', { method: 'PATCH', body: values }); say('Profile saved.'); })),
      h('section', { class: 'card', 'aria-labelledby': 'password-h' },
        h('h2', { id: 'password-h' }, 'Password'),
        form({}, [
          field('Current password', h('input', { name: 'currentPassword', type: 'password', required: true, autocomplete: 'current-password' })),
          field('New password', h('input', { name: 'newPassword', type: 'password', minLength: 8, maxLength: 128, required: true, autocomplete: 'new-password' })),
          h('button', { type: 'submit' }, 'Change password'),
        ], async (values, element) => {
          adopt(await api('/users/me/password', { method: 'PUT', body: values }));
          element.reset();
          say('Password changed; your other sessions have ended.');
        })),
      h('section', { class: 'card', 'aria-labelledby': 'sessions-h' },
        h('h2', { id: 'sessions-h' }, 'Sessions'),
        h('p', {}, 'End every session of your account, on every device, including this one.'),
        h('button', { class: 'danger', type: 'button', onclick: () => attempt(async () => {
          await api('/auth/logout-all', { method: 'POST' });
          forget();
          say('Every session has ended.');
        }) }, 'Log out everywhere'))),
    h('section', { class: 'card', 'aria-labelledby': 'prefs-h' },
      h('h2', { id: 'prefs-h' }, 'Notification preferences'),
      form({ id: 'preferences-form' }, [
        table([{ label: 'Type', value: (type) => type }, ...channels.map((channel) => ({
          label: channel.replace('_', '-'),
          value: (type) => h('input', { type: 'checkbox', name: `${type}:${channel}`, 'aria-label': `${type} by ${channel}`, checked: preferences.types?.[type]?.[channel] ?? true }),
        }))], uniqueTypes),
        h('div', { class: 'row' },
          field('Quiet hours from (HH:MM)', h('input', { name: 'quietStart', pattern: '[0-2][0-9]:[0-5][0-9]', value: preferences.quietHours?.start || '' })),
          field('until', h('input', { name: 'quietEnd', pattern: '[0-2][0-9]:[0-5][0-9]', value: preferences.quietHours?.end || '' })),
          field('Time zone', h('input', { name: 'quietZone', value: preferences.quietHours?.timeZone || Intl.DateTimeFormat().resolvedOptions().timeZone }))),
        h('button', { type: 'submit' }, 'Save preferences'),
      ], async (values, element) => {
        const body = { types: {} };
        for (const type of uniqueTypes) {
          body.types[type] = {};
          for (const channel of channels) body.types[type][channel] = element.elements[`${type}:${channel}`].checked;
        }
        body.quietHours = values.quietStart && values.quietEnd ? { start: values.quietStart, end: values.quietEnd, timeZone: values.quietZone } : null;
        await api('/users/me/notification-preferences', { method: 'PUT', body });
        say('Preferences saved.');
      })),
    h('section', { class: 'card', 'aria-labelledby': 'devices-h' },
      h('h2', { id: 'devices-h' }, 'Push devices'),
      table([
        { label: 'Platform', value: (device) => device.platform },
        { label: 'Token', value: (device) => `…${device.tokenEnding}` },
        { label: 'Added', value: (device) => when(device.createdAt) },
        { label: '', value: (device) => h('button', { class: 'secondary', type: 'button', onclick: () => attempt(async () => { await api(`/users/me/devices/${device.id}`, { method: 'DELETE' }); show(); }) }, 'Remove') },
      ], devices.items || devices, 'No devices registered.'),
      form({ class: 'row' }, [
        field('Platform', h('select', { name: 'platform' }, h('option', { value: 'fcm' }, 'FCM'), h('option', { value: 'apns' }, 'APNs'))),
        field('Device token', h('input', { name: 'token', required: true })),
        h('button', { type: 'submit' }, 'Add device'),
      ], async (values) => { await api('/users/me/devices', { method: 'POST', body: values }); say('Device added.'); show(); })));
}
