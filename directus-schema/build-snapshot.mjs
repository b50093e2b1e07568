#!/usr/bin/env node
// Generator for directus-schema/snapshot.yaml (kept so the snapshot can be reproduced and reviewed).
//
// Creates byok-bridge's collections, fields and relations through the REST API of a FRESH Directus 12.4.0
// (SQLite) as admin, with full `meta` so everything is managed and lands in the snapshot, then writes the
// instance's schema snapshot (GET /schema/snapshot, YAML-dumped with Directus' own js-yaml, exactly as
// `directus schema snapshot` does) to OUTPUT:
//
//   DIRECTUS_URL=http://127.0.0.1:PORT DIRECTUS_ADMIN_EMAIL=admin@example.com DIRECTUS_ADMIN_PASSWORD=... \
//   DIRECTUS_INSTALL_DIR=$(scripts/directus-install.sh | tail -n1) \
//     node directus-schema/build-snapshot.mjs directus-schema/snapshot.yaml
//
// One deliberate edit: SQLite has no DECIMAL (knex makes it FLOAT, and the snapshot then says `float`), so
// the two money fields, credit_transactions.cost_cents and api_key_usage.estimated_cost_cents, are written
// as decimal(20,9) (cents exact to a billionth of a cent), which PostgreSQL honours as numeric(20,9). On
// SQLite the columns still end up FLOAT (a double: about 15 significant digits).
//
// Normal use never runs this: scripts/directus-up.sh applies the committed snapshot.
// Node >= 20 (global fetch). Prints nothing secret.

import { createRequire } from "node:module";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

// The shipped providers, from the sidecar's own catalog: provider fields offer them and accept any other id
// (an operator's PROVIDERS_FILE may declare more).
const PROVIDERS = JSON.parse(readFileSync(new URL("../catalog/providers.json", import.meta.url), "utf8")).providers.map(
	({ id, name }) => ({ text: name, value: id }),
);

const outputFile = process.argv[2];
const installDir = process.env.DIRECTUS_INSTALL_DIR;
const baseUrl = (process.env.DIRECTUS_URL ?? "").replace(/\/+$/, "");
const email = process.env.DIRECTUS_ADMIN_EMAIL;
const password = process.env.DIRECTUS_ADMIN_PASSWORD;
if (!baseUrl || !email || !password || !installDir || !outputFile) {
	console.error(
		"usage: DIRECTUS_URL=.. DIRECTUS_ADMIN_EMAIL=.. DIRECTUS_ADMIN_PASSWORD=.. DIRECTUS_INSTALL_DIR=.. build-snapshot.mjs OUTPUT.yaml",
	);
	process.exit(2);
}

let token;
async function api(method, path, body) {
	const res = await fetch(`${baseUrl}${path}`, {
		method,
		headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
		body: body === undefined ? undefined : JSON.stringify(body),
		signal: AbortSignal.timeout(30_000),
	});
	const text = await res.text();
	if (!res.ok) throw new Error(`${method} ${path} -> HTTP ${res.status}: ${text.slice(0, 2000)}`);
	return text ? JSON.parse(text) : null;
}

// ---- field builders --------------------------------------------------------------------------------

const choices = (...values) => values.map((value) => ({ text: titleCase(value), value }));
function titleCase(value) {
	return value
		.split("_")
		.map((w) => w.charAt(0).toUpperCase() + w.slice(1))
		.join(" ");
}

function integerPk() {
	return {
		field: "id",
		type: "integer",
		schema: { is_primary_key: true, has_auto_increment: true, is_nullable: false },
		meta: { hidden: true, readonly: true, interface: "input" },
	};
}
function uuidPk() {
	return {
		field: "id",
		type: "uuid",
		schema: { is_primary_key: true, is_nullable: false },
		meta: { special: ["uuid"], hidden: true, readonly: true, interface: "input" },
	};
}
function str(field, { required = false, unique = false, nullable = !required, maxLength = 255, ...meta } = {}) {
	return {
		field,
		type: "string",
		schema: { max_length: maxLength, is_nullable: nullable, is_unique: unique },
		meta: { interface: "input", required, ...meta },
	};
}
function text(field, { required = false, nullable = !required, ...meta } = {}) {
	return {
		field,
		type: "text",
		schema: { is_nullable: nullable },
		meta: { interface: "input-multiline", required, ...meta },
	};
}
function select(field, values, { required = false, nullable = !required, defaultValue = null, ...meta } = {}) {
	return {
		field,
		type: "string",
		schema: { max_length: 255, is_nullable: nullable, default_value: defaultValue },
		meta: {
			interface: "select-dropdown",
			options: { choices: choices(...values), allowNone: nullable },
			display: "labels",
			display_options: { choices: choices(...values) },
			required,
			...meta,
		},
	};
}
function providerField({ required = false, nullable = !required, ...meta } = {}) {
	return {
		field: "provider",
		type: "string",
		schema: { max_length: 255, is_nullable: nullable, default_value: null },
		meta: {
			interface: "select-dropdown",
			options: { choices: PROVIDERS, allowNone: nullable, allowOther: true },
			display: "labels",
			display_options: { choices: PROVIDERS },
			required,
			...meta,
		},
	};
}
function bool(field, defaultValue, meta = {}) {
	return {
		field,
		type: "boolean",
		schema: { default_value: defaultValue, is_nullable: false },
		meta: { special: ["cast-boolean"], interface: "boolean", display: "boolean", width: "half", ...meta },
	};
}
// Money in cents with 9 decimals; the sidecar writes decimal strings such as "0.000345000".
const MONEY = Object.freeze({ numeric_precision: 20, numeric_scale: 9 });
function money(field, { defaultValue = 0, nullable = true, ...meta } = {}) {
	return {
		field,
		type: "decimal",
		schema: { ...MONEY, default_value: defaultValue, is_nullable: nullable },
		meta: { interface: "input", ...meta },
	};
}
function int(field, { defaultValue = null, nullable = true, ...meta } = {}) {
	return {
		field,
		type: "integer",
		schema: { default_value: defaultValue, is_nullable: nullable },
		meta: { interface: "input", ...meta },
	};
}
function timestamp(field, meta = {}) {
	return {
		field,
		type: "timestamp",
		schema: { is_nullable: true },
		meta: { interface: "datetime", display: "datetime", display_options: { relative: true }, width: "half", ...meta },
	};
}
// When the LLM call ended, as the sidecar saw it: a record can reach Directus long after the call (spool,
// outage, backlog), so created_at (the insert) is not the time of use. Nullable: rows not written by the
// sidecar (grants, refunds, older rows) leave it empty.
function occurredAt() {
	return timestamp("occurred_at", {
		readonly: true,
		note: "When the LLM call ended (set by byok-bridge); created_at is when Directus stored the row",
	});
}
// The model asked for, when another served the call (a fallback chain, see the README's "Model aliases and
// fallbacks"). Nullable: a call served by the model asked for leaves it empty.
function fallbackFrom() {
	return str("fallback_from", {
		width: "half",
		readonly: true,
		note: "The model asked for, when it was unavailable and this row's model served the call instead (set by byok-bridge)",
	});
}
function dateCreated(field) {
	return timestamp(field, { special: ["date-created"], readonly: true, note: "Set by Directus on create" });
}
function dateUpdated(field) {
	return timestamp(field, { special: ["date-updated"], readonly: true, note: "Set by Directus on every update" });
}
function userM2o(field, { required = false, nullable = true, special = ["m2o"], ...meta } = {}) {
	return {
		field,
		type: "uuid",
		schema: { is_nullable: nullable },
		meta: {
			special,
			interface: "select-dropdown-m2o",
			options: { template: "{{email}}" },
			display: "related-values",
			display_options: { template: "{{email}}" },
			required,
			width: "half",
			...meta,
		},
	};
}
function relation(collection, field, onDelete) {
	return {
		collection,
		field,
		related_collection: "directus_users",
		schema: { on_delete: onDelete },
		meta: { sort_field: null },
	};
}

// Sort fields in the item form in the order listed.
function ordered(fields) {
	return fields.map((f, i) => ({ ...f, meta: { sort: i + 1, width: "full", ...f.meta } }));
}

// ---- collections -----------------------------------------------------------------------------------

const collections = [
	{
		collection: "feature_flags",
		meta: {
			icon: "flag",
			note: "Feature flags read by the byok-bridge sidecar (BYOK routing: byok_enabled, byok_uses_internal_credits, byok_only_mode). Only admins may edit; every change is pushed to the sidecar by the byok-bridge hook.",
			display_template: "{{name}} ({{key}})",
			sort_field: "sort_order",
			accountability: "all",
			hidden: false,
			singleton: false,
		},
		schema: {},
		fields: ordered([
			integerPk(),
			str("key", {
				required: true,
				unique: true,
				nullable: false,
				options: { font: "monospace", placeholder: "byok_enabled" },
				note: "Stable identifier used by code (snake_case, unique)",
				width: "half",
				validation: { _and: [{ key: { _regex: "^[a-z][a-z0-9_]*$" } }] },
				validation_message: "Use snake_case: lowercase letters, digits and underscores",
			}),
			bool("is_enabled", false, { note: "Whether the flag is on" }),
			str("name", { note: "Human-readable name", width: "half" }),
			select("category", ["system", "feature", "experiment"], {
				nullable: false,
				defaultValue: "feature",
				width: "half",
				note: "system = platform-wide switch",
			}),
			text("description"),
			select("type", ["system", "premium", "feature"], { width: "half", note: "What kind of flag this is" }),
			select("min_tier", ["free", "premium", "lifetime"], {
				width: "half",
				note: "Lowest subscription tier the flag applies to (empty = all tiers)",
			}),
			int("sort_order", { width: "half", note: "Display and evaluation order" }),
			dateCreated("date_created"),
			dateUpdated("date_updated"),
			userM2o("user_updated", {
				special: ["user-updated"],
				readonly: true,
				display: "user",
				display_options: null,
				note: "Last admin who changed the flag",
			}),
		]),
	},
	{
		collection: "user_api_keys",
		meta: {
			icon: "vpn_key",
			note: "Users' own provider API keys (BYOK), encrypted by the byok-bridge sidecar (AES-256-GCM). Write only through the sidecar; encrypted_key is never shown and never kept in revisions.",
			display_template: "{{provider}} {{key_hint}} ({{status}})",
			// "activity" (not "all"): revisions would otherwise keep a copy of every encrypted_key written.
			accountability: "activity",
			hidden: false,
			singleton: false,
		},
		schema: {},
		fields: ordered([
			uuidPk(),
			userM2o("user", { required: true, nullable: false, note: "Owner of the key" }),
			providerField({ required: true, width: "half" }),
			text("encrypted_key", {
				required: true,
				nullable: false,
				readonly: true,
				interface: "input",
				options: { masked: true },
				note: "Ciphertext envelope produced by byok-bridge (byok:v1:...). Never paste a plaintext key here.",
			}),
			str("key_hint", { maxLength: 24, width: "half", note: "Masked form for display, e.g. sk-...AbCd" }),
			bool("is_active", true),
			select("status", ["unverified", "active", "invalid", "quota_exceeded", "rate_limited"], {
				nullable: false,
				defaultValue: "unverified",
				width: "half",
			}),
			timestamp("last_validated_at"),
			text("last_error", { note: "Last provider error (never contains the key)" }),
			dateCreated("date_created"),
			dateUpdated("date_updated"),
		]),
	},
	{
		collection: "api_key_usage",
		meta: {
			icon: "query_stats",
			note: "One row per AI request served with a user's own key (BYOK). Written by the byok-bridge sidecar.",
			display_template: "{{provider}} {{model}} ({{total_tokens}} tokens)",
			// null: no directus_activity row per record. Only the sidecar writes here (one row per call, never
			// edited), and the activity row would repeat what the row says while costing as much Directus CPU as
			// the row itself (measured: 2,711 rows/s instead of 1,578 on SQLite, 2,667 instead of 1,428 on
			// PostgreSQL, batches of 1000). credit_transactions keeps "activity": admins grant credits by hand.
			accountability: null,
			hidden: false,
			singleton: false,
		},
		schema: {},
		fields: ordered([
			uuidPk(),
			userM2o("user", { required: true }),
			str("provider", { width: "half" }),
			str("model", { width: "half" }),
			int("prompt_tokens", { defaultValue: 0, width: "half" }),
			int("completion_tokens", { defaultValue: 0, width: "half" }),
			int("total_tokens", { defaultValue: 0, width: "half" }),
			money("estimated_cost_cents", {
				width: "half",
				note: "Estimated provider cost in cents, up to 9 decimals (paid by the user's key)",
			}),
			str("request_id", {
				unique: true,
				nullable: true,
				options: { font: "monospace" },
				note: "Idempotency key: one row per request",
			}),
			dateCreated("created_at"),
			// Appended after created_at so every earlier field keeps its sort (and its snapshot entry) unchanged.
			occurredAt(),
			fallbackFrom(),
		]),
	},
	{
		collection: "credit_transactions",
		meta: {
			icon: "account_balance_wallet",
			note: "Internal credit ledger in cents, exact to 9 decimals. Balance = grants + refunds - deductions; there is no balance field.",
			display_template: "{{transaction_type}} {{cost_cents}} ({{service_type}})",
			// "activity" (not null): who created, changed or deleted a row, and when (admins' manual grants and
			// corrections included), at about 0.3 ms of Directus CPU per deduction. No revisions ("all"): amounts
			// are not copied into directus_revisions.
			accountability: "activity",
			hidden: false,
			singleton: false,
		},
		schema: {},
		fields: ordered([
			uuidPk(),
			userM2o("user", { required: true }),
			select("transaction_type", ["grant", "deduction", "refund"], { required: true, nullable: false, width: "half" }),
			str("service_type", { width: "half", note: "e.g. signup_bonus, chat_completion" }),
			money("cost_cents", {
				nullable: false,
				required: true,
				width: "half",
				note: "Amount in cents, up to 9 decimals (e.g. 0.000345), always >= 0 (the type gives the sign)",
				validation: { _and: [{ cost_cents: { _gte: 0 } }] },
				validation_message: "cost_cents must be >= 0",
			}),
			str("description"),
			str("request_id", {
				unique: true,
				nullable: true,
				options: { font: "monospace" },
				note: "Idempotency key: one row per request",
			}),
			dateCreated("created_at"),
			// Usage of the LLM call a deduction paid for (internal credits), written by the sidecar. Appended
			// after created_at so every earlier field keeps its sort (and its snapshot entry) unchanged.
			// Nullable: grants, refunds and non-LLM deductions leave them empty.
			providerField({
				width: "half",
				readonly: true,
				note: "LLM provider of the call this deduction paid for (set by byok-bridge)",
			}),
			str("model", { width: "half", readonly: true, note: "Model of that call, e.g. gpt-4o-mini (set by byok-bridge)" }),
			int("prompt_tokens", { width: "half", readonly: true, note: "Prompt tokens reported by the provider" }),
			int("completion_tokens", { width: "half", readonly: true, note: "Completion tokens reported by the provider" }),
			int("total_tokens", { width: "half", readonly: true, note: "Total tokens reported by the provider" }),
			occurredAt(),
			fallbackFrom(),
		]),
	},
	{
		collection: "user_budgets",
		meta: {
			icon: "savings",
			note:
				"Spending caps a user set for themselves, in whole cents (empty means the plan's default). Written by the byok-bridge sidecar (PUT /v1/budget); admins may set them here too. The sidecar never applies more than the plan's ceiling.",
			display_template: "{{user.email}}: {{credits_daily_cents}} / {{credits_monthly_cents}} cents",
			accountability: null,
			hidden: false,
			singleton: false,
		},
		schema: {},
		fields: ordered([
			integerPk(),
			(() => {
				const user = userM2o("user", { required: true, nullable: false });
				return { ...user, schema: { ...user.schema, is_unique: true } };
			})(),
			int("credits_daily_cents", {
				width: "half",
				note: "Most the user may spend in credits per UTC day, in whole cents; empty: the plan's default.",
			}),
			int("credits_monthly_cents", {
				width: "half",
				note: "Most the user may spend in credits per UTC month, in whole cents; empty: the plan's default.",
			}),
			int("own_keys_daily_cents", {
				width: "half",
				note: "Most the user's own API keys may spend per UTC day (at the providers' prices), in whole cents; empty: the plan's default.",
			}),
			int("own_keys_monthly_cents", {
				width: "half",
				note: "Most the user's own API keys may spend per UTC month (at the providers' prices), in whole cents; empty: the plan's default.",
			}),
		]),
	},
];

const relations = [
	relation("feature_flags", "user_updated", "SET NULL"),
	relation("user_api_keys", "user", "CASCADE"),
	relation("api_key_usage", "user", "SET NULL"),
	relation("credit_transactions", "user", "SET NULL"),
	relation("user_budgets", "user", "CASCADE"),
];

const subscriptionTier = select("subscription_tier", ["free", "premium", "lifetime"], {
	nullable: false,
	defaultValue: "free",
	width: "half",
	note: "Subscription tier (gates BYOK: premium and lifetime)",
});

// ---- apply -----------------------------------------------------------------------------------------

const login = await api("POST", "/auth/login", { email, password });
token = login.data.access_token;

for (const c of collections) {
	await api("POST", "/collections", c);
	console.error(`created collection ${c.collection} (${c.fields.length} fields)`);
}
await api("POST", "/fields/directus_users", subscriptionTier);
console.error("created field directus_users.subscription_tier");
for (const r of relations) {
	await api("POST", "/relations", r);
	console.error(`created relation ${r.collection}.${r.field} -> ${r.related_collection} (${r.schema.on_delete})`);
}

// ---- snapshot --------------------------------------------------------------------------------------

const { dump } = createRequire(join(installDir, "package.json"))("js-yaml");
const snapshot = (await api("GET", "/schema/snapshot")).data;

for (const [collection, field] of [
	["credit_transactions", "cost_cents"],
	["api_key_usage", "estimated_cost_cents"],
]) {
	const money = snapshot.fields.find((f) => f.collection === collection && f.field === field);
	if (!money) throw new Error(`${collection}.${field} missing from the snapshot`);
	money.type = "decimal";
	Object.assign(money.schema, { data_type: "decimal", ...MONEY });
}

writeFileSync(outputFile, dump(snapshot));
console.error(`wrote ${outputFile}`);
