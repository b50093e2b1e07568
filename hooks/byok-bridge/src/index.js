// byok-bridge Directus hook (plain ESM, no build step; loaded by Directus 12 through dist/index.js).
//
// 1. feature_flags create/update/delete -> signed Standard Webhooks POST to
//    `${BYOK_BRIDGE_URL}/webhooks/directus`, so the sidecar refreshes its flag cache at once.
// 2. user_api_keys create/update -> `encrypted_key` must be byok-bridge ciphertext (never a plaintext
//    provider key typed into the admin app or sent over REST), `key_hint` must be a short masked hint.
//
// Secrets handled here (the webhook secret, signatures, encrypted keys) are never logged or echoed.

import { createHmac, randomUUID } from "node:crypto";
import http from "node:http";
import https from "node:https";

// ---------------------------------------------------------------------------------------------
// user_api_keys validation
// ---------------------------------------------------------------------------------------------

/**
 * The ONE place that defines what an `encrypted_key` value may look like.
 *
 * Mirrors the Rust sidecar's ciphertext envelope:
 *   byok:v1:<kid: 8 lowercase hex>:<base64url(nonce12 || ciphertext || tag16), no padding>
 * The shortest possible value carries 12 + 1 + 16 = 29 bytes = 39 base64url characters; 1500 characters
 * bounds the size. Keep this in sync with the sidecar's envelope parser.
 */
export const ENCRYPTED_KEY_ENVELOPE_RE = /^byok:v1:[0-9a-f]{8}:[A-Za-z0-9_-]{39,1500}$/;

/** A hint is a masked form such as `sk-...AbCd`; anything longer could be (part of) a real key. */
export const KEY_HINT_MAX_CHARS = 24;

export const ENCRYPTED_KEY_REJECTED_MESSAGE =
	"encrypted_key must be ciphertext produced by byok-bridge; store keys through the sidecar's PUT /v1/keys/{provider}";
export const KEY_HINT_REJECTED_MESSAGE = `key_hint must be a masked hint of at most ${KEY_HINT_MAX_CHARS} characters`;

/** Shaped like a DirectusError so Directus answers a clean 400 (a plain Error would become a 500). */
function invalidPayload(message) {
	return { name: "DirectusError", status: 400, code: "INVALID_PAYLOAD", message, extensions: { reason: message } };
}

/** Throws an INVALID_PAYLOAD error for a bad write; returns the payload unchanged otherwise. */
export function validateUserApiKeyPayload(payload) {
	if (Array.isArray(payload)) {
		for (const item of payload) validateUserApiKeyPayload(item);
		return payload;
	}
	if (payload === null || typeof payload !== "object") return payload;

	if (Object.hasOwn(payload, "encrypted_key")) {
		const value = payload.encrypted_key;
		if (typeof value !== "string" || !ENCRYPTED_KEY_ENVELOPE_RE.test(value)) {
			// Never include the rejected value: it may be a plaintext provider key.
			throw invalidPayload(ENCRYPTED_KEY_REJECTED_MESSAGE);
		}
	}
	if (Object.hasOwn(payload, "key_hint")) {
		const hint = payload.key_hint;
		if (hint !== null && (typeof hint !== "string" || [...hint].length > KEY_HINT_MAX_CHARS)) {
			throw invalidPayload(KEY_HINT_REJECTED_MESSAGE);
		}
	}
	return payload;
}

// ---------------------------------------------------------------------------------------------
// Standard Webhooks signing
// ---------------------------------------------------------------------------------------------

export const WEBHOOK_EVENTS = Object.freeze([
	"feature_flags.items.create",
	"feature_flags.items.update",
	"feature_flags.items.delete",
]);
export const WEBHOOK_PATH = "/webhooks/directus";
const SECRET_PREFIX = "whsec_";
const MIN_SECRET_BYTES = 24;

/**
 * Decodes a Standard Webhooks secret (`whsec_<base64>`). Returns the key bytes, or null when the value is
 * not of that form or decodes to fewer than 24 bytes. `value` may arrive type-cast from Directus' env.
 */
export function decodeWebhookSecret(value) {
	if (value === undefined || value === null) return null;
	const text = String(value).trim();
	if (!text.startsWith(SECRET_PREFIX)) return null;
	const b64 = text.slice(SECRET_PREFIX.length);
	if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) return null;
	const bytes = Buffer.from(b64, "base64");
	// Reject anything Buffer decoded leniently (wrong length / stray bits): it must round-trip.
	if (bytes.toString("base64").replace(/=+$/, "") !== b64.replace(/=+$/, "")) return null;
	if (bytes.length < MIN_SECRET_BYTES) return null;
	return bytes;
}

/** `v1,<base64(HMAC-SHA256(secret, id.timestamp.body))>` per Standard Webhooks. */
export function signWebhook(secretBytes, webhookId, timestampSeconds, body) {
	const mac = createHmac("sha256", secretBytes);
	mac.update(`${webhookId}.${timestampSeconds}.`);
	mac.update(body);
	return `v1,${mac.digest("base64")}`;
}

/** The exact JSON body sent for a feature_flags event. */
export function buildWebhookBody(event, keys, now = new Date()) {
	return JSON.stringify({
		type: event,
		timestamp: now.toISOString(),
		data: { collection: "feature_flags", keys: keys.map((key) => String(key)) },
	});
}

/** Keys of an action event: `key` on create, `keys` on update and delete. */
export function keysOfActionMeta(meta) {
	if (Array.isArray(meta?.keys)) return meta.keys;
	if (meta?.key !== undefined && meta?.key !== null) return [meta.key];
	return [];
}

/**
 * Reads BYOK_BRIDGE_URL / BYOK_BRIDGE_WEBHOOK_SECRET from Directus' (type-cast) env.
 * Returns { state: "missing" | "invalid" | "ok", problem?, url?, secretBytes? }; `problem` never contains
 * the secret.
 */
export function resolveWebhookConfig(env) {
	const rawUrl = env?.BYOK_BRIDGE_URL;
	const rawSecret = env?.BYOK_BRIDGE_WEBHOOK_SECRET;
	const hasUrl = rawUrl !== undefined && rawUrl !== null && String(rawUrl).trim() !== "";
	const hasSecret = rawSecret !== undefined && rawSecret !== null && String(rawSecret).trim() !== "";
	if (!hasUrl || !hasSecret) {
		const missing = [!hasUrl && "BYOK_BRIDGE_URL", !hasSecret && "BYOK_BRIDGE_WEBHOOK_SECRET"].filter(Boolean);
		return { state: "missing", problem: `${missing.join(" and ")} not set` };
	}

	let url;
	try {
		url = new URL(String(rawUrl).trim().replace(/\/+$/, "") + WEBHOOK_PATH);
	} catch {
		return { state: "invalid", problem: "BYOK_BRIDGE_URL is not a valid URL" };
	}
	if (url.protocol !== "http:" && url.protocol !== "https:") {
		return { state: "invalid", problem: "BYOK_BRIDGE_URL must be an http:// or https:// URL" };
	}

	const secretBytes = decodeWebhookSecret(rawSecret);
	if (secretBytes === null) {
		return {
			state: "invalid",
			problem: `BYOK_BRIDGE_WEBHOOK_SECRET must be "whsec_" followed by base64 of at least ${MIN_SECRET_BYTES} bytes`,
		};
	}
	return { state: "ok", url, secretBytes };
}

// ---------------------------------------------------------------------------------------------
// Delivery
// ---------------------------------------------------------------------------------------------

const DEFAULTS = Object.freeze({
	maxAttempts: 5,
	baseDelayMs: 200,
	maxDelayMs: 10_000,
	maxRetryAfterMs: 30_000,
	timeoutMs: 5_000,
});

const STALE_SOCKET_CODES = new Set(["ECONNRESET", "EPIPE"]);

export function isRetryableStatus(status) {
	return status === 408 || status === 429 || (status >= 500 && status <= 599);
}

/** Exponential backoff with jitter: base * 2^(n-1), scaled by a random factor in [0.5, 1.5), capped. */
export function backoffDelayMs(failedAttempt, { baseDelayMs, maxDelayMs }, random = Math.random) {
	const exp = baseDelayMs * 2 ** (failedAttempt - 1);
	return Math.min(maxDelayMs, Math.round(exp * (0.5 + random())));
}

function retryAfterMs(header, cap) {
	if (typeof header !== "string" || header.trim() === "") return 0;
	const seconds = Number(header.trim());
	if (Number.isFinite(seconds) && seconds >= 0) return Math.min(cap, seconds * 1000);
	const date = Date.parse(header);
	if (Number.isFinite(date)) return Math.min(cap, Math.max(0, date - Date.now()));
	return 0;
}

const sleep = (ms) =>
	new Promise((resolve) => {
		// unref: a pending retry must not keep a stopping Directus alive.
		setTimeout(resolve, ms).unref?.();
	});

/**
 * One POST attempt. Resolves { status, retryAfter, reusedSocket } or { error, reusedSocket };
 * never rejects.
 */
function postOnce(url, headers, body, { agent, timeoutMs }) {
	const transport = url.protocol === "https:" ? https : http;
	return new Promise((resolve) => {
		let settled = false;
		let req;
		const finish = (result) => {
			if (settled) return;
			settled = true;
			clearTimeout(timer);
			resolve({ ...result, reusedSocket: req?.reusedSocket === true });
		};
		const timer = setTimeout(() => {
			const err = new Error(`no response within ${timeoutMs} ms`);
			err.code = "ETIMEDOUT";
			req?.destroy(err);
			finish({ error: err });
		}, timeoutMs);
		timer.unref?.();

		try {
			req = transport.request(url, { method: "POST", headers, agent });
		} catch (error) {
			finish({ error });
			return;
		}
		req.on("response", (res) => {
			// Drain so the keep-alive socket goes back to the pool; the sidecar's answer body is not needed.
			res.on("error", () => {});
			res.resume();
			res.on("end", () => finish({ status: res.statusCode, retryAfter: res.headers["retry-after"] }));
			res.on("close", () => finish({ status: res.statusCode, retryAfter: res.headers["retry-after"] }));
		});
		req.on("error", (error) => finish({ error }));
		req.end(body);
	});
}

/**
 * Creates the webhook sender. `send(event, keys)` starts delivering at once (before returning) and
 * resolves { delivered, attempts, status? } when done; it never rejects.
 */
export function createWebhookSender({ url, secretBytes, logger, options = {}, random = Math.random }) {
	const opts = { ...DEFAULTS, ...options };
	const agent =
		opts.agent ??
		(url.protocol === "https:"
			? new https.Agent({ keepAlive: true, maxSockets: 16, maxFreeSockets: 4 })
			: new http.Agent({ keepAlive: true, maxSockets: 16, maxFreeSockets: 4 }));

	async function send(event, keys) {
		// Signed once: every retry carries the same id, timestamp, body and signature (receivers dedupe on id).
		const body = Buffer.from(buildWebhookBody(event, keys), "utf8");
		const webhookId = `msg_${randomUUID()}`;
		const timestamp = String(Math.floor(Date.now() / 1000));
		const headers = {
			"content-type": "application/json",
			"content-length": String(body.length),
			"webhook-id": webhookId,
			"webhook-timestamp": timestamp,
			"webhook-signature": signWebhook(secretBytes, webhookId, timestamp, body),
		};

		let staleSocketRetryUsed = false;
		for (let attempt = 1; attempt <= opts.maxAttempts; attempt++) {
			const result = await postOnce(url, headers, body, { agent, timeoutMs: opts.timeoutMs });
			const logCtx = { event, webhookId, attempt, maxAttempts: opts.maxAttempts };

			if (result.status !== undefined && result.status >= 200 && result.status < 300) {
				if (attempt > 1) logger?.info?.(logCtx, "byok-bridge: webhook delivered after retry");
				return { delivered: true, attempts: attempt, status: result.status };
			}

			const retryable = result.error !== undefined || isRetryableStatus(result.status);
			const reason =
				result.error !== undefined ? (result.error.code ?? result.error.name ?? "network error") : `HTTP ${result.status}`;

			if (!retryable) {
				logger?.error?.({ ...logCtx, reason }, "byok-bridge: webhook rejected by the sidecar, not retrying");
				return { delivered: false, attempts: attempt, status: result.status };
			}
			if (attempt === opts.maxAttempts) {
				logger?.error?.({ ...logCtx, reason }, "byok-bridge: webhook delivery failed, giving up");
				return { delivered: false, attempts: attempt, status: result.status };
			}

			// A pooled keep-alive socket the sidecar had just closed: the request never reached it, so
			// retry once at once instead of waiting (keeps the "webhook before PATCH response" latency).
			if (
				!staleSocketRetryUsed &&
				result.error !== undefined &&
				result.reusedSocket &&
				STALE_SOCKET_CODES.has(result.error.code)
			) {
				staleSocketRetryUsed = true;
				continue;
			}

			let delay = backoffDelayMs(attempt, opts, random);
			if (result.status === 429 || result.status === 503) {
				delay = Math.max(delay, retryAfterMs(result.retryAfter, opts.maxRetryAfterMs));
			}
			// First failure at warn, further retries at debug (one line per webhook at default levels).
			const level = attempt === 1 ? "warn" : "debug";
			logger?.[level]?.({ ...logCtx, reason, retryInMs: delay }, "byok-bridge: webhook delivery failed, will retry");
			await sleep(delay);
		}
		return { delivered: false, attempts: opts.maxAttempts };
	}

	return { send, agent };
}

// ---------------------------------------------------------------------------------------------
// Registration
// ---------------------------------------------------------------------------------------------

export default function registerByokBridgeHook({ filter, action }, { env, logger }) {
	filter("user_api_keys.items.create", (payload) => validateUserApiKeyPayload(payload));
	filter("user_api_keys.items.update", (payload) => validateUserApiKeyPayload(payload));

	const config = resolveWebhookConfig(env);
	if (config.state === "missing") {
		logger.warn(`byok-bridge: ${config.problem}; feature_flags webhooks are disabled`);
		return;
	}
	if (config.state === "invalid") {
		logger.error(`byok-bridge: ${config.problem}; feature_flags webhooks are disabled`);
		return;
	}

	const sender = createWebhookSender({ url: config.url, secretBytes: config.secretBytes, logger });
	for (const event of WEBHOOK_EVENTS) {
		// Actions run after commit and are not awaited by Directus; send() starts the request synchronously.
		action(event, (meta) => {
			sender.send(event, keysOfActionMeta(meta)).catch(() => {});
		});
	}
	logger.info(`byok-bridge: feature_flags webhooks go to ${config.url.origin}${WEBHOOK_PATH}`);
}
