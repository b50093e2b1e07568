// Unit tests for the byok-bridge hook: `node --test hooks/byok-bridge/test/` (Node >= 20, no dependencies).
import assert from "node:assert/strict";
import { createHmac, randomBytes } from "node:crypto";
import http from "node:http";
import { once } from "node:events";
import { test } from "node:test";

import { readFileSync } from "node:fs";

import register, {
	DEFAULT_SERVICE_ROLE,
	ENCRYPTED_KEY_ENVELOPE_RE,
	ENCRYPTED_KEY_REJECTED_MESSAGE,
	ENCRYPTED_KEY_UNKNOWN_KID_MESSAGE,
	PROVIDER_KEY_PREFIXES,
	LEDGER_WRITE_FORBIDDEN_MESSAGE,
	SIDECAR_USER_FIELDS,
	USER_READ_FORBIDDEN_MESSAGE,
	SIGN_IN_EVENT,
	WEBHOOK_EVENTS,
	backoffDelayMs,
	buildSignInBody,
	buildWebhookBody,
	readFlags,
	createServiceRoleResolver,
	createWebhookSender,
	decodeWebhookSecret,
	envelopeProblem,
	isEncryptedKeyEnvelope,
	isServiceAccountability,
	keysOfActionMeta,
	parseKeyIds,
	parseStripeSecret,
	provenStripeGrant,
	relatedCollectionResolver,
	resolveWebhookConfig,
	restrictSidecarQuery,
	signWebhook,
	signedInEmail,
	stripUserRecords,
	stripeSignatureValid,
	validateSidecarLedgerPayload,
	validateUserApiKeyPayload,
} from "../dist/index.js";

const b64url = (buf) => buf.toString("base64url");
// Like the sidecar: a payload never starts like a shipped provider's key (it draws a new nonce then).
function envelope(bytes = 12 + 40 + 16, kid = "0a1b2c3d") {
	for (;;) {
		const payload = b64url(randomBytes(bytes));
		if (!PROVIDER_KEY_PREFIXES.some((prefix) => payload.startsWith(prefix))) return `byok:v1:${kid}:${payload}`;
	}
}
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
		"sk-proj-FAKE-not-a-real-key-000000000000000000000000",
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
		assert.equal(isEncryptedKeyEnvelope(bad), false, bad.slice(0, 30));
	}
	assert.match(`byok:v1:0a1b2c3d:${"A".repeat(1500)}`, ENCRYPTED_KEY_ENVELOPE_RE);
	assert.equal(isEncryptedKeyEnvelope(`byok:v1:0a1b2c3d:${"A".repeat(1500)}`), true);
});

test("the shipped envelope-v1 test vector passes the hook's check", () => {
	const vector = JSON.parse(readFileSync(new URL("../../../tests/fixtures/envelope-v1.json", import.meta.url), "utf8"));
	assert.equal(envelopeProblem(vector.envelope), null);
	assert.equal(isEncryptedKeyEnvelope(vector.envelope, new Set([vector.envelope.split(":")[2]])), true);
	assert.doesNotThrow(() => validateUserApiKeyPayload({ encrypted_key: vector.envelope }));
});

test("a plaintext provider key behind a fake envelope header is refused", () => {
	for (const key of [
		// 52 payload characters: canonical base64url (52 % 4 == 0), so only the sk- rule refuses it.
		"sk-proj-FAKE-not-a-real-key-000000000000000000000000",
		`sk-proj-${"A1b2_C3d4-".repeat(15)}xyzw`,
		"sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789_-ABCDEFGHIJKLMNOPQRSTUVWXYZ012-AA",
		"sk-svcacct-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ01",
		"sk-admin-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOP",
		// Gemini, Groq and xAI keys: canonical base64url too, refused by their prefixes.
		"AIzaFAKE-not-a-real-key-0000000000000000000000000000",
		"gsk_FAKE-not-a-real-key-000000000000000000000000000000000000",
		"xai-FAKE-not-a-real-key-0000000000000000000000000000000000000000000000000000000000000000",
		"sk-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH0",
	]) {
		const value = `byok:v1:00000000:${key}`;
		assert.match(value, ENCRYPTED_KEY_ENVELOPE_RE, "the old regex alone accepted it");
		assert.equal(isEncryptedKeyEnvelope(value), false, key.slice(0, 12));
		assert.throws(
			() => validateUserApiKeyPayload({ user: "u", encrypted_key: value }),
			(err) => err.code === "INVALID_PAYLOAD" && !JSON.stringify(err).includes(key) && !err.message.includes(key),
		);
	}
	for (const canonical of [
		"sk-proj-FAKE-not-a-real-key-000000000000000000000000",
		"AIzaFAKE-not-a-real-key-0000000000000000000000000000",
		"gsk_FAKE-not-a-real-key-000000000000000000000000000000000000",
	]) {
		assert.equal(Buffer.from(canonical, "base64url").toString("base64url"), canonical, "only the prefix rule refuses it");
	}
});

test("real-looking envelopes pass; non-canonical, short or over-long payloads do not", () => {
	for (let bytes = 29; bytes < 29 + 64; bytes++) {
		for (let i = 0; i < 20; i++) assert.equal(envelopeProblem(envelope(bytes, randomBytes(4).toString("hex"))), null);
	}
	assert.equal(isEncryptedKeyEnvelope(envelope(1124)), true); // 1124 bytes = 1499 characters

	const payloadOf = (value) => value.split(":")[3];
	const withPayload = (payload) => `byok:v1:0a1b2c3d:${payload}`;
	// 29 bytes = 39 characters; the last one carries 2 unused low bits that must be zero.
	const base = payloadOf(envelope(29));
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	const last = alphabet.indexOf(base.at(-1));
	for (let stray = 1; stray < 4; stray++) {
		const nonCanonical = base.slice(0, -1) + alphabet[last | stray];
		assert.equal(isEncryptedKeyEnvelope(withPayload(nonCanonical)), false, "stray low bits");
		assert.deepEqual(Buffer.from(nonCanonical, "base64url"), Buffer.from(base, "base64url"), "decodes like the canonical one");
	}
	assert.equal(isEncryptedKeyEnvelope(withPayload(`${payloadOf(envelope(39))}A`)), false, "length % 4 == 1"); // 52 + 1 characters
	assert.equal(isEncryptedKeyEnvelope(withPayload(payloadOf(envelope(28)))), false, "28 bytes: no room for 1 byte of ciphertext");
	assert.equal(isEncryptedKeyEnvelope(withPayload("A".repeat(38))), false, "38 characters");
	assert.equal(isEncryptedKeyEnvelope(withPayload(`${payloadOf(envelope(30))}==`)), false, "padding");
	assert.equal(isEncryptedKeyEnvelope(withPayload("A".repeat(1501))), false);
	assert.equal(isEncryptedKeyEnvelope(withPayload(b64url(randomBytes(40)).replace(/^.../, "sk-"))), false);
	for (const bad of [null, undefined, 42, {}, ["byok:v1:0a1b2c3d:" + "A".repeat(40)]]) {
		assert.equal(isEncryptedKeyEnvelope(bad), false);
	}
});

test("BYOK_BRIDGE_KEY_IDS: parsed from the type-cast env, never widened", () => {
	assert.deepEqual(parseKeyIds(undefined), { kids: null, invalid: 0 });
	assert.deepEqual(parseKeyIds(""), { kids: null, invalid: 0 });
	assert.deepEqual([...parseKeyIds("0A1B2C3D").kids], ["0a1b2c3d"]);
	// Directus casts `12345678` to a number and `a,b` to an array.
	assert.deepEqual([...parseKeyIds(["0a1b2c3d", 12345678]).kids].sort(), ["0a1b2c3d", "12345678"]);
	assert.deepEqual([...parseKeyIds(12345678).kids], ["12345678"]);
	assert.deepEqual(parseKeyIds("0a1b2c3d, nothex!,").invalid, 1);
	const mangled = parseKeyIds(10); // "1e000001" read as a number by Directus
	assert.deepEqual({ size: mangled.kids.size, invalid: mangled.invalid }, { size: 0, invalid: 1 });

	const kids = parseKeyIds("0a1b2c3d,7452bc6b").kids;
	assert.equal(envelopeProblem(envelope(68, "7452bc6b"), kids), null);
	assert.equal(envelopeProblem(envelope(68, "ffffffff"), kids), "unknown_kid");
	assert.equal(envelopeProblem("byok:v1:ffffffff:sk-proj-FAKE-not-a-real-key-000000000000000000000000", kids), "malformed");
	assert.equal(envelopeProblem(envelope(68, "ffffffff"), new Set()), "unknown_kid", "only invalid entries: all refused");
	const unknown = envelope(68, "ffffffff");
	assert.throws(
		() => validateUserApiKeyPayload({ encrypted_key: unknown }, kids),
		(err) =>
			err.status === 400 && err.message === ENCRYPTED_KEY_UNKNOWN_KID_MESSAGE && !JSON.stringify(err).includes(unknown.slice(17)),
	);
	assert.doesNotThrow(() => validateUserApiKeyPayload({ encrypted_key: envelope(68, "0a1b2c3d") }, kids));
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
	const withFlags = JSON.parse(
		buildWebhookBody("feature_flags.items.update", [3], new Date(0), { read_at: 5, rows: [{ key: "byok_only_mode", is_enabled: true, min_tier: null }] }),
	);
	assert.deepEqual(withFlags.flags, { read_at: 5, rows: [{ key: "byok_only_mode", is_enabled: true, min_tier: null }] });
	assert.deepEqual(keysOfActionMeta({ key: 7 }), [7]);
	assert.deepEqual(keysOfActionMeta({ keys: ["1", "2"] }), ["1", "2"]);
	assert.deepEqual(keysOfActionMeta({}), []);
});

test("readFlags reads every row after the change, stamps the time before the read, and gives null on failure", async () => {
	const calls = [];
	const database = {
		select: (...columns) => ({
			from: async (table) => {
				calls.push({ columns, table });
				return [
					{ key: "byok_enabled", is_enabled: 1, min_tier: "lifetime" },
					{ key: "byok_only_mode", is_enabled: false, min_tier: null },
				];
			},
		}),
	};
	const flags = await readFlags(database, () => 42);
	assert.deepEqual(calls, [{ columns: ["key", "is_enabled", "min_tier"], table: "feature_flags" }]);
	assert.deepEqual(flags, {
		read_at: 42,
		rows: [
			{ key: "byok_enabled", is_enabled: true, min_tier: "lifetime" },
			{ key: "byok_only_mode", is_enabled: false, min_tier: null },
		],
	});
	const failing = { select: () => ({ from: async () => { throw new Error("SQLITE_BUSY"); } }) };
	assert.equal(await readFlags(failing), null);
	assert.equal(await readFlags(undefined), null);
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

	const roleActions = ["roles.create", "roles.delete", "roles.update"];
	let { filters, actions, api } = mkApi();
	let cap = captureLogger();
	register(api, { env: {}, logger: cap.logger });
	assert.deepEqual([...filters.keys()].sort(), [
		"credit_transactions.items.create",
		"items.query",
		"user_api_keys.items.create",
		"user_api_keys.items.update",
		"users.query",
		"users.read",
	]);
	assert.deepEqual([...actions.keys()].sort(), roleActions, "no webhook actions, only the role cache's");
	assert.equal(cap.lines.length, 1);
	assert.equal(cap.lines[0].level, "warn");

	({ filters, actions, api } = mkApi());
	cap = captureLogger();
	const badSecret = "whsec_c2hvcnQ=";
	register(api, { env: { BYOK_BRIDGE_URL: "http://127.0.0.1:1", BYOK_BRIDGE_WEBHOOK_SECRET: badSecret }, logger: cap.logger });
	assert.deepEqual([...actions.keys()].sort(), roleActions);
	assert.equal(cap.lines.length, 1);
	assert.equal(cap.lines[0].level, "error");
	assert.ok(!cap.lines[0].text.includes("c2hvcnQ"));

	({ filters, actions, api } = mkApi());
	cap = captureLogger();
	register(api, { env: { BYOK_BRIDGE_URL: "http://127.0.0.1:1/", BYOK_BRIDGE_WEBHOOK_SECRET: newSecret() }, logger: cap.logger });
	assert.deepEqual([...actions.keys()].sort(), [...WEBHOOK_EVENTS, SIGN_IN_EVENT, ...roleActions].sort());
	assert.ok(cap.lines.every((l) => l.level === "info"));

	({ filters, actions, api } = mkApi());
	cap = captureLogger();
	register(api, { env: { BYOK_BRIDGE_KEY_IDS: ["0a1b2c3d", "bad"] }, logger: cap.logger });
	assert.equal(cap.lines.filter((l) => l.level === "error").length, 1, "invalid key ids are reported");
	assert.throws(() => filters.get("user_api_keys.items.create")({ encrypted_key: envelope(68, "ffffffff") }), {
		message: ENCRYPTED_KEY_UNKNOWN_KID_MESSAGE,
	});
});


// ---- the sidecar's service role ---------------------------------------------------------------------

// The relations of directus-schema/snapshot.yaml plus a few system ones, as Directus' schema overview lists them.
const RELATIONS = [
	{ collection: "feature_flags", field: "user_updated", related_collection: "directus_users", meta: { one_field: null } },
	{ collection: "user_api_keys", field: "user", related_collection: "directus_users", meta: { one_field: null } },
	{ collection: "api_key_usage", field: "user", related_collection: "directus_users", meta: { one_field: null } },
	{ collection: "credit_transactions", field: "user", related_collection: "directus_users", meta: { one_field: null } },
	{ collection: "directus_users", field: "role", related_collection: "directus_roles", meta: { one_field: "users" } },
	{ collection: "directus_users", field: "avatar", related_collection: "directus_files", meta: { one_field: null } },
];
const related = relatedCollectionResolver(RELATIONS);
const refused = (query, collection) =>
	assert.throws(
		() => restrictSidecarQuery(query, collection, related),
		(err) => err instanceof Error && err.status === 403 && err.code === "FORBIDDEN" && err.message === USER_READ_FORBIDDEN_MESSAGE,
		JSON.stringify(query),
	);

test("ledger: the service role creates deductions only", () => {
	const deduction = { user: "u", transaction_type: "deduction", cost_cents: "0.000345000" };
	assert.equal(validateSidecarLedgerPayload(deduction), deduction);
	assert.doesNotThrow(() => validateSidecarLedgerPayload([deduction, deduction]));
	for (const bad of [
		{ ...deduction, transaction_type: "grant" },
		{ ...deduction, transaction_type: "refund" },
		{ ...deduction, transaction_type: "DEDUCTION" },
		{ user: "u", cost_cents: 1 },
		[deduction, { ...deduction, transaction_type: "grant" }],
		null,
	]) {
		assert.throws(
			() => validateSidecarLedgerPayload(bad),
			(err) => err instanceof Error && err.name === "DirectusError" && err.status === 403 && err.code === "FORBIDDEN" &&
				err.message === LEDGER_WRITE_FORBIDDEN_MESSAGE,
		);
	}
});

// The sidecar's known-answer vector (src/crypto/stripe_signature.rs), computed as Stripe's libraries do.
const STRIPE_SECRET = "whsec_test_secret_0123456789abcdef";
const STRIPE_VECTOR_BODY = '{"id":"evt_1","type":"checkout.session.completed"}';
const STRIPE_VECTOR_SIG = "a723293e5bd4496da485dec1069365ebae237cdae65c1d5a126979dac5377c4a";
const BUYER = "7b1c7f0e-9d7a-4a4e-9a54-2c4b6f0f2a11";
const stripeSign = (body, t = 1700000000, secret = STRIPE_SECRET) =>
	`t=${t},v1=${createHmac("sha256", secret).update(`${t}.${body}`).digest("hex")}`;
function paidSession(overrides = {}) {
	const object = {
		id: "cs_test_1", object: "checkout.session", amount_total: 1500, currency: "usd", client_reference_id: BUYER,
		payment_intent: "pi_3Abc", payment_status: "paid", metadata: {}, ...overrides,
	};
	return JSON.stringify({ id: "evt_1", type: "checkout.session.completed", data: { object } });
}
function grantOf(body, extra = {}) {
	return {
		user: BUYER, transaction_type: "grant", service_type: "purchase", cost_cents: "1500.000000000",
		request_id: "stripe:pi_3Abc", payment_event: body, payment_signature: stripeSign(body), ...extra,
	};
}

test("stripe: signatures follow Stripe's scheme, the same vector as the sidecar's", () => {
	assert.equal(parseStripeSecret(STRIPE_SECRET), STRIPE_SECRET);
	for (const bad of [undefined, "", "sk_live_0123456789abcdef", "whsec_short", 42]) assert.equal(parseStripeSecret(bad), null);
	const header = `t=1700000000,v1=${STRIPE_VECTOR_SIG}`;
	assert.equal(stripeSignatureValid(STRIPE_SECRET, header, STRIPE_VECTOR_BODY), true);
	assert.equal(stripeSignatureValid(STRIPE_SECRET, `t=1700000000, v1=${"0".repeat(64)}, v1=${STRIPE_VECTOR_SIG}`, STRIPE_VECTOR_BODY), true);
	assert.equal(stripeSignatureValid(STRIPE_SECRET, header, STRIPE_VECTOR_BODY.replace("evt_1", "evt_2")), false);
	assert.equal(stripeSignatureValid(STRIPE_SECRET, `t=1700000001,v1=${STRIPE_VECTOR_SIG}`, STRIPE_VECTOR_BODY), false);
	assert.equal(stripeSignatureValid("whsec_another_secret_entirely_0", header, STRIPE_VECTOR_BODY), false);
	assert.equal(stripeSignatureValid(STRIPE_SECRET, `v1=${STRIPE_VECTOR_SIG}`, STRIPE_VECTOR_BODY), false);
});

test("ledger: the service role may grant only what a signed Stripe checkout proves, and the proof is stripped", () => {
	const grant = grantOf(paidSession());
	assert.equal(provenStripeGrant(grant, STRIPE_SECRET), true);
	const stored = validateSidecarLedgerPayload(grant, STRIPE_SECRET);
	assert.equal(stored.payment_event, undefined);
	assert.equal(stored.payment_signature, undefined);
	assert.equal(stored.cost_cents, "1500.000000000");
	// metadata.user_id names the buyer too; a session without a PaymentIntent is keyed by itself.
	const byMetadata = paidSession({ client_reference_id: null, metadata: { user_id: BUYER }, payment_intent: null });
	assert.equal(provenStripeGrant(grantOf(byMetadata, { request_id: "stripe:cs_test_1" }), STRIPE_SECRET), true);

	const refusedGrants = [
		grantOf(paidSession(), { cost_cents: "1500.000000001" }),
		grantOf(paidSession(), { cost_cents: "15000" }),
		grantOf(paidSession(), { user: "0b1c7f0e-9d7a-4a4e-9a54-2c4b6f0f2a11" }),
		grantOf(paidSession(), { request_id: "stripe:pi_other" }),
		grantOf(paidSession({ payment_status: "unpaid" })),
		grantOf(paidSession().replace("checkout.session.completed", "charge.refunded")),
		{ ...grantOf(paidSession()), payment_signature: stripeSign(paidSession(), 1700000000, "whsec_not_the_endpoint_secret") },
		{ ...grantOf(paidSession()), payment_event: paidSession({ amount_total: 150000 }) },
		{ ...grantOf(paidSession()), payment_event: undefined },
		{ user: BUYER, transaction_type: "grant", cost_cents: "1500" },
	];
	for (const bad of refusedGrants) {
		assert.throws(
			() => validateSidecarLedgerPayload(bad, STRIPE_SECRET),
			(err) => err.status === 403 && err.message === LEDGER_WRITE_FORBIDDEN_MESSAGE,
			JSON.stringify(bad),
		);
	}
	// Without the secret (payments off in Directus) nothing proves a grant.
	assert.throws(() => validateSidecarLedgerPayload(grantOf(paidSession()), null), (err) => err.status === 403);
});

test("relations resolve like Directus: m2o, o2m (one_field), $FOLLOW", () => {
	assert.equal(related("credit_transactions", "user"), "directus_users");
	assert.equal(related("directus_roles", "users"), "directus_users");
	assert.equal(related("directus_users", "role"), "directus_roles");
	assert.equal(related("credit_transactions", "cost_cents"), null);
	assert.equal(related("directus_roles", "$FOLLOW(directus_users, role)"), "directus_users");
	assert.equal(relatedCollectionResolver(undefined)("x", "y"), null);
});

test("user reads: the sidecar's own queries pass unchanged", () => {
	const queries = [
		["directus_users", { fields: ["status", "subscription_tier"], filter: { id: { _eq: "u" } } }],
		["directus_users", { fields: ["id"] }],
		["directus_users", { fields: [...SIDECAR_USER_FIELDS], sort: ["-email"], filter: { _and: [{ status: { _eq: "active" } }] } }],
		["credit_transactions", { aggregate: { sum: ["cost_cents"] }, group: ["transaction_type"], filter: { user: { _eq: "u" } } }],
		[
			"api_key_usage",
			{
				aggregate: { count: ["*"], sum: ["total_tokens", "estimated_cost_cents"] },
				group: ["provider"],
				filter: { _and: [{ user: { _eq: "u" } }, { created_at: { _gte: "x" } }] },
			},
		],
		[
			"user_api_keys",
			{ fields: ["id", "user", "provider", "encrypted_key"], filter: { encrypted_key: { _nstarts_with: "byok:v1:0a1b2c3d:" } } },
		],
		[
			"credit_transactions",
			{ fields: ["id", "user.email", "user.subscription_tier"], filter: { user: { status: { _eq: "active" } } } },
		],
		[
			"credit_transactions",
			{ fields: ["*"], sort: ["-created_at", "user.email"], deep: { user: { _filter: { email: { _nnull: true } } } } },
		],
	];
	for (const [collection, query] of queries) {
		assert.deepEqual(restrictSidecarQuery(structuredClone(query), collection, related), query, JSON.stringify(query));
	}
});

test("user reads: a wildcard inside directus_users becomes the allowed fields", () => {
	const all = [...SIDECAR_USER_FIELDS];
	assert.deepEqual(restrictSidecarQuery({}, "directus_users", related).fields, all);
	assert.deepEqual(restrictSidecarQuery({ fields: ["*"] }, "directus_users", related).fields, all);
	assert.deepEqual(restrictSidecarQuery({ fields: ["*", "email"] }, "directus_users", related).fields, all);
	assert.deepEqual(restrictSidecarQuery({ fields: ["id", "user.*"] }, "credit_transactions", related).fields, [
		"id",
		...all.map((f) => `user.${f}`),
	]);
	assert.equal(restrictSidecarQuery({}, "credit_transactions", related).fields, undefined, "items: * stays Directus' default");
});

test("user reads: every other user field is refused, however it is reached", () => {
	for (const fields of [
		["auth_data"],
		["*", "auth_data"],
		["password"],
		["token"],
		["tfa_secret"],
		["role.name"],
		["role.*"],
		["count(policies)"],
		["json(auth_data, $.token)"],
		["year(last_access)"],
		"id,auth_data",
	]) {
		refused({ fields }, "directus_users");
	}
	refused({ fields: ["id", "user.auth_data"] }, "credit_transactions");
	refused({ fields: ["*.*"] }, "credit_transactions");
	refused({ fields: ["user.role.name"] }, "user_api_keys");
	refused({ fields: ["item:directus_users.auth_data"] }, "some_a2o_collection");
	refused({ fields: ["users.auth_data"] }, "directus_roles");
	refused({ fields: ["id"], filter: { auth_data: { _nnull: true } } }, "directus_users");
	refused(
		{ fields: ["id"], filter: { _or: [{ id: { _eq: "u" } }, { _and: [{ external_identifier: { _contains: "x" } }] }] } },
		"directus_users",
	);
	refused({ fields: ["id"], filter: { user: { auth_data: { _contains: "refresh" } } } }, "credit_transactions");
	refused({ fields: ["id"], filter: { users: { _some: { auth_data: { _nnull: true } } } } }, "directus_roles");
	refused({ fields: ["id"], filter: { "$FOLLOW(directus_users, role)": { _some: { token: { _nnull: true } } } } }, "directus_roles");
	refused({ fields: ["id"], filter: { "year(last_access)": { _eq: 2026 } } }, "directus_users");
	refused({ fields: ["id"], sort: ["last_access"] }, "directus_users");
	refused({ fields: ["id"], sort: ["-user.last_page"] }, "credit_transactions");
	refused({ aggregate: { max: ["last_access"] } }, "directus_users");
	refused({ aggregate: { count: ["*"] }, group: ["provider"] }, "directus_users");
	refused({ fields: ["id"], search: "premium" }, "directus_users");
	refused({ fields: ["id", "x"], alias: { x: "auth_data" } }, "directus_users");
	refused({ fields: ["id", "x.id"], alias: { x: "user" } }, "credit_transactions");
	refused({ fields: ["id"], deep: { user: { _filter: { auth_data: { _nnull: true } } } } }, "credit_transactions");
	refused({ fields: ["id"], deep: { user: { _sort: ["last_access"] } } }, "credit_transactions");
	refused({ fields: ["id"], deep: { user: { _search: "x" } } }, "credit_transactions");
	refused({ fields: ["id"], deep: { user: { _alias: { x: "auth_data" } } } }, "credit_transactions");
});

test("user records lose every field the sidecar may not read", () => {
	const allowed = { id: "u", email: "e", status: "active", subscription_tier: "free", email_notifications: true };
	const record = { ...allowed, auth_data: "{}", token: "**********" };
	assert.deepEqual(stripUserRecords([{ ...record }]), [allowed]);
	assert.deepEqual(stripUserRecords({ ...record, password: "x" }), allowed);
	assert.equal(stripUserRecords(null), null);
});

function fakeDatabase(rowsByName) {
	const calls = [];
	const database = {
		select: (column) => ({
			from: (table) => ({
				where: async (field, value) => {
					calls.push([column, table, field, value]);
					if (value === "boom") throw new Error("database down");
					return rowsByName[value] ?? [];
				},
			}),
		}),
	};
	return { database, calls };
}

test("service role: resolved by name through the database, cached, invalidated", async () => {
	const { database, calls } = fakeDatabase({ [DEFAULT_SERVICE_ROLE]: [{ id: "r1" }], twin: [{ id: "a" }, { id: "b" }] });
	let clock = 0;
	const resolver = createServiceRoleResolver(undefined, { ttlMs: 1000, now: () => clock });
	assert.equal(resolver.value, DEFAULT_SERVICE_ROLE);
	assert.deepEqual([...(await resolver.resolve(database))], ["r1"]);
	assert.deepEqual([...(await resolver.resolve(database))], ["r1"]);
	assert.deepEqual(calls, [["id", "directus_roles", "name", DEFAULT_SERVICE_ROLE]], "one lookup while cached");
	clock = 1001;
	await resolver.resolve(database);
	assert.equal(calls.length, 2, "looked up again after the TTL");
	resolver.invalidate();
	await resolver.resolve(database);
	assert.equal(calls.length, 3, "looked up again after a role change");

	const twins = createServiceRoleResolver("twin");
	assert.deepEqual([...(await twins.resolve(database))].sort(), ["a", "b"], "every role of that name is narrowed");
	const missing = createServiceRoleResolver("nobody");
	assert.equal((await missing.resolve(database)).size, 0);

	const failing = createServiceRoleResolver("boom");
	await assert.rejects(failing.resolve(database));
	await assert.rejects(failing.resolve(database));
	assert.equal(calls.filter((c) => c[3] === "boom").length, 2, "a failed lookup is not cached");

	const id = "3F2504E0-4F89-41D3-9A0C-0305E82C3301";
	const byId = createServiceRoleResolver(id);
	const before = calls.length;
	assert.deepEqual([...(await byId.resolve(database))], [id.toLowerCase()]);
	assert.equal(calls.length, before, "a role id needs no lookup");
});

test("service role: a lookup still running on one connection never holds up a caller on another", async () => {
	// SQLite has one connection: a request inside a transaction must look the role up on that transaction,
	// never wait for a lookup another request started and that needs the connection the first one holds.
	let release;
	const stuck = { select: () => ({ from: () => ({ where: () => new Promise((resolve) => (release = resolve)) }) }) };
	const { database } = fakeDatabase({ [DEFAULT_SERVICE_ROLE]: [{ id: "r1" }] });
	const resolver = createServiceRoleResolver(undefined);
	const waiting = resolver.resolve(stuck);
	assert.deepEqual([...(await resolver.resolve(database))], ["r1"], "answered on its own connection");
	release([{ id: "r1" }]);
	assert.deepEqual([...(await waiting)], ["r1"]);
});

test("service role: a lookup that started before a role change does not refill the cache", async () => {
	let release;
	const slow = { select: () => ({ from: () => ({ where: () => new Promise((resolve) => (release = resolve)) }) }) };
	const { database, calls } = fakeDatabase({ [DEFAULT_SERVICE_ROLE]: [{ id: "new" }] });
	const resolver = createServiceRoleResolver(undefined);
	const before = resolver.resolve(slow);
	resolver.invalidate();
	release([{ id: "old" }]);
	await before;
	assert.deepEqual([...(await resolver.resolve(database))], ["new"]);
	assert.equal(calls.length, 1, "looked up again: the old answer was not cached");
});

test("service role: matched on the role or a parent role", () => {
	const ids = new Set(["r1"]);
	assert.equal(isServiceAccountability({ role: "r1", roles: ["r1"] }, ids), true);
	assert.equal(isServiceAccountability({ role: "child", roles: ["child", "r1"] }, ids), true);
	assert.equal(isServiceAccountability({ role: "admin", roles: ["admin"], admin: true }, ids), false);
	assert.equal(isServiceAccountability({ role: null, roles: [] }, ids), false);
	assert.equal(isServiceAccountability(null, ids), false);
	assert.equal(isServiceAccountability({ role: "r1" }, new Set()), false);
});

test("register: the sidecar's role is narrowed, admins and end users are not", async () => {
	const filters = new Map();
	register({ filter: (e, h) => filters.set(e, h), action: () => {} }, { env: {}, logger: captureLogger().logger });
	const { database, calls } = fakeDatabase({ [DEFAULT_SERVICE_ROLE]: [{ id: "svc" }] });
	const schema = { relations: RELATIONS };
	const sidecar = { database, schema, accountability: { user: "s", role: "svc", roles: ["svc"], admin: false } };
	const adminCtx = { database, schema, accountability: { user: "a", role: "adm", roles: ["adm"], admin: true } };
	const endUser = { database, schema, accountability: { user: "e", role: null, roles: [], admin: false } };
	const system = { database, schema, accountability: null };

	const create = filters.get("credit_transactions.items.create");
	const grant = { user: "u", transaction_type: "grant", cost_cents: 100 };
	await assert.rejects(create(grant, {}, sidecar), { status: 403, code: "FORBIDDEN" });
	const deduction = { ...grant, transaction_type: "deduction" };
	assert.deepEqual(await create(deduction, {}, sidecar), deduction);
	for (const ctx of [adminCtx, endUser, system]) assert.deepEqual(await create(grant, {}, ctx), grant);

	const usersQuery = filters.get("users.query");
	const users = { collection: "directus_users" };
	assert.deepEqual((await usersQuery({ fields: ["*"] }, users, sidecar)).fields, [...SIDECAR_USER_FIELDS]);
	await assert.rejects(usersQuery({ fields: ["auth_data"] }, users, sidecar), { status: 403 });
	assert.deepEqual(await usersQuery({ fields: ["auth_data"] }, users, adminCtx), { fields: ["auth_data"] });

	const itemsQuery = filters.get("items.query");
	const ledger = { collection: "credit_transactions" };
	await assert.rejects(itemsQuery({ fields: ["user.auth_data"] }, ledger, sidecar), { status: 403 });
	assert.deepEqual(await itemsQuery({ fields: ["user.auth_data"] }, ledger, adminCtx), { fields: ["user.auth_data"] });

	const usersRead = filters.get("users.read");
	const rows = () => [{ id: "u", email: "e", auth_data: "{}" }];
	assert.deepEqual(await usersRead(rows(), { query: {} }, sidecar), [{ id: "u", email: "e" }]);
	assert.deepEqual(await usersRead(rows(), { query: {} }, adminCtx), rows());
	assert.deepEqual(await usersRead([{ count: 3 }], { query: { aggregate: { count: ["*"] } } }, sidecar), [{ count: 3 }]);

	assert.equal(calls.length, 1, "the role was looked up once");
});

test("a successful sign-in is reported with the account's e-mail only, never the password", async () => {
	const password = "correct horse battery staple";
	assert.equal(signedInEmail({ status: "success", payload: { email: " Pat@Example.com ", password } }), "pat@example.com");
	for (const meta of [
		{ status: "fail", payload: { email: "pat@example.com", password } },
		{ status: "success", payload: {} },
		{ status: "success", payload: { email: 42 } },
		null,
	]) {
		assert.equal(signedInEmail(meta), null, JSON.stringify(meta));
	}
	const body = JSON.parse(buildSignInBody("pat@example.com", new Date(0)));
	assert.deepEqual(body, { type: SIGN_IN_EVENT, timestamp: "1970-01-01T00:00:00.000Z", data: { email: "pat@example.com" } });

	// Registered, it posts a signed webhook for a success and nothing for a failure.
	const server = http.createServer();
	const received = [];
	server.on("request", (req, res) => {
		let text = "";
		req.on("data", (chunk) => (text += chunk));
		req.on("end", () => {
			received.push({ headers: req.headers, text });
			res.writeHead(200).end("{}");
		});
	});
	server.listen(0, "127.0.0.1");
	await once(server, "listening");
	const actions = new Map();
	const secret = newSecret();
	const env = { BYOK_BRIDGE_URL: `http://127.0.0.1:${server.address().port}`, BYOK_BRIDGE_WEBHOOK_SECRET: secret };
	register({ filter: () => {}, action: (e, h) => actions.set(e, h) }, { env, logger: captureLogger().logger });
	actions.get(SIGN_IN_EVENT)({ status: "fail", payload: { email: "pat@example.com", password } });
	actions.get(SIGN_IN_EVENT)({ status: "success", payload: { email: "Pat@example.com", password } });
	while (received.length === 0) await new Promise((resolve) => setTimeout(resolve, 10));
	server.close();
	assert.equal(received.length, 1);
	const [{ headers, text }] = received;
	assert.ok(!text.includes(password));
	assert.deepEqual(JSON.parse(text).data, { email: "pat@example.com" });
	const expected = signWebhook(decodeWebhookSecret(secret), headers["webhook-id"], headers["webhook-timestamp"], Buffer.from(text));
	assert.equal(headers["webhook-signature"], expected);
});
