/*
 * byok-bridge account page: sign-in, API keys, usage, cost estimates and notifications.
 *
 * Security notes (this page runs under a strict CSP and handles provider API keys):
 * - The access and refresh tokens live only in the `session` object below: never in localStorage,
 *   sessionStorage, cookies, URLs or the console. Reloading the page therefore signs the user out; that is
 *   intended.
 * - Every server string is put into the page with textContent (or as a Text node). Links are built with
 *   createElement, only for http(s) URLs, and open with rel="noopener noreferrer".
 * - A pasted API key is read once, the input is cleared immediately, and the key is only ever sent in a
 *   request body.
 */
'use strict';

(function () {
  const POLL_MS = 10000; // provider status and notifications
  const REFRESH_MARGIN_SECS = 60;
  const DAY_MS = 86400000;
  const SESSION_ENDED = 'Your session ended. Sign in again.';
  const TOKEN_MESSAGE = 'byok-bridge:token';

  const KEY_STATUS_WORDS = {
    active: 'Active',
    unverified: 'Not verified yet',
    invalid: 'Invalid — replace it',
    quota_exceeded: 'Out of quota — add credit',
    rate_limited: 'Rate limited',
  };
  const MODE_SENTENCES = {
    byok_first: 'Your own keys are used first; platform credits when you have none.',
    credit_first: 'Platform credits are used first; your own keys when credits run out.',
    byok_only: 'AI features use your own keys only.',
    byok_disabled: 'AI features use platform credits.',
  };
  const PLAN_NAMES = { free: 'Free', premium: 'Premium', lifetime: 'Lifetime' };
  const SOURCE_NAMES = { byok: 'Your key', internal: 'Platform credits' };
  // Display names, refined from /v1/status and /v1/providers as they arrive.
  const providerNames = new Map([['openai', 'OpenAI'], ['anthropic', 'Anthropic']]);

  const session = {
    access: null,
    refresh: null,
    via: null,          // 'password' or 'handover'
    gen: 0,             // bumped on every sign-in and sign-out; late answers from an older session are dropped
    refreshTimer: null,
    refreshing: null,   // the one refresh in flight, shared by every caller that needs it
    pollTimer: null,
  };
  const keyCards = new Map();
  const notif = { items: [], signature: '', observer: null, onScreen: new Map(), requested: new Set(), readIds: new Set() };

  const $ = (id) => document.getElementById(id);
  const numberFormat = new Intl.NumberFormat('en-US');
  const moneyFormat = new Intl.NumberFormat('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });

  /* ---------- small DOM helpers ---------- */

  // Creates an element. Children that are strings become Text nodes, so data can never become markup.
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === 'text') node.textContent = String(value);
      else if (name === 'class') node.className = value;
      else node.setAttribute(name, value === true ? '' : String(value));
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  // Only http(s) URLs become links: a server bug must not turn into a javascript: link.
  function safeHttpUrl(raw) {
    try {
      const url = new URL(String(raw), window.location.href);
      return url.protocol === 'https:' || url.protocol === 'http:' ? url.href : null;
    } catch (_) {
      return null;
    }
  }

  function externalLink(href, text) {
    return el('a', { href, target: '_blank', rel: 'noopener noreferrer' }, text,
      el('span', { class: 'sr-only', text: ' (opens in a new tab)' }));
  }

  // Plain text with http(s) URLs turned into links, built node by node (no innerHTML).
  function appendLinkified(parent, text) {
    const pattern = /https?:\/\/[^\s<>"']+/gi;
    let last = 0;
    for (const match of text.matchAll(pattern)) {
      const url = match[0].replace(/[.,;:!?)\]]+$/, ''); // sentence punctuation is not part of the link
      parent.append(text.slice(last, match.index));
      const href = safeHttpUrl(url);
      parent.append(href ? externalLink(href, url) : url);
      last = match.index + url.length;
    }
    parent.append(text.slice(last));
  }

  let announceTimers = [];
  // Short confirmations go to the polite live region; it is emptied first so a repeated message is re-read.
  function announce(message) {
    const region = $('live-status');
    announceTimers.forEach(clearTimeout);
    region.textContent = '';
    announceTimers = [
      setTimeout(() => { region.textContent = message; }, 50),
      setTimeout(() => { region.textContent = ''; }, 10000),
    ];
  }

  function showError(id, error) { $(id).textContent = error ? error.message : ''; }

  /* ---------- formatting ---------- */

  const num = (value) => (Number.isFinite(Number(value)) ? Number(value) : 0);
  const providerName = (id) => providerNames.get(id) || String(id);

  function formatCents(cents) {
    const value = num(cents);
    if (value > 0 && value < 1) return '< $0.01';
    return (value < 0 ? '-$' : '$') + moneyFormat.format(Math.abs(value) / 100);
  }

  // Estimates are often fractions of a cent: keep at least 4 decimals and about 3 significant digits.
  function formatEstimate(cents) {
    const dollars = num(cents) / 100;
    if (dollars === 0) return '$0.00';
    if (Math.abs(dollars) >= 1) return '$' + moneyFormat.format(dollars);
    const decimals = Math.min(10, Math.max(4, 2 - Math.floor(Math.log10(Math.abs(dollars)))));
    return '$' + dollars.toFixed(decimals);
  }

  function formatPerMtok(usd) {
    return '$' + new Intl.NumberFormat('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 4 }).format(num(usd));
  }

  const requestCount = (n) => numberFormat.format(n) + (n === 1 ? ' request' : ' requests');

  function formatTime(rfc3339) {
    const date = new Date(rfc3339);
    if (!rfc3339 || Number.isNaN(date.getTime())) return '';
    return new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' }).format(date);
  }

  function formatDay(isoDay) {
    const date = new Date(isoDay + 'T00:00:00Z');
    return new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', timeZone: 'UTC' }).format(date);
  }

  /* ---------- API ---------- */

  function apiError(status, code, message) {
    const error = new Error(message);
    error.status = status;
    error.code = code;
    return error;
  }

  function defaultMessage(status) {
    if (status === 429) return 'Too many requests. Wait a moment and try again.';
    if (status >= 500) return 'The server had a problem. Try again in a moment.';
    return 'The request failed (status ' + status + ').';
  }

  async function readError(response) {
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
  async function api(method, path, body, options = {}) {
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
      if (gen === session.gen) endSession(SESSION_ENDED);
    }
    throw error;
  }

  /* ---------- session ---------- */

  // Resolves to 'ok', 'rejected' (the refresh token is no good) or 'failed' (network or server trouble).
  function refreshTokens() {
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
  function scheduleRefresh(expiresInSecs) {
    clearTimeout(session.refreshTimer);
    session.refreshTimer = null;
    const secs = num(expiresInSecs);
    if (!session.refresh || secs <= 0) return;
    const delaySecs = Math.max(secs - REFRESH_MARGIN_SECS, secs / 2, 5);
    session.refreshTimer = setTimeout(scheduledRefresh, Math.min(delaySecs * 1000, 2147483647));
  }

  async function scheduledRefresh() {
    const gen = session.gen;
    const outcome = await refreshTokens();
    if (gen !== session.gen || outcome === 'ok') return;
    // A blip (offline, 5xx) is retried shortly; a rejected refresh token ends the session.
    if (outcome === 'failed') session.refreshTimer = setTimeout(scheduledRefresh, 15000);
    else endSession(SESSION_ENDED);
  }

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
    session.pollTimer = setInterval(() => { loadStatus(); loadNotifications(); }, POLL_MS);
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
      'usage-credits', 'account-error', 'keys-error', 'usage-error', 'estimate-error', 'notifications-error']) {
      $(id).textContent = '';
    }
    $('account-heading').textContent = 'Your account';
    $('keys').hidden = true;
    removeKeyCards();
    $('usage-chart').replaceChildren();
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

  /* ---------- token handed over by an embedding app ---------- */

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

  /* ---------- dashboard loading ---------- */

  function loadDashboard() {
    loadStatus();
    loadAccountAndKeys();
    loadUsage();
    loadNotifications();
  }

  // Runs `render` with the answer unless the user signed out (or in as someone else) meanwhile.
  async function load(path, errorId, render) {
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

  async function loadStatus() {
    const gen = session.gen;
    let status;
    try {
      status = await api('GET', '/v1/status', undefined, { auth: false });
    } catch (_) {
      return; // keep the last banner; a failed status check says nothing new about the providers
    }
    if (gen !== session.gen || !status) return;
    renderStatus(status);
  }

  function renderStatus(status) {
    const providers = Array.isArray(status.providers) ? status.providers : [];
    for (const p of providers) if (p.provider && p.name) providerNames.set(p.provider, p.name);
    const troubled = providers.filter((p) => p.status !== 'operational');
    let text = null;
    if (status.ai_available === false || troubled.length > 0) {
      if (status.banner) text = status.banner;
      else if (troubled.length > 0) {
        const names = troubled.map((p) => p.name || providerName(p.provider));
        text = troubled.length === 1
          ? names[0] + ' is having problems; AI features that use it may fail. Everything else works.'
          : names.join(' and ') + ' are having problems; AI features that use them may fail. Everything else works.';
      } else text = 'AI features are unavailable right now. Everything else works.';
    }
    const banner = $('status-banner');
    banner.textContent = text || '';
    banner.hidden = !text;
  }

  function loadAccountAndKeys() {
    return load('/v1/account', 'account-error', (account) => {
      renderAccount(account);
      return loadKeys(account);
    });
  }

  function renderAccount(account) {
    const user = account.user || {};
    $('account-heading').textContent = user.first_name ? 'Hello, ' + user.first_name : 'Your account';
    $('account-email').textContent = user.email || '';
    $('account-plan').textContent = PLAN_NAMES[user.tier] || String(user.tier || '');
    const credits = account.credits || {};
    let balance = formatCents(credits.balance_cents);
    if (credits.available_cents !== undefined && num(credits.available_cents) !== num(credits.balance_cents)) {
      balance += ' (' + formatCents(credits.available_cents) + ' available now)';
    }
    $('account-credits').textContent = balance;
    $('usage-credits').textContent = balance;
    $('account-mode').textContent = MODE_SENTENCES[account.mode] || '';
    $('account-stale').hidden = account.stale !== true;
  }

  /* ---------- API keys ---------- */

  async function loadKeys(account) {
    const byok = account.byok || {};
    const reason = byok.reason || null;
    $('keys').hidden = byok.enabled !== true;
    const upgrade = byok.allowed !== true && reason && reason.code === 'premium_required';
    $('upgrade-hint').hidden = !upgrade;
    $('upgrade-hint').textContent = upgrade ? reason.message : '';
    // Another reason (not expected while enabled) is shown, but saved keys stay manageable.
    const otherReason = byok.allowed !== true && !upgrade && reason ? reason.message : '';
    $('keys-note').hidden = !otherReason;
    $('keys-note').textContent = otherReason;
    if (byok.enabled !== true || upgrade) {
      removeKeyCards();
      return;
    }
    await load('/v1/providers', 'keys-error', (data) => renderKeyCards(data.providers || []));
  }

  function removeKeyCards() {
    for (const card of keyCards.values()) clearTimeout(card.confirmTimer);
    keyCards.clear();
    $('key-cards').replaceChildren();
  }

  // Cards are built once and then updated in place, so focus and typing survive a reload of the data.
  function renderKeyCards(providers) {
    const container = $('key-cards');
    const seen = new Set();
    let index = 0;
    for (const p of providers) {
      if (typeof p.provider !== 'string' || !/^[a-z0-9_-]+$/i.test(p.provider)) continue; // used in ids and paths
      providerNames.set(p.provider, p.name || p.provider);
      let card = keyCards.get(p.provider);
      if (!card) {
        card = buildKeyCard(p);
        keyCards.set(p.provider, card);
      }
      if (container.children[index] !== card.root) container.insertBefore(card.root, container.children[index] || null);
      updateKeyCard(card, p);
      seen.add(p.provider);
      index += 1;
    }
    for (const [id, card] of keyCards) {
      if (!seen.has(id)) {
        card.root.remove();
        keyCards.delete(id);
      }
    }
  }

  function buildKeyCard(p) {
    const id = p.provider;
    const name = p.name || id;
    const links = el('ul', { class: 'links', 'aria-label': name + ' links' });
    for (const [url, text, suffix] of [[p.signup_url, 'Create an account', 'signup'],
      [p.keys_url, 'Get an API key', 'keys-page'], [p.billing_url, 'Billing', 'billing']]) {
      const href = safeHttpUrl(url);
      if (url && href) {
        const link = externalLink(href, text);
        link.id = 'key-' + suffix + '-' + id;
        links.append(el('li', null, link));
      }
    }
    const card = {
      id,
      name,
      busy: false,
      confirmTimer: null,
      hint: el('dd', { id: 'key-hint-' + id }),
      status: el('dd', { id: 'key-status-' + id }),
      verified: el('dd', { id: 'key-verified-' + id }),
      lastError: el('dd', { id: 'key-last-error-' + id }),
      usable: el('p', { id: 'key-usable-' + id, class: 'notice', hidden: true }),
      input: el('input', { id: 'key-input-' + id, name: 'api_key', type: 'password', autocomplete: 'off',
        spellcheck: 'false', autocapitalize: 'off', 'aria-describedby': 'key-format-' + id }),
      toggle: el('button', { type: 'button', id: 'key-toggle-' + id, class: 'button secondary',
        'aria-controls': 'key-input-' + id, text: 'Show key' }),
      save: el('button', { type: 'submit', id: 'key-save-' + id, class: 'button primary', text: 'Save key' }),
      verify: el('button', { type: 'button', id: 'key-verify-' + id, class: 'button secondary', text: 'Verify key' }),
      del: el('button', { type: 'button', id: 'key-delete-' + id, class: 'button danger', text: 'Delete key' }),
      error: el('p', { id: 'key-error-' + id, class: 'error', role: 'alert' }),
    };
    card.lastErrorRow = el('div', null, el('dt', { text: 'Last error' }), card.lastError);
    card.form = el('form', { id: 'key-form-' + id, class: 'stack', method: 'post' },
      el('div', { class: 'field' },
        el('label', { for: 'key-input-' + id, text: 'New ' + name + ' API key' }),
        el('p', { id: 'key-format-' + id, class: 'muted small', text: p.key_format || '' }),
        el('div', { class: 'key-row' }, card.input, card.toggle)),
      card.save);
    card.root = el('article', { id: 'key-card-' + id, class: 'card key-card', 'aria-labelledby': 'key-title-' + id },
      el('h3', { id: 'key-title-' + id, text: name }),
      links,
      el('dl', { class: 'facts key-facts' },
        el('div', null, el('dt', { text: 'Saved key' }), card.hint),
        el('div', null, el('dt', { text: 'Status' }), card.status),
        el('div', null, el('dt', { text: 'Last verified' }), card.verified),
        card.lastErrorRow),
      card.usable,
      card.form,
      card.error,
      el('div', { class: 'actions' }, card.verify, card.del));

    card.form.addEventListener('submit', (event) => { event.preventDefault(); saveKey(card); });
    card.toggle.addEventListener('click', () => setKeyVisible(card, card.input.type === 'password'));
    card.verify.addEventListener('click', () => verifyKey(card));
    card.del.addEventListener('click', () => onDeleteClick(card));
    card.del.addEventListener('blur', () => resetDelete(card));
    return card;
  }

  function updateKeyCard(card, p) {
    const key = p.key || null;
    card.name = p.name || card.id;
    card.hasKey = Boolean(key);
    card.hint.textContent = key ? key.hint || 'Saved' : 'No key saved';
    const status = key ? key.status : 'none';
    let words = key ? KEY_STATUS_WORDS[status] || String(status) : 'No key';
    if (key && key.is_active === false) words += ' (not in use)';
    card.status.replaceChildren(el('span', { class: 'status status-' + status, text: words }));
    card.status.dataset.status = status;
    card.verified.textContent = key && key.last_validated_at ? formatTime(key.last_validated_at) : 'Never';
    card.lastError.textContent = key && key.last_error ? key.last_error : '';
    card.lastErrorRow.hidden = !(key && key.last_error);
    const notUsable = p.byok && p.byok.usable_now === false && p.byok.reason;
    card.usable.textContent = notUsable ? p.byok.reason.message : '';
    card.usable.hidden = !notUsable;
    card.save.textContent = key ? 'Replace key' : 'Save key';
    card.verify.hidden = !key;
    card.del.hidden = !key;
  }

  function setKeyVisible(card, visible) {
    card.input.type = visible ? 'text' : 'password';
    card.toggle.textContent = visible ? 'Hide key' : 'Show key';
  }

  // While a request runs the buttons are marked aria-disabled (not `disabled`, which would drop keyboard focus).
  function setBusy(card, busy) {
    card.busy = busy;
    card.root.setAttribute('aria-busy', String(busy));
    for (const button of [card.save, card.verify, card.del]) {
      if (busy) button.setAttribute('aria-disabled', 'true');
      else button.removeAttribute('aria-disabled');
    }
  }

  // Runs one key action: clears the card's error, shows the server's message on failure, then reloads.
  async function keyAction(card, run) {
    if (card.busy) return;
    const gen = session.gen;
    card.error.textContent = '';
    setBusy(card, true);
    try {
      await run();
    } catch (error) {
      if (gen === session.gen) card.error.textContent = error.message;
    } finally {
      setBusy(card, false);
    }
    if (gen === session.gen) await loadAccountAndKeys();
  }

  function saveKey(card) {
    if (card.busy) return;
    const apiKey = card.input.value.trim();
    card.input.value = ''; // the key must not linger in the page once submitted
    setKeyVisible(card, false);
    if (!apiKey) {
      card.error.textContent = 'Paste your ' + card.name + ' API key first.';
      card.input.focus();
      return;
    }
    announce('Checking the key with ' + card.name + '…');
    keyAction(card, async () => {
      const summary = await api('PUT', '/v1/keys/' + encodeURIComponent(card.id), { api_key: apiKey });
      announce(savedMessage(card.name, summary));
    });
  }

  function savedMessage(name, summary) {
    const status = summary && summary.status;
    if (!status || status === 'active') return 'Saved. ' + name + ' accepted the key.';
    if (status === 'unverified') return 'Saved. The key is not verified yet; use Verify key to check it.';
    return 'Saved. ' + name + ' reports: ' + (KEY_STATUS_WORDS[status] || status) + '.';
  }

  function verifyKey(card) {
    keyAction(card, async () => {
      const summary = await api('POST', '/v1/keys/' + encodeURIComponent(card.id) + '/verify');
      const status = summary && summary.status;
      announce(status === 'active'
        ? card.name + ' accepted the key.'
        : 'Checked your ' + card.name + ' key: ' + (KEY_STATUS_WORDS[status] || status) + '.');
    });
  }

  // Deleting needs a second click within a few seconds instead of a confirm() prompt.
  function onDeleteClick(card) {
    if (card.busy) return;
    if (!card.confirmTimer) {
      card.del.textContent = 'Click again to delete';
      card.del.classList.add('confirming');
      card.confirmTimer = setTimeout(() => resetDelete(card), 5000);
      return;
    }
    resetDelete(card);
    keyAction(card, async () => {
      await api('DELETE', '/v1/keys/' + encodeURIComponent(card.id));
      announce('Your ' + card.name + ' key was deleted.');
    }).then(() => {
      // The delete button is hidden now; keep keyboard users inside the card.
      if (!card.hasKey && card.root.isConnected) card.input.focus();
    });
  }

  function resetDelete(card) {
    clearTimeout(card.confirmTimer);
    card.confirmTimer = null;
    card.del.textContent = 'Delete key';
    card.del.classList.remove('confirming');
  }

  /* ---------- usage ---------- */

  function loadUsage() {
    return load('/v1/usage?days=30', 'usage-error', renderUsage);
  }

  function renderUsage(data) {
    const days = num(data.days) || 30;
    const rows = Array.isArray(data.usage) ? data.usage : [];
    const daily = Array.isArray(data.daily) ? data.daily : [];
    const total = data.total || {};
    const requests = num(total.requests);
    $('usage-total').textContent = requestCount(requests) + ', ' + formatCents(total.cost_cents);
    const empty = requests === 0 && rows.length === 0 && daily.length === 0;
    $('usage-empty').textContent = 'No AI usage in the last ' + days + ' days.';
    $('usage-empty').hidden = !empty;
    $('usage-chart-figure').hidden = empty;
    $('usage-table').hidden = empty;
    renderUsageChart(daily, days);
    renderUsageTable(rows, total);
  }

  // Every day in the window, so quiet days show as gaps rather than disappearing.
  function dayRange(dataDays, days) {
    const now = new Date();
    let end = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
    let start = end - (days - 1) * DAY_MS;
    for (const day of dataDays) {
      const ms = Date.parse(day + 'T00:00:00Z');
      if (Number.isNaN(ms)) continue;
      end = Math.max(end, ms);
      start = Math.min(start, ms);
    }
    start = Math.max(start, end - 365 * DAY_MS); // a bad date must not produce thousands of bars
    const list = [];
    for (let ms = start; ms <= end; ms += DAY_MS) list.push(new Date(ms).toISOString().slice(0, 10));
    return list;
  }

  function renderUsageChart(daily, days) {
    const byDay = new Map();
    for (const row of daily) {
      const entry = byDay.get(row.day) || { byok: { requests: 0, cost: 0 }, internal: { requests: 0, cost: 0 } };
      const part = row.source === 'byok' ? entry.byok : entry.internal;
      part.requests += num(row.requests);
      part.cost += num(row.cost_cents);
      byDay.set(row.day, entry);
    }
    const list = dayRange(byDay.keys(), days);
    // Bars show cost; if everything cost nothing, requests are the more useful measure.
    const byCost = daily.some((row) => num(row.cost_cents) > 0);
    const value = (part) => (byCost ? part.cost : part.requests);
    const zero = { byok: { requests: 0, cost: 0 }, internal: { requests: 0, cost: 0 } };
    const max = Math.max(0, ...list.map((day) => {
      const entry = byDay.get(day) || zero;
      return value(entry.byok) + value(entry.internal);
    }));
    $('usage-chart-caption').textContent = (byCost ? 'Cost' : 'Requests') + ' per day, your keys and platform credits';
    const chart = $('usage-chart');
    chart.replaceChildren();
    for (const day of list) {
      const entry = byDay.get(day) || zero;
      const label = formatDay(day) + ': your keys ' + formatCents(entry.byok.cost) + ' (' + requestCount(entry.byok.requests)
        + '), credits ' + formatCents(entry.internal.cost) + ' (' + requestCount(entry.internal.requests) + ')';
      const bar = el('div', { class: 'bar', role: 'listitem', title: label, 'data-testid': 'usage-bar', 'data-day': day },
        el('span', { class: 'sr-only', text: label }));
      for (const source of ['byok', 'internal']) {
        const amount = value(entry[source]);
        const segment = el('div', { class: 'seg seg-' + source + (amount > 0 ? ' nonzero' : ''), 'aria-hidden': 'true' });
        segment.style.height = (max > 0 ? (amount / max) * 100 : 0) + '%'; // CSSOM: allowed by the CSP
        bar.append(segment);
      }
      chart.append(bar);
    }
    const axis = $('usage-chart-axis');
    axis.replaceChildren();
    if (list.length > 0) axis.append(el('span', { text: formatDay(list[0]) }), el('span', { text: formatDay(list[list.length - 1]) }));
  }

  function renderUsageTable(rows, total) {
    const sorted = rows.slice().sort((a, b) =>
      providerName(a.provider).localeCompare(providerName(b.provider)) || String(a.source).localeCompare(String(b.source)));
    const body = $('usage-table-body');
    body.replaceChildren(...sorted.map((row) => el('tr', { 'data-testid': 'usage-row' },
      el('td', { text: providerName(row.provider) }),
      el('td', { text: SOURCE_NAMES[row.source] || String(row.source) }),
      el('td', { class: 'num', text: numberFormat.format(num(row.requests)) }),
      el('td', { class: 'num', text: numberFormat.format(num(row.tokens)) }),
      el('td', { class: 'num', text: formatCents(row.cost_cents) }))));
    const table = $('usage-table');
    if (table.tFoot) table.tFoot.remove();
    const tokens = rows.reduce((sum, row) => sum + num(row.tokens), 0);
    table.append(el('tfoot', null, el('tr', null,
      el('td', { colspan: 2, text: 'Total' }),
      el('td', { class: 'num', text: numberFormat.format(num(total.requests)) }),
      el('td', { class: 'num', text: numberFormat.format(tokens) }),
      el('td', { class: 'num', text: formatCents(total.cost_cents) }))));
  }

  /* ---------- estimate ---------- */

  async function onEstimate(event) {
    event.preventDefault();
    const button = $('estimate-submit');
    if (button.getAttribute('aria-disabled') === 'true') return;
    const prompt = $('estimate-prompt').value;
    const maxOutput = Number($('estimate-output').value);
    if (!prompt.trim()) return showError('estimate-error', new Error('Type or paste a prompt first.'));
    if (!Number.isInteger(maxOutput) || maxOutput < 1) {
      return showError('estimate-error', new Error('Answer length must be a whole number of tokens, 1 or more.'));
    }
    const gen = session.gen;
    showError('estimate-error', null);
    button.setAttribute('aria-disabled', 'true');
    try {
      const data = await api('POST', '/v1/recommendations', { prompt, max_output_tokens: maxOutput });
      if (gen === session.gen) renderRecommendations(data || {});
    } catch (error) {
      if (gen === session.gen) showError('estimate-error', error);
    } finally {
      button.removeAttribute('aria-disabled');
    }
  }

  function renderRecommendations(data) {
    const recs = (Array.isArray(data.recommendations) ? data.recommendations : [])
      .slice().sort((a, b) => num(a.estimated_cost_cents) - num(b.estimated_cost_cents));
    const summary = $('estimate-summary');
    summary.hidden = false;
    summary.textContent = 'Your prompt is about ' + numberFormat.format(num(data.prompt_tokens)) + ' tokens. '
      + (recs.length ? 'Cheapest first:' : 'No model is available for this right now.');
    $('recommendations').replaceChildren(...recs.map((rec) => {
      const price = rec.price || {};
      return el('li', { 'data-testid': 'recommendation' },
        el('span', { class: 'rec-model', text: rec.model }), ' · ',
        el('span', { class: 'rec-provider', text: providerName(rec.provider) }), ' ',
        el('span', { class: 'tag tag-' + (rec.source === 'byok' ? 'byok' : 'internal'),
          text: rec.source === 'byok' ? 'your key' : 'credits' }), ' ',
        el('span', { class: 'rec-cost', text: formatEstimate(rec.estimated_cost_cents) }),
        el('span', { class: 'rec-price', text: formatPerMtok(price.input_per_mtok_usd) + ' in / '
          + formatPerMtok(price.output_per_mtok_usd) + ' out per million tokens' }));
    }));
    const version = $('estimate-version');
    version.hidden = !data.price_table_version;
    version.textContent = data.price_table_version ? 'Prices: ' + data.price_table_version : '';
    announce(recs.length ? 'Estimate ready: ' + recs.length + ' options, cheapest first.' : 'No model is available.');
  }

  /* ---------- notifications ---------- */

  function loadNotifications() {
    return load('/v1/notifications', 'notifications-error', (data) => {
      const list = (Array.isArray(data.notifications) ? data.notifications : []).slice()
        .sort((a, b) => (Date.parse(b.timestamp) || 0) - (Date.parse(a.timestamp) || 0) || num(b.id) - num(a.id));
      // A notification that arrives after the first load (a key turned invalid, credits ran out) changes what the
      // key cards and the balance should say: reload them too, or the page contradicts its own notification.
      const known = new Set(notif.items.map((n) => n.id));
      const arrivedLater = notif.signature !== '' && list.some((n) => !known.has(n.id));
      notif.items = list;
      // Re-render only when something changed, so a poll does not disturb someone reading or tabbing.
      const signature = JSON.stringify(list.map((n) => [n.id, n.read, n.subject, n.message, n.timestamp]));
      if (signature !== notif.signature) {
        notif.signature = signature;
        renderNotifications(list);
      }
      if (arrivedLater) loadAccountAndKeys();
      updateNotificationCount();
    });
  }

  const isUnread = (n) => n.read !== true && !notif.readIds.has(n.id);

  function renderNotifications(list) {
    if (notif.observer) notif.observer.disconnect();
    notif.onScreen.clear();
    $('notifications-empty').hidden = list.length > 0;
    const ul = $('notification-list');
    ul.replaceChildren();
    for (const n of list) {
      const unread = isUnread(n);
      const title = el('h3', null);
      if (unread) title.append(el('span', { class: 'new-tag', text: 'New' }), ' ');
      title.append(String(n.subject || 'Notification'));
      const message = el('p', { class: 'notification-message' });
      appendLinkified(message, String(n.message || ''));
      const li = el('li', { class: 'notification' + (unread ? ' unread' : ''), 'data-testid': 'notification',
        'data-notification-id': n.id, 'data-read': String(!unread) },
        title, el('time', { datetime: n.timestamp, text: formatTime(n.timestamp) }), message);
      ul.append(li);
      if (unread && Number.isSafeInteger(n.id) && !notif.requested.has(n.id)) watchUntilSeen(li);
    }
  }

  function updateNotificationCount() {
    const count = notif.items.filter(isUnread).length;
    $('notification-count').textContent = String(count);
    $('notification-badge').hidden = count === 0;
  }

  // An unread notification counts as seen once half of it (or half the screen) is visible in a visible tab.
  function watchUntilSeen(li) {
    if (!('IntersectionObserver' in window)) {
      markRead(li);
      return;
    }
    if (!notif.observer) notif.observer = new IntersectionObserver(onIntersect, { threshold: [0, 0.5, 1] });
    notif.observer.observe(li);
  }

  function onIntersect(entries) {
    for (const entry of entries) {
      const viewport = entry.rootBounds ? entry.rootBounds.height : window.innerHeight;
      const seen = entry.isIntersecting
        && (entry.intersectionRatio >= 0.5 || entry.intersectionRect.height >= viewport / 2);
      if (seen) notif.onScreen.set(entry.target.dataset.notificationId, entry.target);
      else notif.onScreen.delete(entry.target.dataset.notificationId);
    }
    markVisible();
  }

  function markVisible() {
    if (document.visibilityState !== 'visible') return; // a background tab has not been read
    for (const [id, li] of notif.onScreen) {
      notif.onScreen.delete(id);
      if (notif.observer) notif.observer.unobserve(li);
      markRead(li);
    }
  }

  async function markRead(li) {
    const id = Number(li.dataset.notificationId);
    if (notif.requested.has(id)) return; // mark each one once
    notif.requested.add(id);
    const gen = session.gen;
    try {
      await api('POST', '/v1/notifications/' + encodeURIComponent(String(id)) + '/read');
      if (gen !== session.gen) return;
      notif.readIds.add(id);
      li.dataset.read = 'true'; // the "New" marking stays until the next refresh so the user sees what was new
      updateNotificationCount();
    } catch (_) {
      if (gen !== session.gen) return;
      notif.requested.delete(id);
      // Try again later rather than in a tight loop while it stays on screen.
      setTimeout(() => { if (gen === session.gen && li.isConnected) watchUntilSeen(li); }, POLL_MS);
    }
  }

  /* ---------- wiring ---------- */

  function init() {
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
})();
