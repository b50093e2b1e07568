// The account page's ES modules link (every import names an export that exists) and evaluate, checked here in
// a second rather than found by the browser test minutes later. The page itself runs in the browser test.
import { test } from 'node:test';
import assert from 'node:assert/strict';

test('the account page modules link, evaluate, and wait for the document before starting', async () => {
  const awaited = [];
  globalThis.document = {
    readyState: 'loading',
    addEventListener: (type) => awaited.push(type),
    getElementById: () => null,
    querySelector: () => null,
  };
  globalThis.window = { addEventListener() {}, location: { href: 'http://localhost/account' }, parent: null };
  const api = await import('../api.js');
  await import('../account.js');
  assert.deepEqual(awaited, ['DOMContentLoaded']);
  assert.equal(api.session.access, null, 'no token before a sign-in');
  assert.equal(typeof api.whenSessionEnds, 'function');
});
