/* Spending caps, on platform credits and on what the user's own API keys spend: each cap in force as a bar
 * (spent of limit) with when it starts over, and the caps the user sets for themselves (in dollars here, whole
 * cents on the wire), up to what their plan allows. */

import { $, announce, el, showError } from './dom.js';
import { formatCents, num } from './format.js';
import { api, load } from './api.js';

const CAPS = [['daily', 'Today'], ['monthly', 'This month']];
// Each kind of spending a cap can limit: its key in /v1/budget, its heading, and its form fields' prefix.
const KINDS = [['credits', 'Platform credits', 'budget-'], ['own_keys', 'Your own API keys', 'budget-own-']];

export function loadBudget() {
  return load('/v1/budget', 'budget-error', renderBudget);
}

export function renderBudget(budget) {
  const groups = KINDS.map(([kind, heading]) => {
    const caps = budget[kind] || {};
    const rows = CAPS.filter(([key]) => caps[key]).map(([key, label]) => capRow(label, heading, caps[key]));
    return rows.length ? el('div', { class: 'cap-group', 'data-kind': kind }, el('h3', { text: heading }), ...rows) : null;
  }).filter(Boolean);
  $('budget-caps').replaceChildren(...groups);
  // Caps are set up on this platform when it notifies at some share of them.
  const alerts = Array.isArray(budget.alerts_at_percent) ? budget.alerts_at_percent : [];
  $('budget').hidden = alerts.length === 0;
  $('budget-alerts').textContent = alerts.length
    ? 'You are notified at ' + alerts.map((p) => p + '%').join(', ') + ' of each cap.'
    : '';
  for (const [kind, , prefix] of KINDS) {
    const yours = (budget.yours && budget.yours[kind]) || {};
    const ceilings = (budget.ceilings && budget.ceilings[kind]) || {};
    for (const [key, period] of [['daily', 'day'], ['monthly', 'month']]) {
      const cents = yours[key + '_cents'];
      $(prefix + key).value = cents === null || cents === undefined ? '' : (num(cents) / 100).toFixed(2);
      const ceiling = ceilings[key + '_cents'];
      $(prefix + key + '-hint').textContent = (ceiling === null || ceiling === undefined)
        ? 'Empty: your plan\'s default.'
        : 'Empty: your plan\'s default. Your plan allows at most ' + formatCents(ceiling) + ' a ' + period + '.';
    }
  }
}

// Dollars as typed ("12.5") to whole cents; empty means the plan's default.
function centsOf(id) {
  const raw = $(id).value.trim();
  if (raw === '') return null;
  const dollars = Number(raw);
  if (!Number.isFinite(dollars) || dollars < 0) throw new Error('Enter an amount in dollars, such as 5 or 12.50.');
  return Math.round(dollars * 100);
}

async function saveCaps(event) {
  event.preventDefault();
  const button = $('budget-save');
  if (button.getAttribute('aria-disabled') === 'true') return;
  button.setAttribute('aria-disabled', 'true');
  try {
    const caps = Object.fromEntries(KINDS.map(([kind, , prefix]) =>
      [kind, { daily_cents: centsOf(prefix + 'daily'), monthly_cents: centsOf(prefix + 'monthly') }]));
    renderBudget((await api('PUT', '/v1/budget', caps)) || {});
    showError('budget-error', null);
    announce('Your spending caps are saved.');
  } catch (error) {
    showError('budget-error', error);
  } finally {
    button.removeAttribute('aria-disabled');
  }
}

export function initBudget() {
  $('budget-form').addEventListener('submit', saveCaps);
}

function capRow(label, heading, cap) {
  const limit = num(cap.limit_cents);
  const spent = num(cap.spent_cents);
  const percent = limit > 0 ? Math.min(100, Math.round((spent / limit) * 100)) : 100;
  const resets = new Date(cap.resets_at);
  const when = Number.isNaN(resets.getTime()) ? '' : ' · starts over ' + resets.toLocaleString();
  const caption = label + ': ' + formatCents(spent) + ' of ' + formatCents(limit) + ' (' + percent + '%)' + when;
  const fill = el('div', { class: 'cap-fill' });
  fill.style.width = percent + '%'; // through the CSSOM: the page's CSP refuses style attributes
  const bar = el('div', { class: 'cap-bar' + (percent >= 80 ? ' cap-bar-high' : '') }, fill);
  bar.setAttribute('role', 'progressbar');
  bar.setAttribute('aria-valuemin', '0');
  bar.setAttribute('aria-valuemax', '100');
  bar.setAttribute('aria-valuenow', String(percent));
  bar.setAttribute('aria-label', heading + ', ' + label.toLowerCase() + ': spending cap');
  return el('div', { class: 'cap' }, el('p', { class: 'cap-caption', text: caption }), bar);
}
