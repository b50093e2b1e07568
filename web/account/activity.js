/* Recent requests (GET /v1/calls: every call, failed ones with the reason, who paid and what it cost) and
 * background requests (GET /v1/jobs), where a failed or paused one can be retried. */

import { $, announce, el, showError } from './dom.js';
import { SOURCE_NAMES, formatEstimate, formatTime, num, numberFormat, providerName } from './format.js';
import { api, load, session } from './api.js';

const CALLS_PAGE = 20;
const JOBS_PAGE = 20;
// What a user can do about the codes they will meet most; the rest show the code itself.
export const CALL_OUTCOMES = {
  budget_exceeded: 'Refused: a spending cap',
  insufficient_credits: 'Refused: not enough credits',
  no_credits_or_key: 'Refused: no credits or key',
  rate_limited: 'Refused: too many requests',
  platform_budget_exhausted: 'Refused: platform paused for today',
  provider_refused_request: 'Refused by the provider',
  provider_key_invalid: 'Your key was rejected',
  provider_quota_exhausted: 'Your provider account is out of quota',
  provider_rate_limited: 'Provider rate limit',
  ai_timeout: 'Timed out (charged)',
  upstream_error: 'Broke off (charged)',
  upstream_stream_interrupted: 'Stream broke off',
  ai_unavailable: 'Provider unavailable',
  service_tier_not_available: 'Refused: priority needs your own key',
  too_many_concurrent_calls: 'Refused: too many at once',
  gateway_busy: 'Refused: service busy',
};
export const JOB_STATUS_WORDS = {
  queued: 'Queued', running: 'Running', paused: 'Paused', succeeded: 'Done', failed: 'Failed', cancelled: 'Cancelled',
};
const RETRYABLE = new Set(['failed', 'paused']);

// `paged`: the user opened older pages, which a refresh of the first one would take away.
export const activity = { callsNext: null, jobsNext: null, callsPaged: false, jobsPaged: false };

export function loadActivity() {
  resetActivity();
  return refreshActivity();
}

// The first pages again (on the page's poll), except a list the user is reading older pages of.
export function refreshActivity() {
  return Promise.all([
    activity.callsPaged ? null : load('/v1/calls?limit=' + CALLS_PAGE, 'calls-error', (page) => renderCalls(page, false)),
    activity.jobsPaged ? null : load('/v1/jobs?limit=' + JOBS_PAGE, 'jobs-error', (page) => renderJobs(page, false)),
  ]);
}

export function callOutcome(call) {
  if (!call.error_code) return 'OK';
  return CALL_OUTCOMES[call.error_code] || 'Failed: ' + String(call.error_code);
}

export function renderCalls(page, more) {
  const calls = Array.isArray(page.calls) ? page.calls : [];
  const rows = calls.map((call) => el('tr', { 'data-testid': 'call-row', class: call.error_code ? 'failed' : null },
    el('td', { text: formatTime(call.at) }),
    el('td', null, el('span', { text: String(call.model || '') }),
      el('span', { class: 'muted small', text: ' ' + providerName(call.provider) })),
    el('td', { text: call.source ? (SOURCE_NAMES[call.source] || String(call.source)) : '—' }),
    el('td', { class: call.error_code ? 'error-text' : null, 'data-testid': 'call-outcome', text: callOutcome(call),
      title: call.error_code ? String(call.error_code) + ' (HTTP ' + num(call.status) + ')' : null }),
    el('td', { class: 'num', text: numberFormat.format(num(call.prompt_tokens) + num(call.completion_tokens)) }),
    el('td', { class: 'num', text: formatEstimate(call.cost_cents) })));
  if (more) $('calls-body').append(...rows);
  else $('calls-body').replaceChildren(...rows);
  const empty = $('calls-body').children.length === 0;
  $('calls-empty').hidden = !empty;
  $('calls-table').hidden = empty;
  activity.callsNext = typeof page.next === 'string' ? page.next : null;
  $('calls-more').hidden = !activity.callsNext;
  const kept = page.kept || {};
  $('calls-kept').textContent = kept.days
    ? 'Kept for ' + num(kept.days) + ' days, your last ' + numberFormat.format(num(kept.calls)) + ' requests at most.'
    : '';
}

export function renderJobs(page, more) {
  const jobs = Array.isArray(page.jobs) ? page.jobs : [];
  const items = jobs.map((job) => {
    const error = job.error && job.error.message ? String(job.error.message) : '';
    const item = el('li', { 'data-testid': 'job-row', 'data-status': String(job.status) },
      el('span', { class: 'tag tag-job-' + String(job.status), text: JOB_STATUS_WORDS[job.status] || String(job.status) }), ' ',
      el('span', { class: 'job-model', text: String(job.model || '') }), ' ',
      el('span', { class: 'muted small', text: formatTime(job.created_at) }),
      error ? el('p', { class: 'error-text small', text: error }) : null);
    if (RETRYABLE.has(job.status)) {
      item.append(el('button', { type: 'button', class: 'button small', 'data-job': String(job.id), text: 'Retry',
        'aria-label': 'Retry the ' + String(job.model || '') + ' request from ' + formatTime(job.created_at) }));
    }
    return item;
  });
  if (more) $('jobs-list').append(...items);
  else $('jobs-list').replaceChildren(...items);
  const empty = $('jobs-list').children.length === 0;
  $('jobs').hidden = empty; // most users never queue one
  activity.jobsNext = typeof page.next === 'string' ? page.next : null;
  $('jobs-more').hidden = !activity.jobsNext;
}

async function onRetry(event) {
  const button = event.target.closest('button[data-job]');
  if (!button || button.getAttribute('aria-disabled') === 'true') return;
  const gen = session.gen;
  button.setAttribute('aria-disabled', 'true');
  try {
    const job = await api('POST', '/v1/jobs/' + encodeURIComponent(button.dataset.job) + '/retry');
    if (gen !== session.gen) return;
    showError('jobs-error', null);
    const item = button.closest('li');
    item.dataset.status = job.status;
    item.querySelector('.tag').textContent = JOB_STATUS_WORDS[job.status] || String(job.status);
    item.querySelector('.tag').className = 'tag tag-job-' + String(job.status);
    button.remove();
    announce('The request is queued again.');
  } catch (error) {
    if (gen === session.gen) showError('jobs-error', error);
    button.removeAttribute('aria-disabled');
  }
}

export function initActivity() {
  $('calls-more').addEventListener('click', () => {
    if (!activity.callsNext) return;
    activity.callsPaged = true;
    load('/v1/calls?limit=' + CALLS_PAGE + '&after=' + encodeURIComponent(activity.callsNext), 'calls-error',
      (page) => renderCalls(page, true));
  });
  $('jobs-more').addEventListener('click', () => {
    if (!activity.jobsNext) return;
    activity.jobsPaged = true;
    load('/v1/jobs?limit=' + JOBS_PAGE + '&after=' + encodeURIComponent(activity.jobsNext), 'jobs-error',
      (page) => renderJobs(page, true));
  });
  $('jobs-list').addEventListener('click', onRetry);
}

export function resetActivity() {
  $('calls-body').replaceChildren();
  $('jobs-list').replaceChildren();
  $('calls-more').hidden = true;
  $('jobs-more').hidden = true;
  $('jobs').hidden = true;
  Object.assign(activity, { callsNext: null, jobsNext: null, callsPaged: false, jobsPaged: false });
}
