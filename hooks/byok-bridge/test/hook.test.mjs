// Unit tests for the byok-bridge hook: `node --test hooks/byok-bridge/test/` (Node >= 20, no dependencies).
import assert from "node:assert/strict";
import { createHmac, randomBytes } from "node:crypto";
import http from "node:http";
import { once } from "node:events";
import { test } from "node:test";

import register, {
	ENCRYPTED_KEY_ENVELOPE_RE,
	ENCRYPTED_KEY_REJECTED_MESSAGE,
	WEBHOOK_EVENTS,
	backoffDelayMs,
	buildWebhookBody,
	createWebhookSender,
	decodeWebhookSecret,
	keysOfActionMeta,
	resolveWebhookConfig,
	signWebhook,
	validateUserApiKeyPayload,
} from "../dist/index.js";

const b64url = (buf) => buf.toString("base64url");
const envelope = (bytes = 12 + 40 + 16, kid = "0a1b2c3d") => `byok:v1:${kid}:${b64url(randomBytes(bytes))}`;
const newSecret = (bytes = 32) => `whsec_${randomBytes(bytes).toString("base64")}`;

// The hook unrefs its retry timers (a pending retry must not keep Directus from exiting); in these tests
// nothing else may hold the event loop open while a retry sleeps, so hold it open explicitly.
const holdLoop = setInterval(() => {}, 1000);
test.after(() => clearInterval(holdLoop));

function captureLogger() {
	const lines = [];
	const mk = (level) => (...args) => lines.push({ level, text: JSON.stringify(args) });
	return { lines, logger: { info: mk("info"), warn: mk("warn"), error: mk("error"), debug: mk("debug") } };
}

test("envelope regex accepts sidecar ciphertext and rejects everything else", () => {
	assert.match(envelope(), ENCRYPTED_KEY_ENVELOPE_RE);
	assert.match(envelope(29), ENCRYPTED_KEY_ENVELOPE_RE); // shortest: nonce + 1 byte + tag = 39 chars
	assert.doesNotMatch(envelope(28), ENCRYPTED_KEY_ENVELOPE_RE);
	for (const bad of [
		"sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH",
		"sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789",
		envelope().replace("byok:v1:", "byok:v2:"),
		envelope(68, "0A1B2C3D"),
		envelope(68, "0a1b2c3"),
		`${envelope()}=`,
		`${envelope()}\n`,
		` ${envelope()}`,
		envelope().replace(/.$/, "+"),
		`byok:v1:0a1b2c3d:${"A".repeat(1501)}`,
		"",
	]) {
		assert.doesNotMatch(bad, ENCRYPTED_KEY_ENVELOPE_RE, bad.slice(0, 30));
	}
	assert.match(`byok:v1:0a1b2c3d:${"A".repeat(1500)}`, ENCRYPTED_KEY_ENVELOPE_RE);
});

test("user_api_keys payload validation", () => {
	const ok = { provider: "openai", encrypted_key: envelope(), key_hint: "sk-...AbCd" };
	assert.equal(validateUserApiKeyPayload(ok), ok);
	assert.deepEqual(validateUserApiKeyPayload({ status: "active" }), { status: "active" });
	assert.deepEqual(validateUserApiKeyPayload({ key_hint: null }), { key_hint: null });

	const plaintext = "sk-proj-THIS-IS-A-PLAINTEXT-KEY-1234567890";
	for (const payload of [
		{ encrypted_key: plaintext },
		{ encrypted_key: null },
		{ encrypted_key: 42 },
		[{ encrypted_key: envelope() }, { encrypted_key: plaintext }],
	]) {
		assert.throws(
			() => validateUserApiKeyPayload(payload),
			(err) => {
				assert.equal(err.name, "DirectusError");
				assert.equal(err.status, 400);
				assert.equal(err.code, "INVALID_PAYLOAD");
				assert.equal(err.message, ENCRYPTED_KEY_REJECTED_MESSAGE);
				assert.ok(!JSON.stringify(err).includes(plaintext), "rejected value must not be echoed");
				return true;
			},
		);
	}
	assert.throws(() => validateUserApiKeyPayload({ key_hint: "x".repeat(25) }), { code: "INVALID_PAYLOAD" });
	assert.throws(() => validateUserApiKeyPayload({ key_hint: 7 }), { code: "INVALID_PAYLOAD" });
	assert.doesNotThrow(() => validateUserApiKeyPayload({ key_hint: "x".repeat(24) }));
});

test("webhook secret decoding", () => {
	assert.equal(decodeWebhookSecret(newSecret(24)).length, 24);
	assert.equal(decodeWebhookSecret(newSecret(64)).length, 64);
	for (const bad of [undefined, null, "", "whsec_", newSecret(23), "whsec_not base64!", "abc" + newSecret(32), 12345]) {
		assert.equal(decodeWebhookSecret(bad), null, String(bad));
	}
});

test("signature matches the Standard Webhooks reference vector", () => {
	const secret = decodeWebhookSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
	assert.equal(
		signWebhook(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", Buffer.from('{"test": 2432232314}')),
		"v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
	);
});

test("body shape and keys", () => {
	const body = JSON.parse(buildWebhookBody("feature_flags.items.update", [1, "2"], new Date(0)));
	assert.deepEqual(body, {
		type: "feature_flags.items.update",
		timestamp: "1970-01-01T00:00:00.000Z",
		data: { collection: "feature_flags", keys: ["1", "2"] },
	});
	assert.deepEqual(keysOfActionMeta({ key: 7 }), [7]);
	assert.deepEqual(keysOfActionMeta({ keys: ["1", "2"] }), ["1", "2"]);
	assert.deepEqual(keysOfActionMeta({}), []);
});

test("config resolution: missing, invalid, ok (never leaks the secret)", () => {
	assert.equal(resolveWebhookConfig({}).state, "missing");
	assert.equal(resolveWebhookConfig({ BYOK_BRIDGE_URL: "http://127.0.0.1:1" }).state, "missing");
	const short = newSecret(10);
	const bad = resolveWebhookConfig({ BYOK_BRIDGE_URL: "http://127.0.0.1:1", BYOK_BRIDGE_WEBHOOK_SECRET: short });
	assert.equal(bad.state, "invalid");
	assert.ok(!bad.problem.includes(short.slice(6)));
	assert.equal(resolveWebhookConfig({ BYOK_BRIDGE_URL: "ftp://x", BYOK_BRIDGE_WEBHOOK_SECRET: newSecret() }).state, "invalid");
	const ok = resolveWebhookConfig({ BYOK_BRIDGE_URL: "http://127.0.0.1:9/base//", BYOK_BRIDGE_WEBHOOK_SECRET: newSecret() });
	assert.equal(ok.state, "ok");
	assert.equal(ok.url.href, "http://127.0.0.1:9/base/webhooks/directus");
});

test("backoff grows exponentially with jitter and is capped", () => {
	const opts = { baseDelayMs: 200, maxDelayMs: 10_000 };
	assert.equal(backoffDelayMs(1, opts, () => 0.5), 200);
	assert.equal(backoffDelayMs(2, opts, () => 0.5), 400);
	assert.equal(backoffDelayMs(3, opts, () => 0), 400);
	assert.equal(backoffDelayMs(20, opts, () => 0.99), 10_000);
});

async function withServer(handler, fn) {
	const requests = [];
	const server = http.createServer((req, res) => {
		const chunks = [];
		req.on("data", (c) => chunks.push(c));
		req.on("end", () => {
			requests.push({ headers: req.headers, body: Buffer.concat(chunks), url: req.url });
			handler(requests.length, req, res);
		});
	});
	server.listen(0, "127.0.0.1");
	await once(server, "listening");
	try {
		return await fn(new URL(`http://127.0.0.1:${server.address().port}/webhooks/directus`), requests);
	} finally {
		server.closeAllConnections();
		server.close();
	}
}

function verify(secretBytes, { headers, body }) {
	const expected = createHmac("sha256", secretBytes)
		.update(`${headers["webhook-id"]}.${headers["webhook-timestamp"]}.`)
		.update(body)
		.digest("base64");
	return headers["webhook-signature"] === `v1,${expected}`;
}

test("delivery: signed, retried on 503 with identical headers, then delivered", async () => {
	const secretBytes = decodeWebhookSecret(newSecret());
	await withServer(
		(n, _req, res) => res.writeHead(n < 3 ? 503 : 204).end(),
		async (url, requests) => {
			const { logger, lines } = captureLogger();
			const sender = createWebhookSender({ url, secretBytes, logger, options: { baseDelayMs: 5 } });
			const result = await sender.send("feature_flags.items.update", ["3"]);
			sender.agent.destroy();
			assert.deepEqual(result, { delivered: true, attempts: 3, status: 204 });
			assert.equal(requests.length, 3);
			for (const r of requests) {
				assert.equal(r.url, "/webhooks/directus");
				assert.equal(r.headers["content-type"], "application/json");
				assert.match(r.headers["webhook-id"], /^msg_[0-9a-f-]{36}$/);
				assert.match(r.headers["webhook-timestamp"], /^\d{10}$/);
				assert.ok(verify(secretBytes, r), "signature verifies over the exact bytes sent");
				for (const h of ["webhook-id", "webhook-timestamp", "webhook-signature"]) {
					assert.equal(r.headers[h], requests[0].headers[h]);
				}
				assert.deepEqual(r.body, requests[0].body);
			}
			assert.deepEqual(JSON.parse(requests[0].body).data, { collection: "feature_flags", keys: ["3"] });
			const logged = JSON.stringify(lines);
			assert.ok(!logged.includes(requests[0].headers["webhook-signature"].slice(3)), "signature not logged");
			assert.ok(!logged.includes(secretBytes.toString("base64")), "secret not logged");
		},
	);
});

test("delivery: 400 is not retried, 429 is", async () => {
	const secretBytes = decodeWebhookSecret(newSecret());
	await withServer(
		(_n, _req, res) => res.writeHead(400).end(),
		async (url, requests) => {
			const sender = createWebhookSender({ url, secretBytes, logger: captureLogger().logger, options: { baseDelayMs: 1 } });
			assert.deepEqual(await sender.send("feature_flags.items.delete", ["1"]), { delivered: false, attempts: 1, status: 400 });
			sender.agent.destroy();
			assert.equal(requests.length, 1);
		},
	);
	await withServer(
		(n, _req, res) => res.writeHead(n === 1 ? 429 : 200, { "retry-after": "0" }).end(),
		async (url, requests) => {
			const sender = createWebhookSender({ url, secretBytes, logger: captureLogger().logger, options: { baseDelayMs: 1 } });
			assert.equal((await sender.send("feature_flags.items.create", [1])).attempts, 2);
			sender.agent.destroy();
			assert.equal(requests.length, 2);
		},
	);
});

test("delivery: connection refused is retried a bounded number of times", async () => {
	const server = http.createServer();
	server.listen(0, "127.0.0.1");
	await once(server, "listening");
	const port = server.address().port;
	server.close();
	await once(server, "close");
	const { logger, lines } = captureLogger();
	const sender = createWebhookSender({
		url: new URL(`http://127.0.0.1:${port}/webhooks/directus`),
		secretBytes: decodeWebhookSecret(newSecret()),
		logger,
		options: { baseDelayMs: 1, maxAttempts: 4 },
	});
	assert.deepEqual(await sender.send("feature_flags.items.update", ["1"]), { delivered: false, attempts: 4, status: undefined });
	assert.equal(lines.filter((l) => l.level === "warn").length, 1);
	assert.equal(lines.filter((l) => l.level === "debug").length, 2);
	assert.equal(lines.filter((l) => l.level === "error").length, 1);
});

test("delivery: per-attempt timeout", async () => {
	const secretBytes = decodeWebhookSecret(newSecret());
	await withServer(
		(n, _req, res) => {
			if (n > 1) res.writeHead(200).end(); // first attempt hangs
		},
		async (url, requests) => {
			const sender = createWebhookSender({
				url,
				secretBytes,
				logger: captureLogger().logger,
				options: { baseDelayMs: 1, timeoutMs: 100 },
			});
			const started = Date.now();
			const result = await sender.send("feature_flags.items.update", ["1"]);
			sender.agent.destroy();
			assert.equal(result.delivered, true);
			assert.equal(result.attempts, 2);
			assert.ok(Date.now() - started < 2000);
			assert.equal(requests.length, 2);
		},
	);
});

test("register: filters always, actions only with a valid config; one startup message", () => {
	const mkApi = () => {
		const filters = new Map();
		const actions = new Map();
		return { filters, actions, api: { filter: (e, h) => filters.set(e, h), action: (e, h) => actions.set(e, h) } };
	};

	let { filters, actions, api } = mkApi();
	let cap = captureLogger();
	register(api, { env: {}, logger: cap.logger });
	assert.deepEqual([...filters.keys()].sort(), ["user_api_keys.items.create", "user_api_keys.items.update"]);
	assert.equal(actions.size, 0);
	assert.equal(cap.lines.length, 1);
	assert.equal(cap.lines[0].level, "warn");

	({ filters, actions, api } = mkApi());
	cap = captureLogger();
	const badSecret = "whsec_c2hvcnQ=";
	register(api, { env: { BYOK_BRIDGE_URL: "http://127.0.0.1:1", BYOK_BRIDGE_WEBHOOK_SECRET: badSecret }, logger: cap.logger });
	assert.equal(actions.size, 0);
	assert.equal(cap.lines.length, 1);
	assert.equal(cap.lines[0].level, "error");
	assert.ok(!cap.lines[0].text.includes("c2hvcnQ"));

	({ filters, actions, api } = mkApi());
	cap = captureLogger();
	register(api, { env: { BYOK_BRIDGE_URL: "http://127.0.0.1:1/", BYOK_BRIDGE_WEBHOOK_SECRET: newSecret() }, logger: cap.logger });
	assert.deepEqual([...actions.keys()].sort(), [...WEBHOOK_EVENTS].sort());
	assert.ok(cap.lines.every((l) => l.level === "info"));
});
