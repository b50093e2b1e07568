/*
 * byok-bridge account page: sign-in, API keys, spending caps, usage, recent and background requests, cost
 * estimates and notifications. This module signs in and out, takes a token handed over by an embedding app,
 * and starts the sections (one ES module each).
 *
 * Security notes (this page runs under a strict CSP and handles provider API keys):
 * - The access and refresh tokens live only in the `session` object of api.js: never in localStorage,
 *   sessionStorage, cookies, URLs or the console. Reloading the page therefore signs the user out; that is
 *   intended.
 * - Every server string is put into the page with textContent (or as a Text node). Links are built with
 *   createElement, only for http(s) URLs, and open with rel="noopener noreferrer".
 * - A pasted API key is read once, the input is cleared immediately, and the key is only ever sent in a
 *   request body.
 */

import { $, announce } from './dom.js';
import { POLL_MS, api, apiError, load, scheduleRefresh, session, whenSessionEnds } from './api.js';
import { loadStatus } from './status.js';
import { loadAccountAndKeys, removeKeyCards } from './keys.js';
import { initBudget, loadBudget } from './budget.js';
import { loadUsage, onEstimate } from './usage.js';
import { initActivity, loadActivity, refreshActivity, resetActivity } from './activity.js';
import { loadNotifications, markVisible, notif, updateNotificationCount } from './notifications.js';

const TOKEN_MESSAGE = 'byok-bridge:token';

function startSession(accessToken, refreshToken, expiresInSecs, via) {
  session.gen += 1;
  session.access = accessToken;
  session.refresh = refreshToken || null;
  session.via = via;
  scheduleRefresh(expiresInSecs);
  $('signin-error').textContent = '';
  showView('dashboard');
  $('account-heading').focus();
  loadDashboard();
  clearInterval(session.pollTimer);
  session.pollTimer = setInterval(() => { loadStatus(); loadNotifications(); refreshActivity(); }, POLL_MS);
}

function endSession(message) {
  session.gen += 1;
  session.access = null;
  session.refresh = null;
  session.via = null;
  clearTimeout(session.refreshTimer);
  clearInterval(session.pollTimer);
  session.refreshTimer = null;
  session.pollTimer = null;
  resetDashboard();
  showView('signin');
  $('signin-error').textContent = message || '';
  $('email').focus();
}

function showView(name) {
  $('signin').hidden = name !== 'signin';
  $('dashboard').hidden = name !== 'dashboard';
  $('signout').hidden = name !== 'dashboard';
}

// Nothing from the previous user may stay in the page after sign-out.
function resetDashboard() {
  $('status-banner').hidden = true;
  $('status-banner').textContent = '';
  for (const id of ['account-email', 'account-plan', 'account-credits', 'account-mode', 'usage-total',
    'usage-credits', 'account-error', 'keys-error', 'usage-error', 'estimate-error', 'notifications-error',
    'budget-alerts', 'budget-error', 'calls-error', 'calls-kept', 'jobs-error']) {
    $(id).textContent = '';
  }
  $('account-heading').textContent = 'Your account';
  $('keys').hidden = true;
  $('budget').hidden = true;
  $('budget-caps').replaceChildren();
  $('budget-form').reset();
  removeKeyCards();
  $('usage-chart').replaceChildren();
  resetActivity();
  $('usage-table-body').replaceChildren();
  $('estimate-form').reset();
  $('estimate-summary').hidden = true;
  $('estimate-version').hidden = true;
  $('recommendations').replaceChildren();
  if (notif.observer) notif.observer.disconnect();
  notif.observer = null;
  notif.items = [];
  notif.signature = '';
  notif.onScreen.clear();
  notif.requested.clear();
  notif.readIds.clear();
  $('notification-list').replaceChildren();
  updateNotificationCount();
}

async function onSignIn(event) {
  event.preventDefault();
  const button = $('signin-submit');
  if (button.getAttribute('aria-disabled') === 'true') return;
  $('signin-error').textContent = '';
  button.setAttribute('aria-disabled', 'true');
  try {
    const tokens = await api('POST', '/v1/auth/login',
      { email: $('email').value.trim(), password: $('password').value }, { auth: false });
    if (!tokens || typeof tokens.access_token !== 'string') {
      throw apiError(200, 'bad_response', 'The server sent an answer this page cannot read.');
    }
    startSession(tokens.access_token, tokens.refresh_token, tokens.expires_in_secs, 'password');
  } catch (error) {
    $('signin-error').textContent = error.message;
  } finally {
    $('password').value = ''; // not kept around after an attempt, successful or not
    button.removeAttribute('aria-disabled');
  }
}

async function signOut() {
  const refreshToken = session.refresh;
  $('signout').setAttribute('aria-disabled', 'true');
  try {
    if (refreshToken) await api('POST', '/v1/auth/logout', { refresh_token: refreshToken }, { noRenew: true });
  } catch (_) {
    // Signed out locally regardless; an unrevoked refresh token simply expires on the server.
  }
  $('signout').removeAttribute('aria-disabled');
  endSession('');
  announce('You are signed out.');
}

// token handed over by an embedding app

// Origins the server lists in the meta tag; anything that is not exactly an origin (e.g. "*") is ignored.
function allowedOrigins() {
  const meta = document.querySelector('meta[name="byok-allowed-origins"]');
  return (meta ? meta.content : '').split(/\s+/).filter((origin) => {
    try {
      return origin !== '' && new URL(origin).origin === origin;
    } catch (_) {
      return false;
    }
  });
}

function onMessage(event) {
  if (!allowedOrigins().includes(event.origin)) return;
  const data = event.data;
  if (!data || typeof data !== 'object' || data.type !== TOKEN_MESSAGE) return;
  const token = data.access_token;
  if (typeof token !== 'string' || token === '' || token.length > 8192 || /\s/.test(token)) return;
  if (session.via === 'handover') {
    session.access = token; // a fresh token from the embedding app replaces the one about to expire
  } else if (!session.access) {
    startSession(token, null, null, 'handover'); // no refresh token: on expiry the user signs in again
  }
}

// Tell the embedding app that it can send a token now, but only when its origin is a listed one.
function announceReady() {
  if (window.parent === window) return;
  let parentOrigin = window.location.ancestorOrigins && window.location.ancestorOrigins[0];
  try {
    parentOrigin = parentOrigin || new URL(document.referrer).origin;
  } catch (_) {
    return; // origin unknown: the embedding app sends the token on the frame's load event instead
  }
  if (allowedOrigins().includes(parentOrigin)) window.parent.postMessage({ type: 'byok-bridge:ready' }, parentOrigin);
}

// dashboard loading

function loadDashboard() {
  loadStatus();
  loadAccountAndKeys();
  loadBudget();
  loadUsage();
  loadActivity();
  loadNotifications();
}
// wiring

function init() {
  whenSessionEnds(endSession);
  initBudget();
  initActivity();
  $('signin-form').addEventListener('submit', onSignIn);
  $('signout').addEventListener('click', () => {
    if ($('signout').getAttribute('aria-disabled') !== 'true') signOut();
  });
  $('estimate-form').addEventListener('submit', onEstimate);
  document.addEventListener('visibilitychange', markVisible);
  window.addEventListener('message', onMessage);
  showView('signin');
  announceReady();
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
else init();
