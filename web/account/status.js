/* Provider status: the banner when a provider (or AI as a whole) is in trouble. */

import { $ } from './dom.js';
import { providerName, providerNames } from './format.js';
import { api, session } from './api.js';

export async function loadStatus() {
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

export function renderStatus(status) {
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
