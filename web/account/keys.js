/* The account summary and the API key cards: save, verify, delete. */

import { $, announce, el, externalLink, safeHttpUrl } from './dom.js';
import { KEY_STATUS_WORDS, MODE_SENTENCES, PLAN_NAMES, formatCents, formatTime, num, providerNames } from './format.js';
import { api, load, session } from './api.js';

export const keyCards = new Map();

export function loadAccountAndKeys() {
  return load('/v1/account', 'account-error', (account) => {
    renderAccount(account);
    return loadKeys(account);
  });
}

export function renderAccount(account) {
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
  // The operator's checkout (CREDITS_PURCHASE_URL), only ever as an http(s) link.
  const purchase = credits.purchase_url ? safeHttpUrl(credits.purchase_url) : null;
  if (purchase) $('account-credits').append(' ', externalLink(purchase, 'Buy credits'));
  $('account-mode').textContent = MODE_SENTENCES[account.mode] || '';
  $('account-stale').hidden = account.stale !== true;
}


export async function loadKeys(account) {
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

export function removeKeyCards() {
  for (const card of keyCards.values()) clearTimeout(card.confirmTimer);
  keyCards.clear();
  $('key-cards').replaceChildren();
}

// Cards are built once and then updated in place, so focus and typing survive a reload of the data.
export function renderKeyCards(providers) {
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

export function buildKeyCard(p) {
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

export function updateKeyCard(card, p) {
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

export function setKeyVisible(card, visible) {
  card.input.type = visible ? 'text' : 'password';
  card.toggle.textContent = visible ? 'Hide key' : 'Show key';
}

// While a request runs the buttons are marked aria-disabled (not `disabled`, which would drop keyboard focus).
export function setBusy(card, busy) {
  card.busy = busy;
  card.root.setAttribute('aria-busy', String(busy));
  for (const button of [card.save, card.verify, card.del]) {
    if (busy) button.setAttribute('aria-disabled', 'true');
    else button.removeAttribute('aria-disabled');
  }
}

// Runs one key action: clears the card's error, shows the server's message on failure, then reloads.
export async function keyAction(card, run) {
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

export function saveKey(card) {
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

export function savedMessage(name, summary) {
  const status = summary && summary.status;
  if (!status || status === 'active') return 'Saved. ' + name + ' accepted the key.';
  if (status === 'unverified') return 'Saved. The key is not verified yet; use Verify key to check it.';
  return 'Saved. ' + name + ' reports: ' + (KEY_STATUS_WORDS[status] || status) + '.';
}

export function verifyKey(card) {
  keyAction(card, async () => {
    const summary = await api('POST', '/v1/keys/' + encodeURIComponent(card.id) + '/verify');
    const status = summary && summary.status;
    announce(status === 'active'
      ? card.name + ' accepted the key.'
      : 'Checked your ' + card.name + ' key: ' + (KEY_STATUS_WORDS[status] || status) + '.');
  });
}

// Deleting needs a second click within a few seconds instead of a confirm() prompt.
export function onDeleteClick(card) {
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

export function resetDelete(card) {
  clearTimeout(card.confirmTimer);
  card.confirmTimer = null;
  card.del.textContent = 'Delete key';
  card.del.classList.remove('confirming');
}
