/* Spending caps: each cap of the user's plan as a bar (spent of limit), and when it starts over. */

import { $, el } from './dom.js';
import { formatCents, num } from './format.js';
import { load } from './api.js';

const CAPS = [['daily', 'Today'], ['monthly', 'This month']];

export function loadBudget() {
  return load('/v1/budget', 'budget-error', renderBudget);
}

export function renderBudget(budget) {
  const credits = budget.credits || {};
  const rows = CAPS.filter(([key]) => credits[key]).map(([key, label]) => capRow(label, credits[key]));
  $('budget-caps').replaceChildren(...rows);
  $('budget').hidden = rows.length === 0;
  const alerts = Array.isArray(budget.alerts_at_percent) ? budget.alerts_at_percent : [];
  $('budget-alerts').textContent = alerts.length
    ? 'You are notified at ' + alerts.map((p) => p + '%').join(', ') + ' of each cap.'
    : '';
}

function capRow(label, cap) {
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
  bar.setAttribute('aria-label', label + ' spending cap');
  return el('div', { class: 'cap' }, el('p', { class: 'cap-caption', text: caption }), bar);
}
