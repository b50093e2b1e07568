/* Small DOM helpers: every server string becomes a Text node; only http(s) URLs become links. */

export const $ = (id) => document.getElementById(id);


// Creates an element. Children that are strings become Text nodes, so data can never become markup.
export function el(tag, props, ...children) {
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
export function safeHttpUrl(raw) {
  try {
    const url = new URL(String(raw), window.location.href);
    return url.protocol === 'https:' || url.protocol === 'http:' ? url.href : null;
  } catch (_) {
    return null;
  }
}

export function externalLink(href, text) {
  return el('a', { href, target: '_blank', rel: 'noopener noreferrer' }, text,
    el('span', { class: 'sr-only', text: ' (opens in a new tab)' }));
}

// Plain text with http(s) URLs turned into links, built node by node (no innerHTML).
export function appendLinkified(parent, text) {
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
export function announce(message) {
  const region = $('live-status');
  announceTimers.forEach(clearTimeout);
  region.textContent = '';
  announceTimers = [
    setTimeout(() => { region.textContent = message; }, 50),
    setTimeout(() => { region.textContent = ''; }, 10000),
  ];
}

export function showError(id, error) { $(id).textContent = error ? error.message : ''; }
