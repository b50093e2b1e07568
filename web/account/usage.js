/* Usage and cost over the last days, and the cost estimate with its cheapest models. */

import { $, announce, el, showError } from './dom.js';
import { SOURCE_NAMES, formatCents, formatDay, formatEstimate, formatPerMtok, num, numberFormat, providerName, requestCount } from './format.js';
import { api, load, session } from './api.js';

export const DAY_MS = 86400000;


export function loadUsage() {
  return load('/v1/usage?days=30', 'usage-error', renderUsage);
}

export function renderUsage(data) {
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
export function dayRange(dataDays, days) {
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

export function renderUsageChart(daily, days) {
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

export function renderUsageTable(rows, total) {
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

export async function onEstimate(event) {
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

export function renderRecommendations(data) {
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
