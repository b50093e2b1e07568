/* What the page says: names, sentences and number, money and date formats. */

export const KEY_STATUS_WORDS = {
  active: 'Active',
  unverified: 'Not verified yet',
  invalid: 'Invalid — replace it',
  quota_exceeded: 'Out of quota — add credit',
  rate_limited: 'Rate limited',
};
export const MODE_SENTENCES = {
  byok_first: 'Your own keys are used first; platform credits when you have none.',
  credit_first: 'Platform credits are used first; your own keys when credits run out.',
  byok_only: 'AI features use your own keys only.',
  byok_disabled: 'AI features use platform credits.',
};
export const PLAN_NAMES = { free: 'Free', premium: 'Premium', lifetime: 'Lifetime' };
export const SOURCE_NAMES = { byok: 'Your key', internal: 'Platform credits' };
// Display names, refined from /v1/status and /v1/providers as they arrive.
export const providerNames = new Map([['openai', 'OpenAI'], ['anthropic', 'Anthropic']]);
export const numberFormat = new Intl.NumberFormat('en-US');
export const moneyFormat = new Intl.NumberFormat('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });

export const num = (value) => (Number.isFinite(Number(value)) ? Number(value) : 0);
export const providerName = (id) => providerNames.get(id) || String(id);

export function formatCents(cents) {
  const value = num(cents);
  if (value > 0 && value < 1) return '< $0.01';
  return (value < 0 ? '-$' : '$') + moneyFormat.format(Math.abs(value) / 100);
}

// Estimates are often fractions of a cent: keep at least 4 decimals and about 3 significant digits.
export function formatEstimate(cents) {
  const dollars = num(cents) / 100;
  if (dollars === 0) return '$0.00';
  if (Math.abs(dollars) >= 1) return '$' + moneyFormat.format(dollars);
  const decimals = Math.min(10, Math.max(4, 2 - Math.floor(Math.log10(Math.abs(dollars)))));
  return '$' + dollars.toFixed(decimals);
}

export function formatPerMtok(usd) {
  return '$' + new Intl.NumberFormat('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 4 }).format(num(usd));
}

export const requestCount = (n) => numberFormat.format(n) + (n === 1 ? ' request' : ' requests');

export function formatTime(rfc3339) {
  const date = new Date(rfc3339);
  if (!rfc3339 || Number.isNaN(date.getTime())) return '';
  return new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' }).format(date);
}

export function formatDay(isoDay) {
  const date = new Date(isoDay + 'T00:00:00Z');
  return new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', timeZone: 'UTC' }).format(date);
}
