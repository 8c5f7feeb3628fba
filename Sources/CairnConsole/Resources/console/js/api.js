// The API client: the access token lives in this module's memory only; the refresh token is
// an HttpOnly cookie (Path=/auth) that script cannot read, sent by the browser to
// /auth/refresh-token and /auth/logout together with the X-Cairn-CSRF header.

let accessToken = null;
let refreshing = null;
const listeners = new Set();

/** An API failure: the problem document (RFC 9457) when there is one. */
export class APIError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
    this.code = problem?.code;
  }
}

/** Calls `listener(signedIn)` when the session starts or ends. */
export function onSession(listener) { listeners.add(listener); }

// Whether a refresh cookie may exist (the cookie itself is invisible to script): set at login,
// cleared when the session ends, so a first visit does not ask for a refresh it cannot get.
const sessionFlag = 'cairn.session';

/** True when an earlier page of this browser signed in and did not sign out. */
export function mayHaveSession() { return localStorage.getItem(sessionFlag) === '1'; }

function setToken(token) {
  const changed = Boolean(token) !== Boolean(accessToken);
  accessToken = token;
  if (token) localStorage.setItem(sessionFlag, '1'); else localStorage.removeItem(sessionFlag);
  if (changed) listeners.forEach((listener) => listener(Boolean(token)));
}

/** The current access token (for the WebSocket's auth message). */
export function token() { return accessToken; }

/** The claims of the current access token (sub, tid, role, exp). */
export function claims() {
  if (!accessToken) return null;
  try {
    const payload = accessToken.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(payload.padEnd(Math.ceil(payload.length / 4) * 4, '=')));
  } catch { return null; }
}

const cookieHeaders = { 'X-Cairn-Refresh-Cookie': '1', 'X-Cairn-CSRF': '1' };

async function problemOf(response) {
  const type = response.headers.get('Content-Type') || '';
  if (type.includes('json')) { try { return await response.json(); } catch { return null; } }
  return null;
}

/** Exchanges the refresh cookie for a new access token; false when there is no session. */
export function refresh() {
  refreshing ??= (async () => {
    try {
      const response = await fetch('/auth/refresh-token', {
        method: 'POST', credentials: 'same-origin', headers: { ...cookieHeaders, 'Content-Type': 'application/json' }, body: '{}',
      });
      if (!response.ok) { setToken(null); return false; }
      setToken((await response.json()).accessToken);
      return true;
    } catch { return false; } finally { refreshing = null; }
  })();
  return refreshing;
}

/** Logs in; the refresh token comes back as the cookie. */
export async function login(email, password) {
  const response = await fetch('/auth/login', {
    method: 'POST', credentials: 'same-origin', headers: { ...cookieHeaders, 'Content-Type': 'application/json' },
    body: JSON.stringify({ email, password }),
  });
  if (!response.ok) throw new APIError(response.status, await problemOf(response));
  setToken((await response.json()).accessToken);
}

/** Ends the session: the server revokes it and clears the cookie. */
export async function logout() {
  try {
    await fetch('/auth/logout', {
      method: 'POST', credentials: 'same-origin', headers: { ...cookieHeaders, 'Content-Type': 'application/json' }, body: '{}',
    });
  } finally { setToken(null); }
}

/** Forgets the access token after a server-side logout (logout-all, password change elsewhere). */
export function forget() { setToken(null); }

/** Adopts tokens from an answer that started a new session (a password change). */
export function adopt(tokens) { setToken(tokens.accessToken); }

/**
 * Sends a request with the access token; on 401 `token_expired`/`invalid_token` refreshes once
 * and retries. `body` objects are sent as JSON. Returns the parsed JSON (or null for 204), or
 * the Response when `raw` is set.
 */
export async function api(path, { method = 'GET', body, headers = {}, raw = false, retry = true } = {}) {
  const init = { method, headers: { ...headers }, credentials: 'same-origin' };
  if (accessToken) init.headers.Authorization = `Bearer ${accessToken}`;
  if (body !== undefined && !(body instanceof Blob) && typeof body !== 'string') {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  } else if (body !== undefined) init.body = body;
  if (path === '/users/me/password') Object.assign(init.headers, cookieHeaders);
  const response = await fetch(path, init);
  if (response.status === 401 && retry && path !== '/auth/refresh-token') {
    const problem = await problemOf(response.clone());
    if (['token_expired', 'invalid_token', 'unauthorized'].includes(problem?.code) && (await refresh())) {
      return api(path, { method, body, headers, raw, retry: false });
    }
    if (problem?.code !== 'invalid_credentials') setToken(null);
    throw new APIError(401, problem);
  }
  if (raw) {
    if (!response.ok) throw new APIError(response.status, await problemOf(response));
    return response;
  }
  if (!response.ok) throw new APIError(response.status, await problemOf(response));
  if (response.status === 204 || response.status === 202 && !(response.headers.get('Content-Type') || '').includes('json')) return null;
  const type = response.headers.get('Content-Type') || '';
  return type.includes('json') ? response.json() : response.text();
}

/**
 * Reads a Server-Sent Events stream with the access token (EventSource cannot send headers):
 * calls `onEvent({event, id, data})` for each event until the stream ends or `signal` aborts.
 */
export async function events(path, onEvent, signal) {
  const response = await api(path, { raw: true, headers: { Accept: 'text/event-stream' } });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  const abort = () => reader.cancel().catch(() => {});
  signal?.addEventListener('abort', abort);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, '');
        const event = { event: 'message', id: null, data: '' };
        for (const line of block.split(/\r?\n/)) {
          if (line.startsWith(':')) continue;
          const colon = line.indexOf(':');
          const name = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
          if (name === 'data') event.data += (event.data ? '\n' : '') + text;
          else if (name === 'event') event.event = text;
          else if (name === 'id') event.id = text;
        }
        if (event.data) onEvent(event);
      }
    }
  } catch (error) {
    if (!signal?.aborted) throw error;
  } finally { signal?.removeEventListener('abort', abort); }
}
