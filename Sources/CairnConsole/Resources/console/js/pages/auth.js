// Sign in and register (registration makes a new tenant whose first user is its owner).
import { api, login } from '../api.js';
import { field, form, h, render, say } from '../ui.js';

/** The sessionStorage key of the page (a #/… hash) to open after signing in. */
export const afterSignInKey = 'cairn.afterSignIn';

/** Where to go once signed in: the remembered deep link, else the tasks. */
function landing() {
  const wanted = sessionStorage.getItem(afterSignInKey);
  sessionStorage.removeItem(afterSignInKey);
  return wanted && wanted.startsWith('#/') && !wanted.match(/^#\/(signin|register)/) ? wanted : '#/tasks';
}

export function signIn() {
  render(h('section', { class: 'auth card' },
    h('h1', {}, 'Sign in'),
    form({ id: 'signin-form' }, [
      field('Email', h('input', { name: 'email', type: 'email', autocomplete: 'username', required: true, id: 'signin-email' })),
      field('Password', h('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: true, id: 'signin-password' })),
      h('button', { type: 'submit', id: 'signin-submit' }, 'Sign in'),
    ], async (values, element) => {
      const button = element.querySelector('button[type=submit]');
      button.textContent = 'Signing in…';
      button.setAttribute('aria-busy', 'true');
      try {
        await login(values.email, values.password);
      } finally {
        button.textContent = 'Sign in';
        button.removeAttribute('aria-busy');
      }
      say('Signed in.');
      location.hash = landing();
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
      field('Email', h('input', { name: 'email', type: 'email', required: true, autocomplete: 'email' })),
      field('Password (8 to 128 characters)', h('input', { name: 'password', type: 'password', minLength: 8, maxLength: 128, required: true, autocomplete: 'new-password' })),
      field('Workspace name (optional)', h('input', { name: 'tenantName', autocomplete: 'organization' })),
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
