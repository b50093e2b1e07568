/*
 * Real-browser end-to-end test of the end-user account page (/account), served by the real sidecar binary,
 * backed by a real Directus 12.4.0 and an in-process fake OpenAI, driven through headless Chromium.
 *
 * ONE user story, step by step, asserting what the user sees: sign-in (wrong password, then right), saving a
 * key the provider refuses and then a good one, usage chart and table, a revoked key (notification + Invalid),
 * a provider outage (status banner), deleting the key, the page at phone width, and, throughout, no console
 * error, no CSP violation, no token in storage, cookies or URLs.
 *
 * How puppeteer-core is loaded (ESM ignores NODE_PATH): with
 *     createRequire(process.env.BROWSER_NODE_MODULES + '/')('puppeteer-core')
 * BROWSER_NODE_MODULES is the node_modules directory that scripts/browser-deps.sh installs puppeteer-core into
 * and prints on its last line. (If it is unset, each NODE_PATH entry is tried the same way.)
 *
 * Run (from the repository root):
 *     BROWSER_NODE_MODULES="$(scripts/browser-deps.sh | tail -n 1)" node --test tests/browser/
 *
 * Environment:
 *   BROWSER_NODE_MODULES  see above (required unless NODE_PATH holds puppeteer-core).
 *   CHROMIUM              the browser (default /usr/bin/chromium); run headless with --no-sandbox.
 *   BYOK_SIDECAR_BIN      the sidecar binary (default <repo>/target/debug/byok-bridge), started here with `serve`.
 *   BYOK_E2E_INSTANCE     instance.env of a running Directus made by scripts/directus-up.sh. Given: that Directus
 *                         is used and never started or stopped here. Not given: this test starts its own with
 *                         scripts/directus-up.sh in a temporary directory and stops it at the end.
 *   BYOK_E2E_SIDECAR_ADDR HOST:PORT for the sidecar (optional). Default: the port of BYOK_BRIDGE_URL in the
 *                         instance's .env (where its hook posts), else a free port.
 *   BYOK_SCREENSHOT_DIR   where account-desktop.png, account-phone.png and account-banner.png go (default: a
 *                         temporary directory, printed). A failing step also leaves failure-<step>.png there.
 */

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

const GOOD_KEY = 'sk-proj-FAKE-browser-good-key-not-real-AbCd';
const REFUSED_KEY = 'sk-proj-FAKE-browser-refused-not-real-Zz00';
const REVOKED_KEY = 'sk-proj-FAKE-browser-revoked-not-real-WxYz';
const INTERNAL_KEY = 'sk-internal-browser-0000000000000000';
const MODEL = 'gpt-4o-mini';
const BYOK_CALLS = 3;

/* ------------------------------------------------------------------------------------------------ */
/* puppeteer-core                                                                                   */
/* ------------------------------------------------------------------------------------------------ */

function loadPuppeteer() {
  const dirs = [process.env.BROWSER_NODE_MODULES, ...(process.env.NODE_PATH || '').split(path.delimiter)]
    .filter(Boolean);
  for (const dir of dirs) {
    try {
      return createRequire(path.resolve(dir) + '/')('puppeteer-core');
    } catch (error) {
      if (error.code !== 'MODULE_NOT_FOUND') throw error;
    }
  }
  throw new Error('puppeteer-core not found: run the test as\n'
    + '  BROWSER_NODE_MODULES="$(scripts/browser-deps.sh | tail -n 1)" node --test tests/browser/');
}

/* ------------------------------------------------------------------------------------------------ */
/* small helpers                                                                                    */
/* ------------------------------------------------------------------------------------------------ */

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function portFree(port) {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

function readEnvFile(file) {
  const vars = {};
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const at = line.indexOf('=');
    if (at > 0 && !line.startsWith('#')) vars[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return vars;
}

/** JSON request; returns { status, headers, body } (body parsed when it is JSON). Bounded by a timeout. */
async function request(method, url, { token, body, timeoutMs = 20000 } = {}) {
  const headers = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await response.text();
  let parsed = text;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch (_) {
    // not JSON: keep the text
  }
  return { status: response.status, headers: response.headers, body: parsed };
}

/** Polls `probe` (bounded) until it returns a truthy value, which is returned; else throws with `describe()`. */
async function pollUntil(what, probe, { timeoutMs, intervalMs }) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await probe();
    if (last) return last;
    await sleep(intervalMs);
  }
  throw new Error(`${what}: not reached within ${timeoutMs} ms`);
}

function tail(file, lines = 40) {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch (_) {
    return `(no ${file})`;
  }
}

/* ------------------------------------------------------------------------------------------------ */
/* fake OpenAI                                                                                      */
/* ------------------------------------------------------------------------------------------------ */

/**
 * A fake of the OpenAI API the sidecar talks to (OPENAI_BASE_URL = http://127.0.0.1:PORT/v1), in real OpenAI
 * JSON shapes. Switches: `refusedKeys` fail the key check (GET /v1/models: 401); `revokedKeys` pass it but
 * fail chat completions (401); `outage` answers 503 to everything. Every call is recorded with the key it used.
 */
function startFakeOpenAI() {
  const fake = {
    outage: false,
    refusedKeys: new Set([REFUSED_KEY]),
    revokedKeys: new Set([REVOKED_KEY]),
    calls: [],
    server: null,
    port: 0,
  };
  const send = (res, status, body, headers = {}) => {
    res.writeHead(status, { 'content-type': 'application/json', 'x-request-id': `req_${randomBytes(8).toString('hex')}`, ...headers });
    res.end(JSON.stringify(body));
  };
  const openaiError = (message, type, code) => ({ error: { message, type, param: null, code } });
  fake.server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      const auth = req.headers.authorization || '';
      const key = auth.startsWith('Bearer ') ? auth.slice('Bearer '.length) : '';
      const url = new URL(req.url, 'http://fake');
      let body = null;
      try {
        body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : null;
      } catch (_) {
        body = null;
      }
      fake.calls.push({ method: req.method, path: url.pathname, key, model: body && body.model, at: Date.now() });

      if (fake.outage) {
        return send(res, 503, openaiError('The server is overloaded or not ready yet.', 'server_error', null));
      }
      if (!key) {
        return send(res, 401, openaiError('You didn\'t provide an API key.', 'invalid_request_error', null));
      }
      if (req.method === 'GET' && url.pathname === '/v1/models') {
        if (fake.refusedKeys.has(key)) {
          return send(res, 401, openaiError(`Incorrect API key provided: ${key.slice(0, 6)}****${key.slice(-4)}.`,
            'invalid_request_error', 'invalid_api_key'));
        }
        return send(res, 200, {
          object: 'list',
          data: [
            { id: 'gpt-4o-mini', object: 'model', created: 1721172741, owned_by: 'system' },
            { id: 'gpt-4o', object: 'model', created: 1715367049, owned_by: 'system' },
          ],
        });
      }
      if (req.method === 'POST' && url.pathname === '/v1/chat/completions') {
        if (fake.refusedKeys.has(key) || fake.revokedKeys.has(key)) {
          return send(res, 401, openaiError(`Incorrect API key provided: ${key.slice(0, 6)}****${key.slice(-4)}.`,
            'invalid_request_error', 'invalid_api_key'));
        }
        const model = (body && body.model) || MODEL;
        const usage = { prompt_tokens: 1200, completion_tokens: 300, total_tokens: 1500 };
        const id = `chatcmpl-${randomBytes(12).toString('hex')}`;
        const created = Math.floor(Date.now() / 1000);
        if (body && body.stream === true) {
          res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
          const chunk = (choices, extra = {}) => `data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created, model, choices, ...extra })}\n\n`;
          res.write(chunk([{ index: 0, delta: { role: 'assistant', content: 'Hello' }, finish_reason: null }]));
          res.write(chunk([{ index: 0, delta: { content: ' there!' }, finish_reason: null }]));
          res.write(chunk([{ index: 0, delta: {}, finish_reason: 'stop' }]));
          res.write(chunk([], { usage }));
          res.end('data: [DONE]\n\n');
          return undefined;
        }
        return send(res, 200, {
          id,
          object: 'chat.completion',
          created,
          model,
          choices: [{ index: 0, message: { role: 'assistant', content: 'Hello there!', refusal: null }, logprobs: null, finish_reason: 'stop' }],
          usage,
          system_fingerprint: 'fp_browser_test',
        });
      }
      return send(res, 404, openaiError(`Unknown request URL: ${req.method} ${url.pathname}.`, 'invalid_request_error', 'unknown_url'));
    });
  });
  return new Promise((resolve, reject) => {
    fake.server.on('error', reject);
    fake.server.listen(0, '127.0.0.1', () => {
      fake.port = fake.server.address().port;
      resolve(fake);
    });
  });
}

/* ------------------------------------------------------------------------------------------------ */
/* environment: Directus, sidecar, browser                                                          */
/* ------------------------------------------------------------------------------------------------ */

const env = {
  tmp: null,
  screenshots: null,
  instance: null, // vars of instance.env
  ownDirectusDir: null, // set when this test started Directus
  fake: null,
  sidecar: null, // child process
  sidecarUrl: null,
  sidecarLog: null,
  browser: null,
  page: null,
  pollMs: 30000,
  user: null, // { id, email, password }
  failed: false,
};

// Seen in the browser, for the end-of-story checks.
const seen = {
  consoleErrors: [], // { page, text, url }
  pageErrors: [],
  cspViolations: [],
  requestUrls: [],
  navigations: [],
  failedRequests: [],
  tokens: new Set(), // every token the page received from /v1/auth/login
  expectedHttpErrors: [], // { path, status }: failed fetches the story causes on purpose
};

function directus(pathname) {
  return `${env.instance.DIRECTUS_URL}${pathname}`;
}

async function startOwnDirectus(sidecarPort) {
  const dir = path.join(env.tmp, 'directus');
  const port = await freePort();
  const result = spawnSync(path.join(REPO, 'scripts/directus-up.sh'),
    ['--dir', dir, '--port', String(port), '--bridge-url', `http://127.0.0.1:${sidecarPort}`],
    { encoding: 'utf8', timeout: 240000, stdio: ['ignore', 'pipe', 'pipe'] });
  env.ownDirectusDir = dir; // stop it even if the script failed half-way
  if (result.status !== 0) {
    throw new Error(`scripts/directus-up.sh failed (status ${result.status}):\n${(result.stderr || '').slice(-3000)}`);
  }
  return result.stdout.trim().split('\n').pop();
}

/** Which address the sidecar listens on: given, the instance hook's target, or a free port. */
async function sidecarPortFor(instanceFile) {
  const given = process.env.BYOK_E2E_SIDECAR_ADDR;
  if (given) return Number(given.split(':').pop());
  if (instanceFile) {
    try {
      const hookTarget = readEnvFile(path.join(path.dirname(instanceFile), '.env')).BYOK_BRIDGE_URL;
      const port = hookTarget && Number(new URL(hookTarget).port);
      if (port && (await portFree(port))) return port;
    } catch (_) {
      // not readable: any free port (the hook's flag webhooks then go nowhere, which this story does not need)
    }
  }
  return freePort();
}

/** The BYOK-first defaults (BYOK on, credits as fallback); only flags that differ are written. */
async function ensureByokFirstFlags() {
  const wanted = { byok_enabled: true, byok_only_mode: false, byok_uses_internal_credits: false };
  const admin = env.instance.DIRECTUS_ADMIN_TOKEN;
  const listed = await request('GET', directus('/items/feature_flags?fields=id,key,is_enabled&limit=-1'), { token: admin });
  assert.equal(listed.status, 200, `list flags: ${JSON.stringify(listed.body)}`);
  for (const [key, value] of Object.entries(wanted)) {
    const flag = listed.body.data.find((f) => f.key === key);
    assert.ok(flag, `flag ${key} exists`);
    if (flag.is_enabled !== value) {
      const patched = await request('PATCH', directus(`/items/feature_flags/${flag.id}`), { token: admin, body: { is_enabled: value } });
      assert.equal(patched.status, 200, `PATCH ${key}`);
    }
  }
}

async function createUser() {
  const admin = env.instance.DIRECTUS_ADMIN_TOKEN;
  const email = `browser-${randomBytes(6).toString('hex')}@example.com`;
  const password = randomBytes(18).toString('base64url');
  const created = await request('POST', directus('/users'), {
    token: admin,
    body: { email, password, status: 'active', subscription_tier: 'premium' },
  });
  assert.equal(created.status, 200, `create user: ${JSON.stringify(created.body)}`);
  const id = created.body.data.id;
  const granted = await request('POST', directus('/items/credit_transactions'), {
    token: admin,
    body: { user: id, transaction_type: 'grant', service_type: 'browser-test', cost_cents: '500' },
  });
  assert.equal(granted.status, 200, `grant credits: ${JSON.stringify(granted.body)}`);
  return { id, email, password };
}

async function startSidecar(port) {
  const bin = process.env.BYOK_SIDECAR_BIN || path.join(REPO, 'target/debug/byok-bridge');
  assert.ok(fs.existsSync(bin), `sidecar binary ${bin} is missing (build it, or set BYOK_SIDECAR_BIN)`);
  const dataDir = path.join(env.tmp, 'sidecar-data');
  fs.mkdirSync(dataDir, { recursive: true });
  env.sidecarLog = path.join(env.tmp, 'sidecar.log');
  const log = fs.openSync(env.sidecarLog, 'a');
  env.sidecarUrl = `http://127.0.0.1:${port}`;
  const childEnv = {
    PATH: process.env.PATH || '/usr/bin:/bin',
    BIND_ADDR: `127.0.0.1:${port}`,
    DIRECTUS_URL: env.instance.DIRECTUS_URL,
    DIRECTUS_TOKEN: env.instance.DIRECTUS_TOKEN,
    DIRECTUS_SECRET: env.instance.DIRECTUS_SECRET,
    WEBHOOK_SECRET: env.instance.WEBHOOK_SECRET,
    ENCRYPTION_KEY: randomBytes(32).toString('hex'),
    OPENAI_BASE_URL: `http://127.0.0.1:${env.fake.port}/v1`,
    ANTHROPIC_BASE_URL: `http://127.0.0.1:${env.fake.port}`, // never called in this story; kept local
    INTERNAL_OPENAI_API_KEY: INTERNAL_KEY,
    DATA_DIR: dataDir,
    PUBLIC_URL: env.sidecarUrl,
    CIRCUIT_FAILURE_THRESHOLD: '1',
    UPSTREAM_DEADLINE_SECS: '1',
    // Caps for the story's premium user: the page shows them as bars.
    BUDGET_PREMIUM: 'credits.daily=500,credits.monthly=5000',
    // The platform's own budget for the day: the operations panel shows its spending.
    PLATFORM_DAILY_BUDGET_CENTS: '100000',
    CIRCUIT_COOL_DOWN_SECS: '300',
    RUST_LOG: 'info',
    // What the admins' Insights panel asks the sidecar with (Directus holds the same value).
    ...(env.instance.OPERATOR_TOKEN ? { OPERATOR_TOKEN: env.instance.OPERATOR_TOKEN } : {}),
  };
  const child = spawn(bin, ['serve'], { env: childEnv, stdio: ['ignore', log, log] });
  fs.closeSync(log);
  env.sidecar = child;
  let exited = null;
  child.on('exit', (code, signal) => { exited = { code, signal }; });
  await pollUntil('sidecar /readyz reports ready', async () => {
    if (exited) throw new Error(`the sidecar exited (${JSON.stringify(exited)}) during start-up:\n${tail(env.sidecarLog)}`);
    try {
      const ready = await request('GET', `${env.sidecarUrl}/readyz`, { timeoutMs: 2000 });
      return ready.body && ready.body.status === 'ready';
    } catch (_) {
      return false;
    }
  }, { timeoutMs: 30000, intervalMs: 100 });
}

async function stopSidecar() {
  const child = env.sidecar;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await gone;
  clearTimeout(timer);
}

// Last resort if the runner dies: never leave the sidecar behind.
process.on('exit', () => {
  if (env.sidecar && env.sidecar.exitCode === null && env.sidecar.signalCode === null) env.sidecar.kill('SIGKILL');
});

/** Records what the browser reports; call before the first navigation. */
async function watchPage(page, label) {
  page.on('console', (message) => {
    const type = message.type();
    if (type !== 'error' && type !== 'assert') return;
    const entry = { page: label, text: message.text(), url: (message.location() && message.location().url) || '' };
    seen.consoleErrors.push(entry);
    if (/Content Security Policy|CSP violation/i.test(entry.text)) seen.cspViolations.push(entry);
  });
  page.on('pageerror', (error) => seen.pageErrors.push(`${label}: ${error.message}`));
  page.on('request', (req) => seen.requestUrls.push(req.url()));
  page.on('requestfailed', (req) => {
    const reason = req.failure() ? req.failure().errorText : 'failed';
    if (reason !== 'net::ERR_ABORTED') seen.failedRequests.push(`${req.method()} ${req.url()}: ${reason}`);
  });
  page.on('framenavigated', (frame) => {
    if (frame === page.mainFrame()) seen.navigations.push(frame.url());
  });
  page.on('response', async (response) => {
    if (new URL(response.url()).pathname !== '/v1/auth/login' || !response.ok()) return;
    try {
      const tokens = await response.json();
      for (const name of ['access_token', 'refresh_token']) if (tokens[name]) seen.tokens.add(tokens[name]);
    } catch (_) {
      // the body may be gone after a navigation; the page's own requests are checked regardless
    }
  });
  // Reported through the console, so a violation is also a console error.
  await page.evaluateOnNewDocument(() => {
    document.addEventListener('securitypolicyviolation', (event) => {
      console.error(`CSP violation: ${event.violatedDirective} blocked ${event.blockedURI || 'inline'} `
        + `(${event.sourceFile || '?'}:${event.lineNumber || 0})`);
    });
  });
}

/** Console errors the story does not cause on purpose (Chrome logs every failed fetch as one). */
function unexpectedConsoleErrors() {
  return seen.consoleErrors.filter((entry) => {
    const failed = /^Failed to load resource: the server responded with a status of (\d+)/.exec(entry.text);
    if (!failed || !entry.url) return true;
    const status = Number(failed[1]);
    const { pathname } = new URL(entry.url);
    return !seen.expectedHttpErrors.some((e) => e.path === pathname && e.status === status);
  });
}

/* ------------------------------------------------------------------------------------------------ */
/* page helpers                                                                                     */
/* ------------------------------------------------------------------------------------------------ */

/** Waits (bounded) until the text of `selector` matches `pattern`; on timeout says what it showed instead. */
async function waitForText(page, selector, pattern, timeout = 15000) {
  try {
    await page.waitForFunction((sel, source, flags) => {
      const node = document.querySelector(sel);
      return Boolean(node) && new RegExp(source, flags).test(node.textContent);
    }, { timeout, polling: 100 }, selector, pattern.source, pattern.flags);
  } catch (error) {
    const actual = await page.$eval(selector, (node) => node.textContent).catch(() => '<no such element>');
    throw new Error(`${selector} did not show ${pattern} within ${timeout} ms; it shows ${JSON.stringify(actual)}`);
  }
}

async function waitForVisible(page, selector, timeout = 15000) {
  try {
    await page.waitForSelector(selector, { visible: true, timeout });
  } catch (_) {
    throw new Error(`${selector} did not become visible within ${timeout} ms`);
  }
}

const text = (page, selector) => page.$eval(selector, (node) => node.textContent.trim());
const isHidden = (page, selector) => page.$eval(selector, (node) => node.hidden || node.closest('[hidden]') !== null);

async function fill(page, selector, value) {
  await page.$eval(selector, (node) => { node.value = ''; });
  await page.type(selector, value);
}

async function signInOnPage(page, email, password) {
  await waitForVisible(page, '#signin-form');
  await fill(page, '#email', email);
  await fill(page, '#password', password);
  await page.click('#signin-submit');
}

async function assertNoTokenInUrl(page) {
  const url = page.url();
  for (const token of seen.tokens) assert.ok(!url.includes(token), 'the access token is never in the page URL');
  assert.ok(!/access_token|refresh_token|password/i.test(url), `nothing secret-looking in the URL: ${url}`);
}

async function apiLogin() {
  const login = await request('POST', `${env.sidecarUrl}/v1/auth/login`, { body: { email: env.user.email, password: env.user.password } });
  assert.equal(login.status, 200, `API login: ${JSON.stringify(login.body)}`);
  return login.body.access_token;
}

async function chat(token, content) {
  const result = await request('POST', `${env.sidecarUrl}/v1/chat/completions`, {
    token,
    body: { model: MODEL, messages: [{ role: 'user', content }] },
    timeoutMs: 30000,
  });
  return { status: result.status, source: result.headers.get('x-byok-source'), body: result.body };
}

async function screenshot(page, name, options = {}) {
  const file = path.join(env.screenshots, name);
  await page.screenshot({ path: file, ...options });
  return file;
}

/* ------------------------------------------------------------------------------------------------ */
/* set-up and tear-down                                                                             */
/* ------------------------------------------------------------------------------------------------ */

before(async () => {
  try {
    await setUp();
  } catch (error) {
    env.failed = true;
    if (env.sidecarLog) console.error(`# sidecar log (last lines):\n${tail(env.sidecarLog)}`);
    throw error;
  }
});

async function setUp() {
  const puppeteer = loadPuppeteer();
  env.tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'byok-browser-'));
  // Not inside env.tmp, which is removed after a passing run.
  env.screenshots = process.env.BYOK_SCREENSHOT_DIR || fs.mkdtempSync(path.join(os.tmpdir(), 'byok-browser-screenshots-'));
  fs.mkdirSync(env.screenshots, { recursive: true });
  console.log(`# screenshots: ${env.screenshots}; work dir: ${env.tmp}`);

  const givenInstance = process.env.BYOK_E2E_INSTANCE || null;
  const sidecarPort = await sidecarPortFor(givenInstance);
  const instanceFile = givenInstance || (await startOwnDirectus(sidecarPort));
  env.instance = readEnvFile(instanceFile);
  for (const name of ['DIRECTUS_URL', 'DIRECTUS_TOKEN', 'DIRECTUS_SECRET', 'WEBHOOK_SECRET', 'DIRECTUS_ADMIN_TOKEN']) {
    assert.ok(env.instance[name], `${name} missing from ${instanceFile}`);
  }
  await ensureByokFirstFlags();
  env.user = await createUser();

  env.fake = await startFakeOpenAI();
  await startSidecar(sidecarPort);

  // The page's poll interval, as served, bounds the waits for what only a poll brings.
  const script = await fetch(`${env.sidecarUrl}/account/api.js`, { signal: AbortSignal.timeout(10000) });
  const poll = /const POLL_MS = (\d+)/.exec(await script.text());
  if (poll) env.pollMs = Number(poll[1]);

  env.browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--lang=en-US'],
  });
  env.page = await env.browser.newPage();
  await env.page.setViewport({ width: 1280, height: 900 });
  await watchPage(env.page, 'main');
}

after(async () => {
  const problems = [];
  const attempt = async (what, fn) => {
    try {
      await fn();
    } catch (error) {
      problems.push(`${what}: ${error.message}`);
    }
  };
  if (env.browser) await attempt('closing the browser', () => env.browser.close());
  await attempt('stopping the sidecar', stopSidecar);
  if (env.fake) await attempt('stopping the fake OpenAI', () => new Promise((resolve) => env.fake.server.close(resolve)));
  if (env.ownDirectusDir) {
    await attempt('stopping Directus', async () => {
      const down = spawnSync(path.join(REPO, 'scripts/directus-down.sh'), [env.ownDirectusDir],
        { encoding: 'utf8', timeout: 30000 });
      if (down.status !== 0) throw new Error(down.stderr);
    });
  }
  if (env.tmp) {
    if (env.failed) console.log(`# kept for inspection: ${env.tmp} (sidecar.log${env.ownDirectusDir ? ', directus/' : ''})`);
    else fs.rmSync(env.tmp, { recursive: true, force: true });
  }
  if (problems.length) console.error(`# clean-up problems:\n${problems.join('\n')}`);
});

/* ------------------------------------------------------------------------------------------------ */
/* the story                                                                                        */
/* ------------------------------------------------------------------------------------------------ */

test('an end user manages keys, sees usage, a revoked key, an outage, and deletes the key on /account',
  { timeout: 10 * 60 * 1000 }, async (t) => {
    let broken = null;
    const step = (name, fn) => t.test(name, { skip: broken ? `an earlier step failed (${broken})` : false }, async () => {
      try {
        await fn();
      } catch (error) {
        broken = name;
        env.failed = true;
        const shot = `failure-${name.slice(0, 1)}.png`;
        await screenshot(env.page, shot, { fullPage: true }).catch(() => {});
        console.error(`# step "${name}" failed; page ${env.page.url()}; screenshot ${path.join(env.screenshots, shot)}`);
        console.error(`# console errors so far: ${JSON.stringify(seen.consoleErrors, null, 1)}`);
        console.error(`# sidecar log (last lines):\n${tail(env.sidecarLog)}`);
        throw error;
      }
    });
    const page = env.page;
    const pollWait = env.pollMs + 10000; // one poll interval plus the work behind it

    await step('a. sign in: a wrong password is refused, the right one shows Premium and the credits', async () => {
      const response = await page.goto(`${env.sidecarUrl}/account`, { waitUntil: 'load', timeout: 20000 });
      assert.equal(response.status(), 200);
      const csp = response.headers()['content-security-policy'] || '';
      assert.match(csp, /script-src 'self'/, 'the page is served under its CSP');
      assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
      await waitForVisible(page, '#signin-form');
      assert.equal(await isHidden(page, '#dashboard'), true, 'signed out: no dashboard');

      seen.expectedHttpErrors.push({ path: '/v1/auth/login', status: 401 });
      await signInOnPage(page, env.user.email, 'not-the-password-42');
      await waitForText(page, '#signin-error', /\S/);
      assert.equal(await isHidden(page, '#dashboard'), true, 'a wrong password does not sign in');
      assert.equal(await page.$eval('#password', (node) => node.value), '', 'the password field is cleared');
      assert.ok(!(await text(page, '#signin-error')).includes('not-the-password-42'), 'the password is not echoed');

      await signInOnPage(page, env.user.email, env.user.password);
      await waitForVisible(page, '#dashboard');
      assert.equal(await isHidden(page, '#signin'), true, 'the sign-in form is gone');
      await waitForText(page, '#account-email', new RegExp(`^${env.user.email.replace(/[.]/g, '\\.')}$`));
      await waitForText(page, '#account-plan', /^Premium$/);
      await waitForText(page, '#account-credits', /^\$5\.00\b/);
      await waitForVisible(page, '#budget');
      const caps = await page.$$eval('#budget-caps .cap', (nodes) => nodes.map((node) => ({
        caption: node.querySelector('.cap-caption').textContent,
        now: Number(node.querySelector('[role="progressbar"]').getAttribute('aria-valuenow')),
        label: node.querySelector('[role="progressbar"]').getAttribute('aria-label'),
      })));
      assert.equal(caps.length, 2, 'a bar per cap of the plan');
      assert.match(caps[0].caption, /^Today: .* of \$5\.00 \(\d+%\)/);
      assert.match(caps[1].caption, /^This month: .* of \$50\.00 \(\d+%\)/);
      assert.ok(caps.every((cap) => cap.now >= 0 && cap.now <= 100 && cap.label.endsWith('spending cap')), JSON.stringify(caps));
      await waitForText(page, '#budget-alerts', /notified at 50%, 80%, 100%/);
      // The user lowers the daily cap to $3, then goes back to the plan's default.
      await fill(page, '#budget-daily', '3');
      await page.click('#budget-save');
      await waitForText(page, '#budget-caps .cap-caption', /^Today: .* of \$3\.00 /);
      assert.equal(await page.$eval('#budget-daily', (node) => node.value), '3.00');
      await fill(page, '#budget-daily', 'a lot');
      await page.click('#budget-save');
      await waitForText(page, '#budget-error', /amount in dollars/);
      await fill(page, '#budget-daily', '');
      await page.click('#budget-save');
      await waitForText(page, '#budget-caps .cap-caption', /^Today: .* of \$5\.00 /);
      await waitForText(page, '#budget-error', /^$/);
      // A brake on what the user's own keys spend: a bar of its own.
      await fill(page, '#budget-own-daily', '2');
      await page.click('#budget-save');
      const own = '#budget-caps [data-kind="own_keys"]';
      await waitForText(page, `${own} .cap-caption`, /^Today: \$0\.00 of \$2\.00 \(0%\)/);
      assert.equal(await page.$eval(`${own} [role="progressbar"]`, (node) => node.getAttribute('aria-label')),
        'Your own API keys, today: spending cap');
      assert.equal(await page.$eval('#budget-own-daily', (node) => node.value), '2.00');
      assert.equal(await page.$eval('#budget-daily', (node) => node.value), '', 'the credit caps stay as they were');
      await waitForVisible(page, '#key-card-openai');
      await waitForText(page, '#key-hint-openai', /^No key saved$/);
      await assertNoTokenInUrl(page);
    });

    await step('b. keys: a refused key shows an error and is cleared; a good key is Active with its hint', async () => {
      seen.expectedHttpErrors.push({ path: '/v1/keys/openai', status: 422 });
      await fill(page, '#key-input-openai', REFUSED_KEY);
      await page.click('#key-save-openai');
      await waitForText(page, '#key-error-openai', /rejected/i);
      assert.equal(await page.$eval('#key-input-openai', (node) => node.value), '', 'the refused key is cleared');
      assert.equal(await page.$eval('#key-status-openai', (node) => node.dataset.status), 'none', 'nothing saved');
      await waitForText(page, '#key-hint-openai', /^No key saved$/);
      assert.ok(env.fake.calls.some((c) => c.path === '/v1/models' && c.key === REFUSED_KEY), 'the provider was asked');

      await fill(page, '#key-input-openai', GOOD_KEY);
      await page.click('#key-save-openai');
      await waitForText(page, '#key-status-openai', /^Active$/);
      assert.equal(await page.$eval('#key-status-openai', (node) => node.dataset.status), 'active');
      await waitForText(page, '#key-hint-openai', /^sk-proj-\.\.\.AbCd$/);
      await waitForText(page, '#key-error-openai', /^$/);
      assert.equal(await page.$eval('#key-input-openai', (node) => node.value), '', 'the key input is cleared');
      await waitForText(page, '#key-save-openai', /^Replace key$/);
      const html = await page.content();
      for (const key of [GOOD_KEY, REFUSED_KEY]) assert.ok(!html.includes(key), 'no full key anywhere in the page');
    });

    await step('c. usage: BYOK calls through the gateway show up in the chart and the table', async () => {
      const token = await apiLogin();
      const before = env.fake.calls.length;
      for (let i = 0; i < BYOK_CALLS; i += 1) {
        const call = await chat(token, `Browser test call ${i + 1}`);
        assert.equal(call.status, 200, `gateway call: ${JSON.stringify(call.body)}`);
        assert.equal(call.source, 'byok', 'paid with the user\'s own key');
        assert.equal(call.body.object, 'chat.completion');
        assert.equal(call.body.usage.total_tokens, 1500);
      }
      const upstream = env.fake.calls.slice(before).filter((c) => c.path === '/v1/chat/completions');
      assert.equal(upstream.length, BYOK_CALLS);
      assert.ok(upstream.every((c) => c.key === GOOD_KEY), 'the provider saw the user\'s key');

      // Usage reaches Directus asynchronously: wait until the API reports all of it (bounded; the usage API is
      // rate limited per user, so not too often).
      const usage = await pollUntil(`GET /v1/usage reports ${BYOK_CALLS} requests`, async () => {
        const answer = await request('GET', `${env.sidecarUrl}/v1/usage?days=30`, { token });
        assert.notEqual(answer.status, 429, 'usage polled too often');
        assert.equal(answer.status, 200, JSON.stringify(answer.body));
        return answer.body.total.requests === BYOK_CALLS ? answer.body : null;
      }, { timeoutMs: 30000, intervalMs: 750 });
      assert.ok(Array.isArray(usage.daily) && usage.daily.length > 0, `daily rows: ${JSON.stringify(usage)}`);

      // The page loads usage when the user signs in; a reload signs out (tokens live only in memory).
      await page.reload({ waitUntil: 'load', timeout: 20000 });
      await waitForVisible(page, '#signin-form');
      assert.equal(await isHidden(page, '#dashboard'), true, 'a reload signs out: no token was stored');
      await signInOnPage(page, env.user.email, env.user.password);
      await waitForVisible(page, '#dashboard');
      await waitForText(page, '#usage-total', new RegExp(`^${BYOK_CALLS} requests, `));
      await waitForVisible(page, '#usage-chart-figure');
      await waitForVisible(page, '#usage-table');

      const chart = await page.$eval('#usage-chart', (node) => ({
        bars: node.querySelectorAll('[data-testid="usage-bar"]').length,
        drawn: [...node.querySelectorAll('.seg-byok.nonzero')].map((seg) => ({
          day: seg.parentElement.dataset.day,
          height: seg.getBoundingClientRect().height,
          label: seg.parentElement.textContent,
        })),
      }));
      assert.ok(chart.bars >= 30, `one bar per day of the last 30: ${chart.bars}`);
      assert.equal(chart.drawn.length, 1, `one day with usage: ${JSON.stringify(chart.drawn)}`);
      assert.ok(chart.drawn[0].height > 0, 'the bar has a height');
      assert.equal(chart.drawn[0].day, new Date().toISOString().slice(0, 10), 'today\'s bar');
      assert.match(chart.drawn[0].label, new RegExp(`your keys .*\\(${BYOK_CALLS} requests\\)`));

      const rows = await page.$$eval('#usage-table-body tr', (trs) => trs.map((tr) => [...tr.cells].map((td) => td.textContent.trim())));
      const byok = rows.find((cells) => cells[0] === 'OpenAI' && cells[1] === 'Your key');
      assert.ok(byok, `a row for OpenAI / Your key: ${JSON.stringify(rows)}`);
      assert.equal(byok[2], String(BYOK_CALLS), 'requests');
      assert.equal(byok[3], (1500 * BYOK_CALLS).toLocaleString('en-US'), 'tokens');
      const totals = await page.$$eval('#usage-table tfoot td', (tds) => tds.map((td) => td.textContent.trim()));
      assert.equal(totals[0], 'Total');
      assert.equal(totals[1], String(BYOK_CALLS));
      await waitForText(page, '#key-status-openai', /^Active$/);

      // What they cost the user at OpenAI counts against their own-key cap.
      await waitForText(page, '#budget-caps [data-kind="own_keys"] .cap-caption', /^Today: < \$0\.01 of \$2\.00 \(0%\)/);

      // The same calls, one by one, under "Recent requests".
      await waitForVisible(page, '#calls-table');
      const calls = await page.$$eval('#calls-body tr', (trs) => trs.map((tr) => [...tr.cells].map((td) => td.textContent.trim())));
      assert.equal(calls.length, BYOK_CALLS, `a row per call: ${JSON.stringify(calls)}`);
      for (const [time, model, paidWith, result, tokens, cost] of calls) {
        assert.ok(time !== '' && model.startsWith(MODEL), JSON.stringify(calls));
        assert.deepEqual([paidWith, result, tokens], ['Your key', 'OK', '1,500']);
        assert.match(cost, /^\$\d/);
      }
      await waitForText(page, '#calls-kept', /^Kept for \d+ days/);
      await assertNoTokenInUrl(page);
    });

    await step('d. revoked key: the call falls back to credits, a notification arrives and the key shows Invalid', async () => {
      await fill(page, '#key-input-openai', REVOKED_KEY);
      await page.click('#key-save-openai');
      await waitForText(page, '#key-hint-openai', /^sk-proj-\.\.\.WxYz$/);
      await waitForText(page, '#key-status-openai', /^Active$/); // it passes the key check
      const existing = await page.$$eval('#notification-list [data-testid="notification"]', (lis) => lis.length);
      assert.equal(existing, 0, 'no notification yet');

      const token = await apiLogin();
      const before = env.fake.calls.length;
      const call = await chat(token, 'Browser test call with a revoked key');
      assert.equal(call.status, 200, `the call still works: ${JSON.stringify(call.body)}`);
      assert.equal(call.source, 'internal', 'fell back to platform credits');
      const upstream = env.fake.calls.slice(before).filter((c) => c.path === '/v1/chat/completions').map((c) => c.key);
      assert.deepEqual(upstream, [REVOKED_KEY, INTERNAL_KEY], 'the user\'s key first, then the platform key');

      // Only the page's poll brings the notification (and, with it, the key's new status).
      const item = '#notification-list [data-testid="notification"]';
      try {
        await page.waitForSelector(item, { visible: true, timeout: pollWait + 10000 });
      } catch (_) {
        const api = await request('GET', `${env.sidecarUrl}/v1/notifications`, { token });
        throw new Error(`no notification on the page within ${pollWait + 10000} ms; /v1/notifications says `
          + JSON.stringify(api.body));
      }
      await waitForText(page, `${item} h3`, /Your OpenAI API key stopped working/);
      const message = await text(page, `${item} .notification-message`);
      assert.match(message, /rejected your saved API key/);
      const links = await page.$$eval(`${item} .notification-message a`, (as) => as.map((a) => [a.href, a.rel, a.target]));
      for (const [href, rel, target] of links) {
        assert.match(href, /^https?:\/\//);
        assert.equal(rel, 'noopener noreferrer');
        assert.equal(target, '_blank');
      }
      assert.equal((await page.$$(item)).length, 1, 'one notification per incident');

      await waitForText(page, '#key-status-openai', /^Invalid/, pollWait);
      assert.equal(await page.$eval('#key-status-openai', (node) => node.dataset.status), 'invalid');

      // Scrolled into view, it counts as read.
      await page.$eval(item, (node) => node.scrollIntoView({ block: 'center' }));
      await page.waitForSelector(`${item}[data-read="true"]`, { timeout: 10000 });
      await page.waitForSelector('#notification-badge', { hidden: true, timeout: 10000 });
      const api = await request('GET', `${env.sidecarUrl}/v1/notifications`, { token });
      assert.equal(api.body.notifications[0].read, true, 'marked read on the server');

      // The "Saved." toast (gone after 10 s) would sit over the key card in a full-page screenshot.
      await page.waitForFunction(() => document.getElementById('live-status').textContent === '', { timeout: 15000 });
      await page.evaluate(() => window.scrollTo(0, 0));
      console.log(`# ${await screenshot(page, 'account-desktop.png', { fullPage: true })}`);
      await assertNoTokenInUrl(page);
    });

    await step('g. phone (375x812): no horizontal scroll, every field has an accessible label', async () => {
      const checkLayout = async (target, what) => {
        const layout = await target.evaluate(() => {
          const width = document.documentElement.clientWidth;
          const wide = [...document.querySelectorAll('body *')]
            .filter((node) => node.getClientRects().length && node.getBoundingClientRect().right > width + 0.5
              && !node.closest('.table-scroll') && !node.closest('.sr-only'))
            .slice(0, 5).map((node) => `${node.tagName.toLowerCase()}#${node.id}.${node.className}`);
          return { scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth, wide };
        });
        assert.equal(layout.innerWidth, 375, `${what}: the viewport is phone-sized`);
        assert.ok(layout.scrollWidth <= 375, `${what}: no horizontal scroll (scrollWidth ${layout.scrollWidth}; `
          + `too wide: ${layout.wide.join(', ')})`);
        const fields = await target.evaluate(() => {
          const named = (ids) => ids.split(/\s+/).filter(Boolean)
            .map((id) => document.getElementById(id)).filter(Boolean).map((node) => node.textContent.trim()).join(' ');
          const unlabelled = [];
          const all = [...document.querySelectorAll('input, textarea, select')].filter((node) => node.type !== 'hidden');
          for (const node of all) {
            const byFor = node.id && [...document.querySelectorAll('label')]
              .some((label) => label.htmlFor === node.id && label.textContent.trim() !== '');
            const wrapped = node.closest('label') && node.closest('label').textContent.trim() !== '';
            const aria = (node.getAttribute('aria-label') || '').trim() !== '';
            const labelledBy = named(node.getAttribute('aria-labelledby') || '') !== '';
            if (!byFor && !wrapped && !aria && !labelledBy) unlabelled.push(node.outerHTML.slice(0, 120));
          }
          return { count: all.length, unlabelled };
        });
        assert.deepEqual(fields.unlabelled, [], `${what}: fields without an accessible label`);
        return fields.count;
      };

      // The dashboard as it is now (keys, usage, estimate, notifications).
      await page.setViewport({ width: 375, height: 812 });
      await page.waitForFunction(() => window.innerWidth === 375, { timeout: 5000 });
      const count = await checkLayout(page, 'dashboard');
      assert.ok(count >= 6, `the dashboard has its fields (email, password, 2 keys, prompt, length): ${count}`);
      console.log(`# ${await screenshot(page, 'account-phone.png', { fullPage: true })}`);

      // The sign-in view, in a second tab.
      const signin = await env.browser.newPage();
      try {
        await watchPage(signin, 'phone-signin');
        await signin.setViewport({ width: 375, height: 812 });
        await signin.goto(`${env.sidecarUrl}/account`, { waitUntil: 'load', timeout: 20000 });
        await waitForVisible(signin, '#signin-form');
        await checkLayout(signin, 'sign-in');
      } finally {
        await signin.close();
      }
      await page.setViewport({ width: 1280, height: 900 });
      await page.waitForFunction(() => window.innerWidth === 1280, { timeout: 5000 });
    });

    await step('e. outage: a failing call opens the circuit and the page shows an OpenAI banner', async () => {
      assert.equal(await isHidden(page, '#status-banner'), true, 'no banner while all is well');
      env.fake.outage = true;
      const token = await apiLogin();
      const call = await chat(token, 'Browser test call during an outage');
      assert.equal(call.status, 503, `the provider is down: ${JSON.stringify(call.body)}`);
      const status = await request('GET', `${env.sidecarUrl}/v1/status`);
      const openai = status.body.providers.find((p) => p.provider === 'openai');
      assert.equal(openai.status, 'down', `/v1/status: ${JSON.stringify(status.body)}`);

      // Only the page's status poll brings the banner.
      await waitForVisible(page, '#status-banner', pollWait);
      await waitForText(page, '#status-banner', /OpenAI/);
      assert.equal(await text(page, '#status-banner'), status.body.banner, 'the server\'s sentence');
      await page.evaluate(() => window.scrollTo(0, 0));
      console.log(`# ${await screenshot(page, 'account-banner.png')}`);

      // The failed call joins "Recent requests" with the page's poll, with what went wrong.
      await waitForText(page, '#calls-body tr:first-child [data-testid="call-outcome"]', /^Provider unavailable$/, pollWait);
      const title = await page.$eval('#calls-body tr:first-child [data-testid="call-outcome"]', (node) => node.title);
      assert.equal(title, 'ai_unavailable (HTTP 503)', 'the code, for support');
      env.fake.outage = false;
    });

    await step('f. delete the key (two clicks): No key saved', async () => {
      await waitForVisible(page, '#key-delete-openai');
      await page.click('#key-delete-openai');
      await waitForText(page, '#key-delete-openai', /^Click again to delete$/);
      assert.notEqual(await text(page, '#key-hint-openai'), 'No key saved', 'one click deletes nothing');
      await page.click('#key-delete-openai');
      await waitForText(page, '#key-hint-openai', /^No key saved$/);
      await waitForText(page, '#key-status-openai', /^No key$/);
      assert.equal(await isHidden(page, '#key-delete-openai'), true, 'nothing left to delete');
      await waitForText(page, '#key-save-openai', /^Save key$/);
      const token = await apiLogin();
      const providers = await request('GET', `${env.sidecarUrl}/v1/providers`, { token });
      assert.equal(providers.body.providers.find((p) => p.provider === 'openai').key, null, 'deleted on the server');
    });

    await step('i. background requests: a failed job shows why, and Retry queues it again', async () => {
      const token = await apiLogin();
      // No key any more: credits pay, and they do not pay for priority processing, so the job fails for good.
      const job_request = { model: MODEL, service_tier: 'priority', messages: [{ role: 'user', content: 'Queued from the browser test' }] };
      const submitted = await request('POST', `${env.sidecarUrl}/v1/jobs`, { token, body: { api: 'chat.completions', request: job_request } });
      assert.equal(submitted.status, 202, JSON.stringify(submitted.body));
      const id = submitted.body.id;
      const job = `#jobs-list [data-testid="job-row"]`;
      await waitForVisible(page, '#jobs', pollWait);
      await page.waitForSelector(`${job}[data-status="failed"] button[data-job="${id}"]`, { visible: true, timeout: pollWait });
      await waitForText(page, `${job} .error-text`, /service_tier|[Pp]riority/);
      await page.evaluate(() => document.getElementById('calls').scrollIntoView({ block: 'start' }));
      console.log(`# ${await screenshot(page, 'account-activity.png')}`);

      await page.click(`button[data-job="${id}"]`);
      await page.waitForSelector(`button[data-job="${id}"]`, { hidden: true, timeout: 10000 });
      const retried = await pollUntil('the job is tried a second time', async () => {
        const answer = await request('GET', `${env.sidecarUrl}/v1/jobs/${id}`, { token });
        return answer.body.attempts === 2 && answer.body.status === 'failed' ? answer.body : null;
      }, { timeoutMs: 30000, intervalMs: 250 });
      assert.equal(retried.error.code, 'service_tier_not_available');
    });

    await step('h. no console error, no CSP violation, nothing stored, no token in a URL', async () => {
      assert.deepEqual(seen.pageErrors, [], 'uncaught page errors');
      assert.deepEqual(seen.cspViolations, [], 'CSP violations');
      assert.deepEqual(unexpectedConsoleErrors(), [], 'console errors');
      assert.deepEqual(seen.failedRequests, [], 'failed requests');
      const storage = await page.evaluate(() => ({
        local: localStorage.length,
        session: sessionStorage.length,
        cookie: document.cookie,
      }));
      assert.deepEqual(storage, { local: 0, session: 0, cookie: '' }, 'nothing in web storage or cookies');
      const client = await page.createCDPSession();
      const { cookies } = await client.send('Network.getAllCookies');
      await client.detach();
      assert.deepEqual(cookies.map((c) => c.name), [], 'the browser holds no cookie');
      assert.ok(seen.tokens.size >= 2, 'the page signed in (tokens seen)');
      for (const token of seen.tokens) {
        for (const url of [...seen.navigations, ...seen.requestUrls, page.url()]) {
          assert.ok(!url.includes(token), `a token is in a URL: ${url.slice(0, 80)}`);
        }
      }
      await assertNoTokenInUrl(page);
    });
  });

/** Directus 12 asks a new admin about a license key and a project owner; "Skip" and "Remind Later" leave the
 * instance as it is (the tests accept no license terms on anyone's behalf). */
async function dismissLicensePrompt(page) {
  for (let prompt = 0; prompt < 3; prompt += 1) {
    const clicked = await page
      .waitForFunction(() => {
        const button = [...document.querySelectorAll('button:not([data-dismissed])')].find((b) =>
          ['Skip', 'Remind Later'].includes(b.textContent.trim()));
        if (button) {
          button.setAttribute('data-dismissed', '');
          button.click();
        }
        return Boolean(button);
      }, { timeout: 4000, polling: 100 })
      .then(() => true, () => false);
    if (!clicked) return;
    // The dialog is gone (its button with it) before the next one, if any, is looked for.
    await page.waitForFunction(() => !document.querySelector('button[data-dismissed]'), { timeout: 5000 });
  }
}

test('an admin sees the sidecar and the BYOK-only pre-flight on the Insights dashboard in Directus', async () => {
  assert.ok(env.instance.OPERATOR_TOKEN, 'the instance gives Directus and the sidecar an OPERATOR_TOKEN');
  const page = await env.browser.newPage();
  await page.setViewport({ width: 1680, height: 1700 });
  try {
    await page.goto(`${env.instance.DIRECTUS_URL}/admin/login`, { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('input[type="email"]', { timeout: 30000 });
    await page.type('input[type="email"]', env.instance.DIRECTUS_ADMIN_EMAIL);
    await page.type('input[type="password"]', env.instance.DIRECTUS_ADMIN_PASSWORD);
    await page.click('button[type="submit"]');
    await page.waitForFunction(() => !location.pathname.endsWith('/login'), { timeout: 30000 });
    await dismissLicensePrompt(page);

    const dashboards = await request(
      'GET',
      `${env.instance.DIRECTUS_URL}/dashboards?filter[name][_eq]=byok-bridge&fields=id`,
      { token: env.instance.DIRECTUS_ADMIN_TOKEN },
    );
    const id = dashboards.body.data[0].id;
    await page.goto(`${env.instance.DIRECTUS_URL}/admin/insights/${id}`, { waitUntil: 'domcontentloaded' });
    await dismissLicensePrompt(page);
    await waitForText(page, '[data-testid="ops-status"]', /^(ready|degraded)$/, 30000);
    await waitForText(page, '[data-testid="ops-byok-enabled"]', /^on$/);
    await waitForText(page, '[data-testid="ops-vault"]', /^configured$/);
    await waitForText(page, '[data-testid="ops-preflight-count"]', /^\d+ of \d+ premium and lifetime users have no usable key\.$/);
    await waitForText(page, '[data-testid="ops-jobs-queued"]', /^\d+$/);
    await waitForText(page, '[data-testid="ops-platform-spend"]', /^\$\d+\.\d\d of \$1000\.00 \(\d+%\)$/);
    // Spending per day: a bar for each of the 30 days, today's drawn even when it is the only day with calls;
    // the top spenders of credits by e-mail (not Insights' "--"), most first.
    assert.equal((await page.$$('[data-testid="ops-day"]')).length, 30);
    const today = await page.$eval('[data-testid="ops-day"]:last-child', (node) =>
      [...node.children].reduce((sum, segment) => sum + segment.getBoundingClientRect().height, 0));
    assert.ok(today > 0, 'today has a visible bar');
    await page.waitForSelector('[data-testid="ops-top-user"]', { timeout: 15000 });
    const top = await page.$$eval('[data-testid="ops-top-user"]', (items) => items.map((item) => item.textContent));
    assert.ok(top.length >= 1 && top.length <= 10, JSON.stringify(top));
    const amounts = top.map((line) => {
      const match = /^[^\s@]+@[^\s@]+: \$(\d+\.\d\d) \(\d+ requests\)$/.exec(line);
      assert.ok(match, `an e-mail address and what they spent: ${line}`);
      return Number(match[1]);
    });
    assert.deepEqual(amounts, [...amounts].sort((a, b) => b - a), 'most first');
    // The usage panels draw from the calls the story above made.
    await page.waitForSelector('.apexcharts-svg, svg', { timeout: 30000 });
    await screenshot(page, 'insights-operations.png', { fullPage: true });

    await page.click('[data-testid="ops-notify"]');
    await page.waitForFunction(
      () => [...document.querySelectorAll('[role="status"]')].some((n) => /^Notified \d+; told already \d+; failed 0\.$/.test(n.textContent)),
      { timeout: 15000 },
    );
  } finally {
    await page.close();
  }
});

