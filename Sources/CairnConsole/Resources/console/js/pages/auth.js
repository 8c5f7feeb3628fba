// Sign in and register (registration makes a new tenant whose first user is its owner).
import { api, login } from '../api.js';
import { field, form, h, render, say } from '../ui.js';

export function signIn() {
  render(h('section', { class: 'auth card' },
    h('h1', {}, 'Sign in'),
    form({ id: 'signin-form' }, [
      field('Email', h('input', { name: 'email', type: 'email', autocomplete: 'username', required: true, id: 'signin-email' })),
      field('Password', h('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: true, id: 'signin-password' })),
      h('button', { type: 'submit', id: 'signin-submit' }, 'Sign in'),
    ], async (values) => {
      await login(values.email, values.password);
      say('Signed in.');
      location.hash = '#/tasks';
    }),
    h('p', {}, 'No account? ', h('a', { href: '#/register' }, 'Register a new workspace'), '.')));
  document.getElementById('signin-email').focus();
}

export function register() {
  render(h('section', { class: 'auth card' },
    h('h1', {}, 'Register'),
    h('p', { class: 'muted' }, 'Creates a workspace (tenant) with you as its owner.'),
    form({ id: 'register-form' }, [
      field('Name', h('input', { name: 'name', required: true, autocomplete: 'name' })),
      field('Email', h('input', { name: 'email', type: 'email', required: true, autocomplete: 'username' })),
      field('Password (8 to 128 characters)', h('input', { name: 'password', type: 'password', minLength: 8, maxLength: 128, required: true, autocomplete: 'new-password' })),
      field('Workspace name (optional)', h('input', { name: 'tenantName' })),
      h('button', { type: 'submit' }, 'Register'),
    ], async (values) => {
      const body = { name: values.name, email: values.email, password: values.password };
      if (values.tenantName) body.tenantName = values.tenantName;
      await api('/auth/register', { method: 'POST', body });
      await login(values.email, values.password);
      say('Welcome to Cairn.');
      location.hash = '#/tasks';
    }),
    h('p', {}, 'Have an account? ', h('a', { href: '#/signin' }, 'Sign in'), '.')));
}
