// byok-bridge Directus hook (plain ESM, no build step; loaded by Directus 12 through dist/index.js).
//
// 1. feature_flags create/update/delete -> signed Standard Webhooks POST to
//    `${BYOK_BRIDGE_URL}/webhooks/directus`, so the sidecar refreshes its flag cache at once; a successful
//    sign-in -> the same, naming the account (its e-mail only), so the sidecar's sign-in throttle forgets
//    the attempts Directus just forgot.
// 2. user_api_keys create/update -> `encrypted_key` must be byok-bridge ciphertext (never a plaintext
//    provider key typed into the admin app or sent over REST), `key_hint` must be a short masked hint.
//    With BYOK_BRIDGE_KEY_IDS (comma-separated key ids) set, only envelopes under those key ids.
// 3. The sidecar's service role (BYOK_BRIDGE_SERVICE_ROLE, a role name or id; default "byok-bridge
//    sidecar") gets what the Core license cannot express as permissions: it may only create `deduction`
//    rows in credit_transactions (and `grant` rows proven by a Stripe event signed with
//    BYOK_BRIDGE_STRIPE_WEBHOOK_SECRET), and read only a few fields of directus_users (never auth_data,
//    password, token, tfa_secret). Admins and other roles are not affected.
// 4. POST /byok-bridge/usage/:collection: the sidecar's usage records stored a batch per INSERT instead of
//    a createOne per record (usage-ingest.js; BYOK_BRIDGE_BULK_USAGE=false turns it off).
//
// Flows: Directus runs these filters for a Flow's Create/Update Data operation only when its "Emit
// Events" option is on (off by default).
//
// Secrets handled here (the webhook secret, signatures, encrypted keys) are never logged or echoed.

import { createHmac, randomUUID, timingSafeEqual } from "node:crypto";
import http from "node:http";
import https from "node:https";

import { bulkUsageEnabled, USAGE_ROUTE, UUID_RE, usageIngestHandler } from "./usage-ingest.js";

// ---------------------------------------------------------------------------------------------
// user_api_keys validation
// ---------------------------------------------------------------------------------------------

/**
 * The shape of an `encrypted_key` value (a quick syntactic pre-check; isEncryptedKeyEnvelope() is the
 * full rule). Mirrors the Rust sidecar's ciphertext envelope:
 *   byok:v1:<kid: 8 lowercase hex>:<base64url(nonce12 || ciphertext || tag16), no padding>
 * The shortest possible value carries 12 + 1 + 16 = 29 bytes = 39 base64url characters; 1500 characters
 * bounds the size. Keep this in sync with the sidecar's envelope parser.
 */
export const ENCRYPTED_KEY_ENVELOPE_RE = /^byok:v1:([0-9a-f]{8}):([A-Za-z0-9_-]{39,1500})$/;
export const MIN_ENVELOPE_PAYLOAD_BYTES = 12 + 1 + 16;

/**
 * Payload prefixes that are the shipped providers' key prefixes (OpenAI, Anthropic, DeepSeek, OpenRouter:
 * `sk-`; Gemini: `AIza`; Groq: `gsk_`; xAI: `xai-`). `-` and `_` are base64url characters, so a plaintext
 * key such as `sk-proj-...` behind a fake `byok:v1:<kid>:` header can be canonical base64url; this rule
 * refuses it. Part of the envelope's definition: the sidecar never emits a payload that starts with one
 * of these (it draws a new random nonce in that 1-in-262144 case), so no real envelope is ever refused.
 */
export const PROVIDER_KEY_PREFIXES = Object.freeze(["sk-", "AIza", "gsk_", "xai-"]);

/**
 * What is wrong with an `encrypted_key` value: null for a well-formed byok:v1 envelope, "malformed", or
 * "unknown_kid". Well-formed: the header, a payload that is canonical base64url without padding (decoding
 * and re-encoding gives the same string: no stray low bits, length % 4 != 1) of at least nonce + 1 byte +
 * tag, not starting with a provider key prefix, and, when `allowedKids` (a Set) is given, a key id in it.
 * Never decrypts: the hook has no key.
 */
export function envelopeProblem(value, allowedKids = null) {
	if (typeof value !== "string") return "malformed";
	const match = ENCRYPTED_KEY_ENVELOPE_RE.exec(value);
	if (match === null) return "malformed";
	const [, kid, payload] = match;
	if (payload.length % 4 === 1) return "malformed";
	if (PROVIDER_KEY_PREFIXES.some((prefix) => payload.startsWith(prefix))) return "malformed";
	const bytes = Buffer.from(payload, "base64url");
	if (bytes.length < MIN_ENVELOPE_PAYLOAD_BYTES || bytes.toString("base64url") !== payload) return "malformed";
	return allowedKids === null || allowedKids.has(kid) ? null : "unknown_kid";
}

export const isEncryptedKeyEnvelope = (value, allowedKids = null) => envelopeProblem(value, allowedKids) === null;

/**
 * Parses BYOK_BRIDGE_KEY_IDS (comma-separated 8-hex key ids) from Directus' type-cast env.
 * Returns { kids: Set | null, invalid: count }; kids is null when the variable is unset (any key id).
 * Invalid entries are dropped, never widened: with only invalid entries, every envelope is refused.
 * Directus casts values such as `12345678` to numbers; String() gives them back (a value Directus mangles,
 * e.g. `1e000001` -> 10, is counted invalid: write the variable as `string:...` then).
 */
export function parseKeyIds(raw) {
	if (raw === undefined || raw === null || String(raw).trim() === "") return { kids: null, invalid: 0 };
	const items = (Array.isArray(raw) ? raw : String(raw).split(",")).map((item) => String(item).trim().toLowerCase());
	const kids = new Set();
	let invalid = 0;
	for (const item of items) {
		if (item === "") continue;
		if (/^[0-9a-f]{8}$/.test(item)) kids.add(item);
		else invalid++;
	}
	return { kids, invalid };
}

/** A hint is a masked form such as `sk-...AbCd`; anything longer could be (part of) a real key. */
export const KEY_HINT_MAX_CHARS = 24;

export const ENCRYPTED_KEY_REJECTED_MESSAGE =
	"encrypted_key must be ciphertext produced by byok-bridge; store keys through the sidecar's PUT /v1/keys/{provider}";
export const ENCRYPTED_KEY_UNKNOWN_KID_MESSAGE =
	"encrypted_key was sealed with a key id that BYOK_BRIDGE_KEY_IDS does not list; add the sidecar's key id there";
export const KEY_HINT_REJECTED_MESSAGE = `key_hint must be a masked hint of at most ${KEY_HINT_MAX_CHARS} characters`;

/**
 * Shaped like a DirectusError so Directus answers a clean 4xx (a plain Error would become a 500). An Error
 * instance, not a bare object: GraphQL turns thrown non-Errors into INTERNAL_SERVER_ERROR.
 */
function directusError(status, code, message) {
	return Object.assign(new Error(message), { name: "DirectusError", status, code, extensions: { reason: message } });
}
const invalidPayload = (message) => directusError(400, "INVALID_PAYLOAD", message);
const forbidden = (message) => directusError(403, "FORBIDDEN", message);

/**
 * Throws an INVALID_PAYLOAD error for a bad write; returns the payload unchanged otherwise.
 * `allowedKids`: a Set of accepted key ids, or null for any (see parseKeyIds).
 */
export function validateUserApiKeyPayload(payload, allowedKids = null) {
	if (Array.isArray(payload)) {
		for (const item of payload) validateUserApiKeyPayload(item, allowedKids);
		return payload;
	}
	if (payload === null || typeof payload !== "object") return payload;

	const problem = Object.hasOwn(payload, "encrypted_key") ? envelopeProblem(payload.encrypted_key, allowedKids) : null;
	// Never include the rejected value (it may be a plaintext provider key), nor its key id.
	if (problem === "malformed") throw invalidPayload(ENCRYPTED_KEY_REJECTED_MESSAGE);
	if (problem === "unknown_kid") throw invalidPayload(ENCRYPTED_KEY_UNKNOWN_KID_MESSAGE);
	if (Object.hasOwn(payload, "key_hint")) {
		const hint = payload.key_hint;
		if (hint !== null && (typeof hint !== "string" || [...hint].length > KEY_HINT_MAX_CHARS)) {
			throw invalidPayload(KEY_HINT_REJECTED_MESSAGE);
		}
	}
	return payload;
}

// ---------------------------------------------------------------------------------------------
// The sidecar's service role: what the Core license cannot express as permissions
// ---------------------------------------------------------------------------------------------
//
// On the Core license Directus refuses permissions with a field subset, a validation rule, presets or a
// row filter (403 RESOURCE_RESTRICTED), so the sidecar's policy has full-field create on
// credit_transactions and full-field read on directus_users. The hook narrows both for accountabilities
// of the sidecar's role: it may only create `deduction` ledger rows, and may only read the user fields below.

export const DEFAULT_SERVICE_ROLE = "byok-bridge sidecar";
/** What the sidecar reads of a user (tier, account status, notifications). Never auth_data, token, ... */
export const SIDECAR_USER_FIELDS = Object.freeze(["id", "email", "status", "subscription_tier", "email_notifications"]);
const SIDECAR_USER_FIELD_SET = new Set(SIDECAR_USER_FIELDS);
const USERS = "directus_users";

export const LEDGER_WRITE_FORBIDDEN_MESSAGE =
	'the byok-bridge service role may only create credit_transactions with transaction_type "deduction"';
export const USER_READ_FORBIDDEN_MESSAGE =
	`the byok-bridge service role may read only ${SIDECAR_USER_FIELDS.join(", ")} of directus_users`;

/**
 * Throws FORBIDDEN unless every ledger row in `payload` is a deduction, or a grant proven by the Stripe event
 * it carries (see provenStripeGrant; `stripeSecret` from parseStripeSecret, null when payments are off).
 */
export function validateSidecarLedgerPayload(payload, stripeSecret = null) {
	for (const item of Array.isArray(payload) ? payload : [payload]) {
		if (item === null || typeof item !== "object") throw forbidden(LEDGER_WRITE_FORBIDDEN_MESSAGE);
		if (item.transaction_type === "grant" && provenStripeGrant(item, stripeSecret)) {
			delete item.payment_event;
			delete item.payment_signature;
			continue;
		}
		if (item.transaction_type !== "deduction") throw forbidden(LEDGER_WRITE_FORBIDDEN_MESSAGE);
	}
	return payload;
}

// ---------------------------------------------------------------------------------------------
// Credits bought through Stripe
// ---------------------------------------------------------------------------------------------
//
// The sidecar receives Stripe's webhook and grants what was paid. So that its token alone still cannot mint
// credits, a grant carries the Stripe event and its Stripe-Signature, and passes only when they verify against
// BYOK_BRIDGE_STRIPE_WEBHOOK_SECRET (the sidecar's STRIPE_WEBHOOK_SECRET) and name this user, amount and
// payment. A replay of the same event meets the ledger's unique request_id; freshness is the sidecar's check.

const STRIPE_PURCHASE_EVENTS = new Set(["checkout.session.completed", "checkout.session.async_payment_succeeded"]);

/** The endpoint secret as Stripe shows it (`whsec_...`), or null when unset or not of that form. */
export function parseStripeSecret(value) {
	if (typeof value !== "string" || !value.startsWith("whsec_")) return null;
	const rest = value.slice("whsec_".length);
	return rest.length >= 16 && /^[\x21-\x7e]+$/.test(rest) ? value : null;
}

/** Stripe's scheme: some `v1` entry of `header` is hex(HMAC-SHA256(secret, `${t}.${body}`)). */
export function stripeSignatureValid(secret, header, body) {
	const entries = header.split(",").slice(0, 16).map((entry) => entry.trim().split("="));
	const stamp = entries.find(([name]) => name === "t")?.[1];
	if (!stamp || !/^[0-9]{1,12}$/.test(stamp)) return false;
	const expected = createHmac("sha256", secret).update(`${stamp}.`).update(body).digest();
	let matched = false;
	for (const [name, value] of entries) {
		if (name !== "v1" || !/^[0-9a-f]{64}$/.test(value ?? "")) continue;
		matched = timingSafeEqual(Buffer.from(value, "hex"), expected) || matched;
	}
	return matched;
}

/** True when `item` is a grant its signed Stripe event proves: a paid checkout of this user, amount and payment. */
export function provenStripeGrant(item, secret) {
	const { payment_event: body, payment_signature: header } = item;
	if (!secret || typeof body !== "string" || typeof header !== "string") return false;
	if (!stripeSignatureValid(secret, header, body)) return false;
	let event;
	try {
		event = JSON.parse(body);
	} catch {
		return false;
	}
	const session = event?.data?.object;
	if (!STRIPE_PURCHASE_EVENTS.has(event?.type) || session?.payment_status !== "paid") return false;
	const buyer = session.client_reference_id ?? session.metadata?.user_id;
	const payment = session.payment_intent ?? session.id;
	return (
		typeof buyer === "string" &&
		buyer.trim().toLowerCase() === String(item.user).toLowerCase() &&
		item.request_id === `stripe:${payment}` &&
		Number.isSafeInteger(session.amount_total) &&
		Number(item.cost_cents) === session.amount_total
	);
}

/**
 * (collection, field) -> the collection the field leads to, or null, from Directus' schema relations
 * (m2o, o2m through `one_field`, and `$FOLLOW(collection, field)`), as Directus resolves query paths.
 */
export function relatedCollectionResolver(relations = []) {
	return (collection, field) => {
		if (field.startsWith("$FOLLOW(") && field.endsWith(")")) return field.slice(8, -1).split(",")[0].trim();
		const relation = relations.find(
			(r) =>
				(r.collection === collection && r.field === field) ||
				(r.related_collection === collection && r.meta?.one_field === field),
		);
		if (!relation) return null;
		return relation.related_collection === collection ? relation.collection : relation.related_collection;
	};
}

/** `year(date_created)` -> `date_created`, as Directus' parseFilterKey. */
function fieldOfKey(key) {
	const match = /^([^()]+)(\(([^)]+)\))?/.exec(key);
	return (match?.[3] ?? key).trim();
}

/** The collection one path segment leads to from `current`, or null for a plain field. */
function step(current, segment, related) {
	if (segment.startsWith("$FOLLOW(")) return related(current, segment);
	// a2o `field:collection` names the collection it leads to.
	if (segment.includes(":")) return segment.split(":")[1];
	return related(current, fieldOfKey(segment));
}

/**
 * Whether a field path (segments, from `collection`) stays inside what the sidecar may read. In
 * directus_users only SIDECAR_USER_FIELDS, and nothing beyond them. A `*` is only accepted last and
 * with `wildcard` (fields; the caller replaces it inside directus_users): `*.*` could reach any relation.
 */
function pathAllowed(collection, segments, related, { wildcard = false } = {}) {
	let current = collection;
	for (let i = 0; i < segments.length; i++) {
		const segment = segments[i];
		const last = i === segments.length - 1;
		if (segment === "*") return wildcard && last;
		if (current === USERS) return last && SIDECAR_USER_FIELD_SET.has(fieldOfKey(segment));
		const next = step(current, segment, related);
		if (next === null || next === undefined) return true; // a plain field: Directus checks the rest
		current = next;
	}
	return true;
}

/** Paths used by a filter, as Directus' flattenFilter (logical and _some/_none keys skipped). */
function filterPaths(filter, path = [], out = []) {
	if (filter === null || typeof filter !== "object") {
		if (path.length > 0) out.push(path);
		return out;
	}
	for (const [key, value] of Object.entries(filter)) {
		if (Array.isArray(filter)) filterPaths(value, path, out);
		else if (!key.startsWith("_")) filterPaths(value, [...path, key], out);
		else if (["_and", "_or", "_some", "_none"].includes(key)) filterPaths(value, path, out);
		else if (path.length > 0) out.push(path);
	}
	return out;
}

const asList = (value) => (Array.isArray(value) ? value : typeof value === "string" ? value.split(",") : []);

/**
 * Narrows a read query of the sidecar's role on `collection` (directus_users or any items collection)
 * to SIDECAR_USER_FIELDS of directus_users: a `*` inside directus_users becomes the allowed fields, any
 * other reference (fields, filter, sort, aggregate, groupBy, deep) to another user field is refused,
 * and so are `search` on directus_users and `alias` (the sidecar uses neither; both could reach fields
 * this check does not see). Returns the (possibly rewritten) query or throws FORBIDDEN.
 */
export function restrictSidecarQuery(query, collection, related) {
	if (query === null || typeof query !== "object") return query;
	const refuse = () => {
		throw forbidden(USER_READ_FORBIDDEN_MESSAGE);
	};
	if (query.alias !== undefined && query.alias !== null && Object.keys(query.alias).length > 0) refuse();
	if (collection === USERS && query.search !== undefined && query.search !== null && query.search !== "") refuse();

	const rewritten = { ...query };
	const fields = query.fields === undefined || query.fields === null ? ["*"] : asList(query.fields);
	const outFields = [];
	for (const field of fields) {
		const segments = String(field).trim().split(".");
		if (!pathAllowed(collection, segments, related, { wildcard: true })) refuse();
		// A `*` that lands in directus_users becomes the allowed fields (same prefix).
		const prefix = segments.slice(0, -1);
		if (segments.at(-1) === "*" && landsIn(collection, prefix, related) === USERS) {
			for (const allowed of SIDECAR_USER_FIELDS) outFields.push([...prefix, allowed].join("."));
		} else {
			outFields.push(segments.join("."));
		}
	}
	if (collection === USERS || query.fields !== undefined) rewritten.fields = [...new Set(outFields)];

	const paths = [...filterPaths(query.filter ?? null)];
	for (const sort of asList(query.sort)) paths.push(String(sort).trim().replace(/^-/, "").split("."));
	for (const list of Object.values(query.aggregate ?? {})) {
		for (const field of asList(list)) if (field !== "*") paths.push(String(field).split("."));
	}
	for (const field of asList(query.group)) paths.push(String(field).split("."));
	for (const path of paths) if (!pathAllowed(collection, path, related)) refuse();

	checkDeep(query.deep, collection, related, refuse);
	return rewritten;
}

/** The collection a relational prefix (segments) ends in. */
function landsIn(collection, segments, related) {
	let current = collection;
	for (const segment of segments) {
		const next = step(current, segment, related);
		if (next === null || next === undefined) return null;
		current = next;
	}
	return current;
}

/** `deep` nests per-relation queries: `{user: {_filter: {...}, _sort: [...], role: {...}}}`. */
const DEEP_OPTIONS = new Set(["_filter", "_sort", "_limit", "_offset", "_page", "_search"]);
function checkDeep(deep, collection, related, refuse) {
	if (deep === null || typeof deep !== "object") return;
	for (const [key, nested] of Object.entries(deep)) {
		if (key.startsWith("_") || nested === null || typeof nested !== "object") continue;
		const next = landsIn(collection, [key], related);
		if (next === null) continue;
		for (const option of Object.keys(nested)) {
			if (option.startsWith("_") && !DEEP_OPTIONS.has(option)) refuse(); // _alias, _aggregate, _group, ...
		}
		if (next === USERS && nested._search) refuse();
		const paths = filterPaths(nested._filter ?? null);
		for (const sort of asList(nested._sort)) paths.push(String(sort).trim().replace(/^-/, "").split("."));
		for (const path of paths) if (!pathAllowed(next, path, related)) refuse();
		checkDeep(nested, next, related, refuse);
	}
}

/** Drops every field the sidecar may not read from directus_users records (defence in depth). */
export function stripUserRecords(records) {
	const strip = (record) => {
		if (record === null || typeof record !== "object") return record;
		for (const key of Object.keys(record)) if (!SIDECAR_USER_FIELD_SET.has(key)) delete record[key];
		return record;
	};
	if (Array.isArray(records)) records.forEach(strip);
	else strip(records);
	return records;
}

/** True when the accountability's role (or one of its parent roles) is one of `roleIds`. */
export function isServiceAccountability(accountability, roleIds) {
	if (!accountability || roleIds.size === 0) return false;
	if (accountability.role && roleIds.has(accountability.role)) return true;
	return Array.isArray(accountability.roles) && accountability.roles.some((role) => roleIds.has(role));
}

/**
 * Resolves BYOK_BRIDGE_SERVICE_ROLE (a role id, or a role name; default "byok-bridge sidecar") to role ids,
 * lazily through the database the event runs on (on SQLite, the open transaction's connection), cached for
 * `ttlMs` and dropped at once when roles change here (`invalidate`). Several roles with that name: all are
 * treated as the sidecar's (narrower, never wider).
 */
export function createServiceRoleResolver(configured, { ttlMs = 30_000, now = Date.now } = {}) {
	const value = configured === undefined || configured === null || String(configured).trim() === ""
		? DEFAULT_SERVICE_ROLE
		: String(configured).trim();
	if (UUID_RE.test(value)) {
		const fixed = new Set([value.toLowerCase()]);
		return { value, resolve: async () => fixed, invalidate: () => {} };
	}
	// Only finished lookups are shared. An in-flight one must not be: it runs on its caller's database handle,
	// and on SQLite (one connection) a request inside a transaction that waited for another request's lookup
	// would wait for the connection it holds itself (Directus then fails every request in flight after 60 s).
	let cached = null; // { at, roles }
	let generation = 0;
	async function lookup(database) {
		const rows = await database.select("id").from("directus_roles").where("name", value);
		return new Set(rows.map((row) => String(row.id)));
	}
	return {
		value,
		async resolve(database) {
			if (cached !== null && now() - cached.at <= ttlMs) return cached.roles;
			const started = generation;
			const roles = await lookup(database); // a failed lookup is not cached
			if (started === generation) cached = { at: now(), roles };
			return roles;
		},
		invalidate() {
			generation += 1;
			cached = null;
		},
	};
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

/**
 * The exact JSON body sent for a feature_flags event. With `flags` (see readFlags) it carries every flag as it
 * stands after the change, so the sidecar applies them without reading Directus back; without, it reloads.
 */
export function buildWebhookBody(event, keys, now = new Date(), flags = null) {
	const body = {
		type: event,
		timestamp: now.toISOString(),
		data: { collection: "feature_flags", keys: keys.map((key) => String(key)) },
	};
	if (flags !== null) body.flags = flags;
	return JSON.stringify(body);
}

/**
 * The body sent when an account signed in to Directus: only the account, as the lowercased e-mail address
 * (never the password or anything else of the login payload). Directus forgets an account's failed attempts
 * when it signs in; the sidecar, which counts the attempts it lets through, forgets them too.
 */
export function buildSignInBody(email, now = new Date()) {
	return JSON.stringify({ type: SIGN_IN_EVENT, timestamp: now.toISOString(), data: { email } });
}

export const SIGN_IN_EVENT = "auth.login";

/** The account of a successful local sign-in (`auth.login` action meta), or null. */
export function signedInEmail(meta) {
	if (meta?.status !== "success") return null;
	const email = meta?.payload?.email;
	return typeof email === "string" && email.trim() !== "" ? email.trim().toLowerCase() : null;
}

/**
 * Every feature_flags row as routing needs it, read after the change was committed: `{read_at, rows}`.
 * `read_at` (ms) is taken before the read, so the rows are at least as new as it says: the sidecar keeps the
 * newest of two snapshots that arrive out of order. null when the read fails (the sidecar then reloads).
 */
export async function readFlags(database, now = Date.now) {
	try {
		const readAt = now();
		const rows = await database.select("key", "is_enabled", "min_tier").from("feature_flags");
		return {
			read_at: readAt,
			rows: rows.map((row) => ({
				key: String(row.key),
				is_enabled: row.is_enabled === true || row.is_enabled === 1 || row.is_enabled === "1",
				min_tier: row.min_tier ?? null,
			})),
		};
	} catch {
		return null;
	}
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
 * Creates the webhook sender. `send(event, keys, flags?)` starts delivering at once (before returning) and
 * resolves { delivered, attempts, status? } when done; it never rejects.
 */
export function createWebhookSender({ url, secretBytes, logger, options = {}, random = Math.random }) {
	const opts = { ...DEFAULTS, ...options };
	const agent =
		opts.agent ??
		(url.protocol === "https:"
			? new https.Agent({ keepAlive: true, maxSockets: 16, maxFreeSockets: 4 })
			: new http.Agent({ keepAlive: true, maxSockets: 16, maxFreeSockets: 4 }));

	function send(event, keys, flags = null) {
		return deliver(event, buildWebhookBody(event, keys, new Date(), flags));
	}

	async function deliver(event, text) {
		// Signed once: every retry carries the same id, timestamp, body and signature (receivers dedupe on id).
		const body = Buffer.from(text, "utf8");
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

	return { send, deliver, agent };
}

// ---------------------------------------------------------------------------------------------
// Registration
// ---------------------------------------------------------------------------------------------

export default function registerByokBridgeHook({ filter, action, init }, { env, logger, database }) {
	const { kids, invalid } = parseKeyIds(env?.BYOK_BRIDGE_KEY_IDS);
	if (invalid > 0) {
		// Never widened: the invalid entries are dropped (none left = every envelope is refused).
		logger.error(
			`byok-bridge: BYOK_BRIDGE_KEY_IDS has ${invalid} entr${invalid === 1 ? "y" : "ies"} that are not 8 hex characters ` +
				"(ignored; if Directus read one as a number, write the variable as string:<ids>)",
		);
	}
	filter("user_api_keys.items.create", (payload) => validateUserApiKeyPayload(payload, kids));
	filter("user_api_keys.items.update", (payload) => validateUserApiKeyPayload(payload, kids));

	// The sidecar's role: only deductions in the ledger, only SIDECAR_USER_FIELDS of users.
	const serviceRole = createServiceRoleResolver(env?.BYOK_BRIDGE_SERVICE_ROLE);
	const isService = async (context) =>
		Boolean(context?.accountability?.role || context?.accountability?.roles?.length) &&
		isServiceAccountability(context.accountability, await serviceRole.resolve(context.database));
	for (const event of ["roles.create", "roles.update", "roles.delete"]) action(event, () => serviceRole.invalidate());

	// The sidecar's usage records, a batch per INSERT (see usage-ingest.js); after Directus's authentication,
	// so req.accountability is the caller's.
	init?.("routes.custom.before", ({ app }) => {
		const isSidecar = async (accountability) => isService({ accountability, database });
		app.post(USAGE_ROUTE, usageIngestHandler({ database, isService: isSidecar, enabled: bulkUsageEnabled(env), logger }));
	});

	const stripeSecret = parseStripeSecret(env?.BYOK_BRIDGE_STRIPE_WEBHOOK_SECRET);
	if (env?.BYOK_BRIDGE_STRIPE_WEBHOOK_SECRET && !stripeSecret) {
		logger.error("byok-bridge: BYOK_BRIDGE_STRIPE_WEBHOOK_SECRET is not a whsec_... secret; purchases cannot be granted");
	}
	filter("credit_transactions.items.create", async (payload, _meta, context) =>
		(await isService(context)) ? validateSidecarLedgerPayload(payload, stripeSecret) : payload,
	);
	filter("users.query", async (query, _meta, context) =>
		(await isService(context))
			? restrictSidecarQuery(query, "directus_users", relatedCollectionResolver(context.schema?.relations))
			: query,
	);
	filter("items.query", async (query, meta, context) =>
		(await isService(context))
			? restrictSidecarQuery(query, meta.collection, relatedCollectionResolver(context.schema?.relations))
			: query,
	);
	filter("users.read", async (records, meta, context) =>
		(await isService(context)) && !meta?.query?.aggregate ? stripUserRecords(records) : records,
	);

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
		// Actions run after commit and are not awaited by Directus. The flags are read back first (one small
		// query, about a millisecond), so the sidecar needs no round trip to Directus to apply them.
		action(event, (meta, context) => {
			readFlags(context?.database)
				.then((flags) => sender.send(event, keysOfActionMeta(meta), flags))
				.catch(() => {});
		});
	}
	// Directus forgets an account's failed sign-ins when it signs in; so must the sidecar's sign-in throttle.
	action(SIGN_IN_EVENT, (meta) => {
		const email = signedInEmail(meta);
		if (email !== null) sender.deliver(SIGN_IN_EVENT, buildSignInBody(email)).catch(() => {});
	});
	logger.info(`byok-bridge: feature_flags and sign-in webhooks go to ${config.url.origin}${WEBHOOK_PATH}`);
}
