// The console's shell: session start-up, hash routing (#/section/…), the navigation, and the
// live unread badge fed by the notification WebSocket (subprotocol cairn.v1).
import { api, claims, logout, mayHaveSession, onSession, refresh, token } from './api.js';
import { h, render, say, sayError } from './ui.js';
import { live, setUnread } from './live.js';
import * as auth from './pages/auth.js';
import * as account from './pages/account.js';
import * as tasks from './pages/tasks.js';
import * as files from './pages/files.js';
import * as pipelines from './pages/pipelines.js';
import * as jobs from './pages/jobs.js';
import * as notifications from './pages/notifications.js';
import * as catalog from './pages/catalog.js';
import * as admin from './pages/admin.js';
import * as operators from './pages/operators.js';

const pages = { tasks, files, pipelines, jobs, notifications, catalog, admin, operators, account };
const publicPages = { signin: auth.signIn, register: auth.register };
let current = null;
let socket = null;
let socketRetry = 1000;


async function refreshUnread() {
  try { setUnread((await api('/notifications/unread-count')).unread); } catch { /* shown on the page */ }
}


function connectSocket() {
  if (socket || !token()) return;
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
  socket = new WebSocket(url, 'cairn.v1');
  socket.addEventListener('open', () => socket.send(JSON.stringify({ type: 'auth', token: token() })));
  socket.addEventListener('message', (event) => {
    const message = JSON.parse(event.data);
    if (message.type === 'ready') {
      socketRetry = 1000;
      socket.send(JSON.stringify({ type: 'subscribe', since: message.seq }));
      refreshUnread();
    } else if (message.type === 'notification') {
      socket.send(JSON.stringify({ type: 'ack', seq: message.seq }));
      refreshUnread();
      live.forEach((listener) => listener(message.notification));
    }
  });
  socket.addEventListener('close', async (event) => {
    socket = null;
    if (!token()) return;
    // 4401: the access token expired or the session ended; a refresh says which.
    if (event.code === 4401 && !(await refresh())) return;
    setTimeout(connectSocket, socketRetry);
    socketRetry = Math.min(socketRetry * 2, 30000);
  });
}

function closeSocket() {
  if (socket) { const open = socket; socket = null; open.close(1000); }
}

function renderWho(signedIn) {
  const who = document.getElementById('who');
  document.getElementById('nav').hidden = !signedIn;
  if (!signedIn) { who.replaceChildren(); return; }
  const me = claims() || {};
  document.body.classList.toggle('is-admin', me.role === 'owner' || me.role === 'admin');
  for (const item of document.querySelectorAll('.admin-only')) item.hidden = !(me.role === 'owner' || me.role === 'admin');
  who.replaceChildren(
    h('span', { id: 'who-name' }, me.email || ''),
    h('span', { class: 'muted', id: 'who-role' }, me.role || ''),
    h('button', { class: 'secondary', id: 'sign-out', type: 'button', onclick: signOut }, 'Sign out'));
  // The token names the user by id only; the profile says who that is.
  api('/users/me').then((user) => {
    const name = document.getElementById('who-name');
    if (name) { name.textContent = user.email; name.title = user.name; }
  }).catch(() => { /* the header keeps the role alone */ });
}

async function signOut() {
  closeSocket();
  await logout();
  // Signing out on purpose is not an interrupted visit: the next sign-in starts at the tasks.
  sessionStorage.removeItem(auth.afterSignInKey);
  say('Signed out.');
  location.hash = '#/signin';
}

async function route() {
  current?.abort();
  current = new AbortController();
  const [section = '', ...rest] = location.hash.replace(/^#\/?/, '').split('/');
  document.getElementById('status').replaceChildren();
  for (const link of document.querySelectorAll('nav a')) {
    if (link.getAttribute('href') === `#/${section}`) link.setAttribute('aria-current', 'page'); else link.removeAttribute('aria-current');
  }
  if (!token()) {
    const page = publicPages[section] || auth.signIn;
    if (!publicPages[section]) {
      // A deep link opened signed out is where sign-in lands afterwards.
      if (pages[section]) sessionStorage.setItem(auth.afterSignInKey, location.hash);
      history.replaceState(null, '', '#/signin');
    }
    page({ signal: current.signal });
    return;
  }
  if (publicPages[section] || !section) { location.hash = '#/tasks'; return; }
  const page = pages[section];
  if (!page) { render(h('h1', {}, 'Not found'), h('p', {}, 'No such page. '), h('a', { href: '#/tasks' }, 'Go to tasks')); return; }
  try {
    await page.show(rest.map(decodeURIComponent), { signal: current.signal });
  } catch (error) {
    sayError(error);
  }
  document.getElementById('main').focus({ preventScroll: true });
}

onSession((signedIn) => {
  renderWho(signedIn);
  if (signedIn) { connectSocket(); refreshUnread(); } else {
    closeSocket();
    setUnread(0);
    if (!location.hash.match(/^#\/(signin|register)/)) {
      // A session that ends mid-use comes back to the same page after signing in again.
      if (location.hash.startsWith('#/')) sessionStorage.setItem(auth.afterSignInKey, location.hash);
      location.hash = '#/signin';
    }
  }
});

/** Moves focus to the main area without routing (the skip link's target is not a page). */
function skipToMain(event) {
  event.preventDefault();
  document.getElementById('main').focus();
}

// Only route-like hashes (#/…, or none) are pages; another fragment such as #main is an anchor.
window.addEventListener('hashchange', () => { if (!location.hash || location.hash.startsWith('#/')) route(); });
document.querySelector('a.skip').addEventListener('click', skipToMain);
window.addEventListener('error', (event) => say(`Unexpected error: ${event.message}`, 'error'));
// A fresh page keeps the session by trading the HttpOnly cookie for an access token.
if (mayHaveSession()) await refresh();
renderWho(Boolean(token()));
route();
