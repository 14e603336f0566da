// HTTP to the registry's own API: bearer token from sessionStorage, errors as Status bodies.
// URLs are relative to the page (/ui/), so the dashboard also works under a path prefix.

const TOKEN_KEY = 'node-registry.token';
const ROOT = new URL('../', document.baseURI);
const API = new URL('apis/ai_team.io/v1/', ROOT);
let waiters = [];

export const auth = {
  token() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || '';
    } catch {
      return '';
    }
  },
  set(token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    this.notify();
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
  },
  /** Resolves the next time a token is entered. */
  changed() {
    return new Promise((resolve) => waiters.push(resolve));
  },
  notify() {
    const woken = waiters;
    waiters = [];
    for (const wake of woken) wake();
  },
};

/** The registry answered with an error: `body` is its Kubernetes Status (or null). */
export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

/** The registry could not be reached (connection refused, reset, DNS...). */
export class Unreachable extends Error {}

function withParams(url, params) {
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== '') url.searchParams.set(key, value);
  }
  return url;
}

export const apiURL = (path, params) => withParams(new URL(path, API), params);
export const uiURL = (path) => new URL(path, document.baseURI);

/** fetch() with the token; resolves to an OK Response or throws ApiError / Unreachable. */
export async function request(url, { headers = {}, signal } = {}) {
  const sent = { Accept: 'application/json', ...headers };
  const token = auth.token();
  if (token) sent.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(url, { headers: sent, signal, cache: 'no-store', credentials: 'omit' });
  } catch (err) {
    if (signal && signal.aborted) throw err;
    throw new Unreachable(err && err.message ? err.message : String(err));
  }
  if (!response.ok) {
    let body = null;
    try {
      body = await response.json();
    } catch {
      // not a Status (a proxy's error page): the HTTP code says enough
    }
    throw new ApiError(response.status, body);
  }
  return response;
}

/** GET a JSON document; also returns the server's Date header (for clock skew). */
export async function getJSON(url, options) {
  const sentAt = Date.now();
  const response = await request(url, options);
  let body;
  try {
    body = await response.json();
  } catch (err) {
    if (options && options.signal && options.signal.aborted) throw err;
    throw new Unreachable(`reading ${url.pathname}: ${err.message}`);
  }
  return { body, date: response.headers.get('Date'), sentAt, receivedAt: Date.now() };
}
