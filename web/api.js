// The HTTP API client: same-origin fetch with the session cookie (HttpOnly, set by the gateway),
// the CSRF header on state-changing requests, and problem+json errors turned into ApiError.
// Nothing secret is kept in script-visible storage: the bearer token in a login answer is dropped.

const BASE = '/api/v1';
const CSRF_COOKIE = 'chanced_csrf';

export class ApiError extends Error {
  constructor(status, problem, headers) {
    super((problem && (problem.detail || problem.title)) || 'Request failed');
    this.status = status;               // HTTP status, 0 if the server was not reached
    this.code = (problem && problem.code) || (status ? 'http_' + status : 'network');
    this.problem = problem || {};
    const ra = headers ? Number(headers.get('Retry-After')) : NaN;
    this.retryAfter = Number.isFinite(ra) && ra > 0 ? ra : null;  // seconds
  }
}

const listeners = new Set();

// fn(event) is called with 'session-lost' when the server stops accepting our session.
export function onApiEvent(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function emit(event) {
  for (const fn of listeners) {
    fn(event);
  }
}

function csrfToken() {
  for (const part of document.cookie.split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === CSRF_COOKIE) {
      return decodeURIComponent(v.join('='));
    }
  }
  return null;
}

export function hasCsrf() {
  return csrfToken() !== null;
}

// api('GET', '/me') -> {status, data, headers}; throws ApiError. opts: body, headers,
// quiet401 (a 401 is an answer, e.g. a wrong password, not a lost session), signal.
export async function api(method, path, opts = {}) {
  const headers = { Accept: 'application/json' };
  let body;
  if (opts.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(opts.body);
  }
  if (method !== 'GET' && method !== 'HEAD') {
    const t = csrfToken();
    if (t) {
      headers['X-CSRF-Token'] = t;
    }
  }
  Object.assign(headers, opts.headers || {});
  let res;
  try {
    res = await fetch(BASE + path, {
      method, headers, body, credentials: 'same-origin', cache: 'no-store', signal: opts.signal,
    });
  } catch (e) {
    if (e && e.name === 'AbortError') {
      throw e;
    }
    throw new ApiError(0, { code: 'network', detail: 'The server could not be reached. Check your connection and try again.' });
  }
  let data = null;
  const type = res.headers.get('Content-Type') || '';
  if (res.status !== 204 && type.includes('json')) {
    try {
      data = await res.json();
    } catch {
      data = null;
    }
  }
  if (!res.ok) {
    const err = new ApiError(res.status, data, res.headers);
    if ((res.status === 401 && !opts.quiet401) || err.code === 'csrf_failed') {
      emit('session-lost');
    }
    throw err;
  }
  return { status: res.status, data, headers: res.headers };
}

export const get = (path, opts) => api('GET', path, opts);
export const post = (path, body, opts = {}) => api('POST', path, { ...opts, body });
export const patch = (path, body, opts = {}) => api('PATCH', path, { ...opts, body });

// A query string from an object, skipping empty values.
export function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') {
      u.set(k, String(v));
    }
  }
  const s = u.toString();
  return s ? '?' + s : '';
}

export const API_BASE = BASE;

// A random Idempotency-Key (the same key makes a retried claim return the same answer).
export function newKey() {
  if (crypto.randomUUID) {
    return crypto.randomUUID();
  }
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}
