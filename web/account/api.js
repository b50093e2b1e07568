/* The session's tokens (in memory only) and the same-origin JSON API: renewal before expiry and on a 401,
 * and the end of the session when renewal is not possible. */

import { showError } from './dom.js';
import { num } from './format.js';

export const POLL_MS = 10000; // provider status and notifications
export const REFRESH_MARGIN_SECS = 60;
export const SESSION_ENDED = 'Your session ended. Sign in again.';

export const session = {
  access: null,
  refresh: null,
  via: null,          // 'password' or 'handover'
  gen: 0,             // bumped on every sign-in and sign-out; late answers from an older session are dropped
  refreshTimer: null,
  refreshing: null,   // the one refresh in flight, shared by every caller that needs it
  pollTimer: null,
};

// What ends the session (the page's sign-out); set by the page.
let sessionEnded = () => {};

export function whenSessionEnds(handler) {
  sessionEnded = handler;
}


export function apiError(status, code, message) {
  const error = new Error(message);
  error.status = status;
  error.code = code;
  return error;
}

export function defaultMessage(status) {
  if (status === 429) return 'Too many requests. Wait a moment and try again.';
  if (status >= 500) return 'The server had a problem. Try again in a moment.';
  return 'The request failed (status ' + status + ').';
}

export async function readError(response) {
  let code = 'http_' + response.status;
  let message = defaultMessage(response.status);
  try {
    const body = JSON.parse(await response.text());
    if (body && body.error && typeof body.error.code === 'string') code = body.error.code;
    if (body && body.error && typeof body.error.message === 'string' && body.error.message) message = body.error.message;
  } catch (_) {
    // Not JSON (a proxy's error page, say): keep the generic message.
  }
  return apiError(response.status, code, message);
}

/**
 * Same-origin JSON call. Adds the bearer token, turns `{"error":{"code","message"}}` into a thrown Error with
 * .code/.status/.message, and on a 401 `unauthorized` renews the session once and retries; if that is not
 * possible the user is sent back to sign-in. Options: auth (default true), noRenew (no refresh, no sign-out).
 */
export async function api(method, path, body, options = {}) {
  const gen = session.gen;
  const useAuth = options.auth !== false;
  const sentToken = session.access;
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (useAuth && sentToken) headers.Authorization = 'Bearer ' + sentToken;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      cache: 'no-store',
    });
  } catch (_) {
    throw apiError(0, 'network_error', 'Could not reach the server. Check your connection and try again.');
  }
  if (response.ok) {
    const text = response.status === 204 ? '' : await response.text();
    if (!text) return null;
    try {
      return JSON.parse(text);
    } catch (_) {
      throw apiError(response.status, 'bad_response', 'The server sent an answer this page cannot read.');
    }
  }
  const error = await readError(response);
  const canRenew = useAuth && !options.noRenew && gen === session.gen;
  if (response.status === 401 && error.code === 'unauthorized' && canRenew) {
    if (!options.retried) {
      // Another call may already have renewed the token while this one was in flight.
      const renewed = session.access !== sentToken || (await refreshTokens()) === 'ok';
      if (renewed && gen === session.gen) return api(method, path, body, { ...options, retried: true });
    }
    if (gen === session.gen) sessionEnded(SESSION_ENDED);
  }
  throw error;
}

// Resolves to 'ok', 'rejected' (the refresh token is no good) or 'failed' (network or server trouble).
export function refreshTokens() {
  if (!session.refresh) return Promise.resolve('rejected');
  if (!session.refreshing) {
    const gen = session.gen;
    session.refreshing = api('POST', '/v1/auth/refresh', { refresh_token: session.refresh }, { auth: false })
      .then((tokens) => {
        if (gen !== session.gen || !tokens || typeof tokens.access_token !== 'string') return 'rejected';
        session.access = tokens.access_token;
        if (typeof tokens.refresh_token === 'string') session.refresh = tokens.refresh_token;
        scheduleRefresh(tokens.expires_in_secs);
        return 'ok';
      })
      .catch((error) => (error.status === 0 || error.status >= 500 ? 'failed' : 'rejected'))
      .finally(() => { session.refreshing = null; });
  }
  return session.refreshing;
}

// Renew about a minute before expiry (or half-way, for short-lived tokens).
export function scheduleRefresh(expiresInSecs) {
  clearTimeout(session.refreshTimer);
  session.refreshTimer = null;
  const secs = num(expiresInSecs);
  if (!session.refresh || secs <= 0) return;
  const delaySecs = Math.max(secs - REFRESH_MARGIN_SECS, secs / 2, 5);
  session.refreshTimer = setTimeout(scheduledRefresh, Math.min(delaySecs * 1000, 2147483647));
}

export async function scheduledRefresh() {
  const gen = session.gen;
  const outcome = await refreshTokens();
  if (gen !== session.gen || outcome === 'ok') return;
  // A blip (offline, 5xx) is retried shortly; a rejected refresh token ends the session.
  if (outcome === 'failed') session.refreshTimer = setTimeout(scheduledRefresh, 15000);
  else sessionEnded(SESSION_ENDED);
}

// Runs `render` with the answer unless the user signed out (or in as someone else) meanwhile.
export async function load(path, errorId, render) {
  const gen = session.gen;
  try {
    const data = await api('GET', path);
    if (gen !== session.gen) return;
    if (errorId) showError(errorId, null);
    await render(data || {});
  } catch (error) {
    if (gen === session.gen && errorId) showError(errorId, error);
  }
}
