/* Notifications: the list, the unread count, and marking read once seen. */

import { $, appendLinkified, el } from './dom.js';
import { formatTime, num } from './format.js';
import { POLL_MS, api, load, session } from './api.js';
import { loadAccountAndKeys } from './keys.js';

export const notif = { items: [], signature: '', observer: null, onScreen: new Map(), requested: new Set(), readIds: new Set() };


export function loadNotifications() {
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

export const isUnread = (n) => n.read !== true && !notif.readIds.has(n.id);

export function renderNotifications(list) {
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

export function updateNotificationCount() {
  const count = notif.items.filter(isUnread).length;
  $('notification-count').textContent = String(count);
  $('notification-badge').hidden = count === 0;
}

// An unread notification counts as seen once half of it (or half the screen) is visible in a visible tab.
export function watchUntilSeen(li) {
  if (!('IntersectionObserver' in window)) {
    markRead(li);
    return;
  }
  if (!notif.observer) notif.observer = new IntersectionObserver(onIntersect, { threshold: [0, 0.5, 1] });
  notif.observer.observe(li);
}

export function onIntersect(entries) {
  for (const entry of entries) {
    const viewport = entry.rootBounds ? entry.rootBounds.height : window.innerHeight;
    const seen = entry.isIntersecting
      && (entry.intersectionRatio >= 0.5 || entry.intersectionRect.height >= viewport / 2);
    if (seen) notif.onScreen.set(entry.target.dataset.notificationId, entry.target);
    else notif.onScreen.delete(entry.target.dataset.notificationId);
  }
  markVisible();
}

export function markVisible() {
  if (document.visibilityState !== 'visible') return; // a background tab has not been read
  for (const [id, li] of notif.onScreen) {
    notif.onScreen.delete(id);
    if (notif.observer) notif.observer.unobserve(li);
    markRead(li);
  }
}

export async function markRead(li) {
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
