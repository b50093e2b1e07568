#!/usr/bin/env node
// Seed a Directus 12.4.0 that has directus-schema/snapshot.yaml applied (snapshots carry no data, users,
// policies or permissions):
//   - the three BYOK feature flags (created if missing; an existing flag keeps its is_enabled),
//   - the byok-bridge sidecar's API-only service user (policy without app/admin access: no Core seat),
//     with a new random static token and exactly the permissions the sidecar needs,
//   - a static token for the admin,
//   - demo end users (no role, no app access: no seat) with new random passwords and signup credit grants.
// Idempotent: re-running creates no duplicate rows; it rotates the printed passwords and tokens.
// SEED_SERVICE_TOKEN / SEED_ADMIN_TOKEN (optional, 32-256 characters of [A-Za-z0-9_-]): use these static tokens
// instead of random ones, so a deployment can hand the sidecars their DIRECTUS_TOKEN before the seed runs
// (docker-compose.yml does); re-running then keeps them.
// Then it verifies the result (service token can read flags but NOT update them, can write a fractional
// deduction and a usage record as the sidecar does, with occurred_at, and read the user fields it needs, users
// can log in, ...).
//
//   DIRECTUS_URL=http://127.0.0.1:8055 DIRECTUS_ADMIN_EMAIL=admin@example.com DIRECTUS_ADMIN_PASSWORD=... \
//     node scripts/directus-seed.mjs > seed.env
//
// With SEED_CHECK_HOOK=1 it also checks that the byok-bridge hook extension is loaded and enforces what the
// Core license cannot express as permissions: it refuses a plaintext user_api_keys.encrypted_key, ledger
// grants and refunds by the service token, and the service token's reads of other user fields (auth_data, ...),
// while admins keep full access (scripts/directus-up.sh sets it).
//
// stdout: KEY=VALUE lines only (DIRECTUS_TOKEN, DIRECTUS_ADMIN_TOKEN, <TIER>_USER_EMAIL/_PASSWORD/_ID).
// stderr: progress messages, never a secret. Node >= 20 (global fetch).
//
// --production: for an existing Directus with real users. Creates the flags (if missing) and the sidecar's
// service user, role, policy and permissions; creates no demo user, never touches the admin (signs in with the
// given credentials for this run only), and writes nothing to the ledgers. The service token is printed once,
// when the service user is created (DIRECTUS_TOKEN=... on stdout); on later runs it is left alone (running
// sidecars keep working) unless --rotate-service-token asks for a new one.

import { randomBytes, randomUUID } from "node:crypto";

// The hook is plain ESM without dependencies: share its role name and user field list (one source).
import { DEFAULT_SERVICE_ROLE, SIDECAR_USER_FIELDS } from "../hooks/byok-bridge/src/index.js";

const baseUrl = (process.env.DIRECTUS_URL ?? "").replace(/\/+$/, "");
const adminEmail = process.env.DIRECTUS_ADMIN_EMAIL;
const adminPassword = process.env.DIRECTUS_ADMIN_PASSWORD;
if (!baseUrl || !adminEmail || !adminPassword) {
	console.error("directus-seed: set DIRECTUS_URL, DIRECTUS_ADMIN_EMAIL and DIRECTUS_ADMIN_PASSWORD");
	process.exit(2);
}

const log = (msg) => console.error(`[directus-seed] ${msg}`);
const randomToken = () => randomBytes(32).toString("hex"); // 256 bits, [0-9a-f]: shell- and dotenv-safe
const randomPassword = () => randomBytes(24).toString("base64url"); // 192 bits, [A-Za-z0-9_-]

// A static token given in the environment, or a new random one. Never echoed.
function givenToken(name) {
	const value = process.env[name];
	if (value === undefined || value === "") return null;
	if (!/^[A-Za-z0-9_-]{32,256}$/.test(value)) {
		console.error(`directus-seed: ${name} must be 32-256 characters of [A-Za-z0-9_-] (e.g. openssl rand -hex 32)`);
		process.exit(2);
	}
	return value;
}
const production = process.argv.includes("--production");
const rotateServiceToken = process.argv.includes("--rotate-service-token");
const fixedServiceToken = givenToken("SEED_SERVICE_TOKEN");
const fixedAdminToken = givenToken("SEED_ADMIN_TOKEN");
if (fixedServiceToken && fixedServiceToken === fixedAdminToken) {
	console.error("directus-seed: SEED_SERVICE_TOKEN and SEED_ADMIN_TOKEN must differ");
	process.exit(2);
}

// ---- what to seed ----------------------------------------------------------------------------------

const FLAGS = [
	{
		key: "byok_enabled",
		is_enabled: true,
		name: "BYOK enabled",
		description:
			"Controls whether BYOK UI is visible to users. When true, Premium/Lifetime users see the API Keys page and can configure their own API keys. When false, the API Keys page is hidden and BYOK functionality is disabled for all users.",
		category: "system",
		type: "premium",
		min_tier: "premium",
		sort_order: 1,
	},
	{
		key: "byok_uses_internal_credits",
		is_enabled: false,
		name: "BYOK uses internal credits",
		description:
			"Controls whether to use internal credits first before BYOK. false (default, BYOK-first mode): use the user's BYOK keys, else internal credits. true (credit-first mode): use internal credits, else BYOK keys.",
		category: "system",
		type: "system",
		min_tier: null,
		sort_order: 2,
	},
	{
		key: "byok_only_mode",
		is_enabled: false,
		name: "BYOK-only mode",
		description:
			"Forces BYOK-only mode, never uses internal API keys. Overrides byok_uses_internal_credits. When true, internal credits are never used and users must configure their own API keys to use AI features.",
		category: "system",
		type: "system",
		min_tier: null,
		sort_order: 3,
	},
];

const SERVICE = {
	policyName: "byok-bridge sidecar",
	// The hook recognises the sidecar by this role (its BYOK_BRIDGE_SERVICE_ROLE default).
	roleName: DEFAULT_SERVICE_ROLE,
	email: "byok-bridge-sidecar@example.com",
	// [collection, action, narrower rule]. The Core license refuses narrower rules (field subsets, validation,
	// presets, row filters: 403 RESOURCE_RESTRICTED, measured on 12.4.0); there the permission is full-field
	// and the byok-bridge hook enforces the narrower rule for the sidecar's role. Licensed tiers get both.
	permissions: [
		["feature_flags", "read"],
		["directus_users", "read", { fields: [...SIDECAR_USER_FIELDS] }],
		["user_api_keys", "create"],
		["user_api_keys", "read"],
		["user_api_keys", "update"],
		["user_api_keys", "delete"],
		["api_key_usage", "create"],
		["api_key_usage", "read"],
		// Deductions, and grants of bought credits (the hook lets a grant through only with the signed Stripe
		// event that proves it).
		["credit_transactions", "create", { validation: { transaction_type: { _in: ["deduction", "grant"] } } }],
		["credit_transactions", "read"],
		// The caps users set for themselves (PUT /v1/budget).
		["user_budgets", "create"],
		["user_budgets", "read"],
		["user_budgets", "update"],
		["directus_notifications", "create"],
		// A user's own notifications, read and marked read for them (end users have no Directus role); every
		// query the sidecar makes filters on the recipient.
		["directus_notifications", "read"],
		["directus_notifications", "update"],
	],
};

const USERS = [
	{ env: "PREMIUM", email: "premium@example.com", first_name: "Premium", tier: "premium", grantCents: 1000 },
	{ env: "LIFETIME", email: "lifetime@example.com", first_name: "Lifetime", tier: "lifetime", grantCents: 1000 },
	{ env: "FREE", email: "free@example.com", first_name: "Free", tier: "free", grantCents: 500 },
	{ env: "BROKE", email: "broke@example.com", first_name: "Broke", tier: "premium", grantCents: 0 },
];

// ---- HTTP ------------------------------------------------------------------------------------------

class HttpError extends Error {
	constructor(method, path, status, body) {
		// Directus error bodies never echo passwords or tokens; the request body is not included.
		super(`${method} ${path} -> HTTP ${status}: ${body.slice(0, 500)}`);
		this.status = status;
	}
}

async function request(method, path, { token, body } = {}) {
	const res = await fetch(`${baseUrl}${path}`, {
		method,
		headers: {
			accept: "application/json",
			...(body === undefined ? {} : { "content-type": "application/json" }),
			...(token ? { authorization: `Bearer ${token}` } : {}),
		},
		body: body === undefined ? undefined : JSON.stringify(body),
		signal: AbortSignal.timeout(30_000),
	});
	const text = await res.text();
	if (!res.ok) throw new HttpError(method, path, res.status, text);
	return text ? JSON.parse(text).data : null;
}

let adminToken;
const admin = (method, path, body) => request(method, path, { token: adminToken, body });
const q = (params) => `?${new URLSearchParams(params)}`;
const eq = (field, value) => ({ [`filter[${field}][_eq]`]: String(value) });

async function findOne(collectionPath, field, value, fields = "*") {
	const rows = await admin("GET", `${collectionPath}${q({ ...eq(field, value), fields, limit: "2" })}`);
	if (rows.length > 1) throw new Error(`more than one row in ${collectionPath} with ${field} = ${value}`);
	return rows[0] ?? null;
}

// ---- steps -----------------------------------------------------------------------------------------

async function seedAdminToken() {
	const login = await request("POST", "/auth/login", { body: { email: adminEmail, password: adminPassword } });
	adminToken = login.access_token;
	const token = fixedAdminToken ?? randomToken();
	await admin("PATCH", "/users/me", { token });
	adminToken = token;
	const me = await admin("GET", `/users/me${q({ fields: "id" })}`);
	log(`admin static token set${fixedAdminToken ? " (SEED_ADMIN_TOKEN)" : ""} (admin user ${me.id})`);
	return token;
}

async function seedFlags() {
	for (const flag of FLAGS) {
		const existing = await findOne("/items/feature_flags", "key", flag.key, "id,key");
		if (existing) {
			// Keep the operator's on/off choice; refresh the descriptive fields only.
			const { is_enabled: _keep, key: _key, ...rest } = flag;
			await admin("PATCH", `/items/feature_flags/${existing.id}`, rest);
			log(`flag ${flag.key}: exists (id ${existing.id}), metadata refreshed`);
		} else {
			const created = await admin("POST", "/items/feature_flags", flag);
			log(`flag ${flag.key}: created (id ${created.id})`);
		}
	}
}

// ---- the admins' Insights dashboard --------------------------------------------------------------

const DASHBOARD = { name: "byok-bridge", icon: "key", color: "#2563EB", note: "BYOK and platform-credit usage (seeded by byok-bridge)" };
const deductions = { _and: [{ transaction_type: { _eq: "deduction" } }] };
// [name, icon, type, x, y, width, height, options]: Insights' own panel types, nothing to install.
const PANELS = [
	// The admins' operations panel (hooks/byok-bridge-ops): the sidecar's view, spending per day for 30 days with
	// the top users by credit cost (drawn by the panel itself: Insights' own time-series draws nothing for a
	// single day of data, and its lists show "--" for a user), and the BYOK-only pre-flight.
	["byok-bridge: operations", "smart_toy", "byok-bridge-ops", 1, 1, 30, 56, {}],
	["Requests on users' own keys (BYOK share: against the panel beside)", "key", "metric", 31, 1, 12, 6,
		{ collection: "api_key_usage", field: "id", function: "count" }],
	["Requests on platform credits", "savings", "metric", 43, 1, 12, 6,
		{ collection: "credit_transactions", field: "id", function: "count", filter: deductions }],
	["Stored keys by status", "donut_large", "metric-list", 31, 7, 12, 12,
		{ collection: "user_api_keys", groupByField: "status", aggregateField: "id", aggregateFunction: "count", sortDirection: "desc" }],
	["Own-key cost by provider (cents)", "hub", "metric-list", 43, 7, 12, 12,
		{ collection: "api_key_usage", groupByField: "provider", aggregateField: "estimated_cost_cents", aggregateFunction: "sum", sortDirection: "desc", maximumFractionDigits: 4 }],
	["Credit cost by provider (cents)", "hub", "metric-list", 31, 19, 12, 12,
		{ collection: "credit_transactions", groupByField: "provider", aggregateField: "cost_cents", aggregateFunction: "sum", sortDirection: "desc", maximumFractionDigits: 4, filter: deductions }],
];

/** The Insights dashboard, made once (an admin's later edits to it are kept: it is not re-created). */
async function seedDashboard() {
	const existing = await findOne("/dashboards", "name", DASHBOARD.name, "id");
	if (existing) {
		log(`Insights dashboard "${DASHBOARD.name}" exists (id ${existing.id}): left as it is`);
		return existing.id;
	}
	const dashboard = await admin("POST", "/dashboards", DASHBOARD);
	for (const [name, icon, type, x, y, width, height, options] of PANELS) {
		await admin("POST", "/panels", {
			dashboard: dashboard.id, name, icon, type, position_x: x, position_y: y, width, height, options, show_header: true,
		});
	}
	log(`Insights dashboard "${DASHBOARD.name}" created (id ${dashboard.id}, ${PANELS.length} panels)`);
	return dashboard.id;
}

// ---- the example Flow (development and tests; not with --production) ----------------------------------

const NOTES = "byok_demo_notes";
const FLOW_NAME = "byok-bridge: summarize a new note";

/**
 * A demo collection and a Flow: a new note is summarized through the sidecar for the note's user, who pays
 * (their key or their credits). The user comes from the note, a value its writer chooses: safe here because
 * only admins can write notes (no policy grants this collection to anyone else).
 */
async function seedExampleFlow() {
	if (!(await request("GET", `/collections/${NOTES}`, { token: adminToken }).catch(() => null))) {
		await admin("POST", "/collections", {
			collection: NOTES,
			meta: { icon: "sticky_note_2", note: "byok-bridge's example Flow summarizes each new note for its user" },
			schema: {},
			fields: [
				{ field: "id", type: "integer", schema: { is_primary_key: true, has_auto_increment: true }, meta: { hidden: true } },
				{ field: "user", type: "uuid", meta: { interface: "input", note: "Who the summary is made for and who pays (their own key or their credits). Only admins can write notes: anyone who could would spend this user's credits" } },
				{ field: "text", type: "text", meta: { interface: "input-multiline" } },
				{ field: "summary", type: "text", meta: { interface: "input-multiline", readonly: true } },
			],
		});
	}
	if (await findOne("/flows", "name", FLOW_NAME, "id")) {
		log(`example Flow "${FLOW_NAME}" exists: left as it is`);
		return;
	}
	const flow = await admin("POST", "/flows", {
		name: FLOW_NAME,
		icon: "smart_toy",
		status: "active",
		trigger: "event",
		accountability: "all",
		options: { type: "action", scope: ["items.create"], collections: [NOTES] },
	});
	const write = await admin("POST", "/operations", {
		flow: flow.id, name: "Write the summary back", key: "write_summary", type: "item-update", position_x: 37, position_y: 1,
		options: { collection: NOTES, key: ["{{$trigger.key}}"], payload: { summary: "{{$last.text}}" }, permissions: "$full", emitEvents: false },
	});
	const summarize = await admin("POST", "/operations", {
		flow: flow.id, name: "Summarize through byok-bridge", key: "summarize", type: "byok-bridge-llm", position_x: 19, position_y: 1,
		options: {
			api: "chat.completions", model: "gpt-4o-mini", max_tokens: 200, user: "{{$trigger.payload.user}}",
			prompt: "Summarize in one sentence: {{$trigger.payload.text}}",
		},
		resolve: write.id,
	});
	await admin("PATCH", `/flows/${flow.id}`, { operation: summarize.id });
	log(`example Flow "${FLOW_NAME}" created: a new ${NOTES} item is summarized for its user`);
}

async function ensurePolicy({ name, description, icon }) {
	const existing = await findOne("/policies", "name", name, "id,app_access,admin_access");
	const wanted = { name, description, icon, app_access: false, admin_access: false, enforce_tfa: false, ip_access: null };
	if (existing) {
		await admin("PATCH", `/policies/${existing.id}`, wanted);
		return existing.id;
	}
	return (await admin("POST", "/policies", wanted)).id;
}

async function ensureRole({ name, description, icon, policyId }) {
	let role = await findOne("/roles", "name", name, "id");
	if (!role) role = await admin("POST", "/roles", { name, description, icon });
	const links = await admin("GET", `/access${q({ ...eq("role", role.id), fields: "id,policy", limit: "-1" })}`);
	if (!links.some((l) => l.policy === policyId)) await admin("POST", "/access", { role: role.id, policy: policyId });
	return role.id;
}

const FULL_RULE = Object.freeze({ fields: ["*"], permissions: null, validation: null, presets: null });

// Compares the rule parts of two permissions ({} and null are the same; field order does not matter).
function sameRule(a, b) {
	const norm = (p) =>
		JSON.stringify([
			[...(p.fields ?? [])].sort(),
			...["permissions", "validation", "presets"].map((k) => (p[k] && Object.keys(p[k]).length > 0 ? p[k] : null)),
		]);
	return norm(a) === norm(b);
}

const isRestricted = (err) => err instanceof HttpError && err.status === 403 && err.message.includes('"RESOURCE_RESTRICTED"');

// Exactly the wanted permissions, nothing beyond them, no duplicates. Returns the "collection action" pairs
// whose narrower rule this Directus refused (Core license): the hook has to enforce those.
async function ensurePermissions(policyId, wanted) {
	const current = await admin("GET", `/permissions${q({ ...eq("policy", policyId), fields: "*", limit: "-1" })}`);
	const byKey = new Map();
	for (const p of current) {
		const key = `${p.collection}:${p.action}`;
		byKey.set(key, [...(byKey.get(key) ?? []), p]);
	}
	const wantedKeys = new Set(wanted.map(([c, a]) => `${c}:${a}`));
	for (const [key, perms] of byKey) {
		for (const [i, p] of perms.entries()) {
			if (!wantedKeys.has(key) || i > 0) await admin("DELETE", `/permissions/${p.id}`);
		}
	}

	const refused = [];
	for (const [collection, action, narrower] of wanted) {
		const existing = byKey.get(`${collection}:${action}`)?.[0];
		const rules = narrower ? [{ ...FULL_RULE, ...narrower }, FULL_RULE] : [FULL_RULE];
		for (const [i, rule] of rules.entries()) {
			if (i > 0) refused.push(`${collection} ${action}`);
			if (existing && sameRule(existing, rule)) break;
			try {
				if (existing) await admin("PATCH", `/permissions/${existing.id}`, rule);
				else await admin("POST", "/permissions", { policy: policyId, collection, action, ...rule });
				break;
			} catch (err) {
				// Core refuses the narrower rule and changes nothing: fall back to the full-field one.
				if (i < rules.length - 1 && isRestricted(err)) continue;
				throw err;
			}
		}
	}
	return refused;
}

/** Signs the admin in for this run only (production: their static token, if any, stays as it is). */
async function signInAdmin() {
	const login = await request("POST", "/auth/login", { body: { email: adminEmail, password: adminPassword } });
	adminToken = login.access_token;
	log("signed in as the admin for this run (their token is left as it is)");
}

/** `keepToken`: an existing service user keeps its token (returns null: running sidecars keep working). */
async function seedServiceUser({ keepToken = false } = {}) {
	const policyId = await ensurePolicy({
		name: SERVICE.policyName,
		icon: "smart_toy",
		description:
			"API-only access for the byok-bridge sidecar (static token). No app access, so it takes no license seat.",
	});
	const refused = await ensurePermissions(policyId, SERVICE.permissions);
	if (refused.length > 0) {
		log(
			`this Directus refuses narrower permissions (Core license): ${refused.join(", ")} are full-field; ` +
				"the byok-bridge hook enforces them",
		);
	}
	const roleId = await ensureRole({
		name: SERVICE.roleName,
		icon: "smart_toy",
		description: "The byok-bridge sidecar's service user",
		policyId,
	});

	const existing = await findOne("/users", "email", SERVICE.email, "id");
	const token = existing && keepToken ? null : (fixedServiceToken ?? randomToken());
	const fields = { first_name: "byok-bridge", last_name: "sidecar", role: roleId, status: "active" };
	if (token !== null) fields.token = token;
	let id;
	if (existing) {
		await admin("PATCH", `/users/${existing.id}`, fields);
		id = existing.id;
	} else {
		id = (await admin("POST", "/users", { email: SERVICE.email, ...fields })).id;
	}
	const tokenNote = token === null ? "token left as it is" : fixedServiceToken ? "token from SEED_SERVICE_TOKEN" : "new token";
	log(`service user ${SERVICE.email} (${id}): role "${SERVICE.roleName}", ${SERVICE.permissions.length} permissions, ${tokenNote}`);
	return token;
}

async function seedEndUsers() {
	// Independent users: seed them concurrently (password hashing dominates the run time).
	return Promise.all(USERS.map((u) => seedEndUser(u)));
}

async function seedEndUser(u) {
	const password = randomPassword();
	// No role and no policy: end users can log in (JWT for the sidecar) but have no app access (no seat)
	// and no Directus permissions; the sidecar serves them.
	const fields = { first_name: u.first_name, last_name: "Demo", subscription_tier: u.tier, status: "active", password };
	const existing = await findOne("/users", "email", u.email, "id");
	let id;
	if (existing) {
		await admin("PATCH", `/users/${existing.id}`, fields);
		id = existing.id;
	} else {
		id = (await admin("POST", "/users", { email: u.email, role: null, ...fields })).id;
	}

	if (u.grantCents > 0) {
		const requestId = `seed:signup_bonus:${id}`; // unique: the grant is created once per user
		const grant = await findOne("/items/credit_transactions", "request_id", requestId, "id");
		if (!grant) {
			await admin("POST", "/items/credit_transactions", {
				user: id,
				transaction_type: "grant",
				service_type: "signup_bonus",
				cost_cents: u.grantCents,
				description: "Signup bonus (seed)",
				request_id: requestId,
			});
		}
	}
	log(`user ${u.email} (${id}): tier ${u.tier}, signup grant ${u.grantCents} cents`);
	return { ...u, id, password };
}

// ---- verification ----------------------------------------------------------------------------------

function assert(cond, message) {
	if (!cond) throw new Error(`verification failed: ${message}`);
}

async function expectStatus(promise, statuses, what) {
	try {
		await promise;
	} catch (err) {
		if (err instanceof HttpError && statuses.includes(err.status)) return;
		throw err;
	}
	throw new Error(`verification failed: ${what} was allowed`);
}

async function verify(serviceToken, users) {
	const svc = (method, path, body) => request(method, path, { token: serviceToken, body });

	const flags = await svc("GET", `/items/feature_flags${q({ fields: "id,key,is_enabled", sort: "sort_order" })}`);
	const keys = flags.map((f) => f.key);
	for (const f of FLAGS) assert(keys.includes(f.key), `service token reads flag ${f.key}`);
	const byokEnabled = flags.find((f) => f.key === "byok_enabled");
	await expectStatus(
		svc("PATCH", `/items/feature_flags/${byokEnabled.id}`, { is_enabled: byokEnabled.is_enabled }),
		[403],
		"updating feature_flags with the service token",
	);
	await expectStatus(
		svc("POST", "/items/feature_flags", { key: "seed_probe_must_fail", is_enabled: false }),
		[403],
		"creating feature_flags with the service token",
	);
	await expectStatus(svc("GET", "/settings"), [403], "reading directus_settings with the service token");
	const me = await svc("GET", `/users/me${q({ fields: "id" })}`);
	const readable = await svc("GET", `/users/${me.id}${q({ fields: "id,subscription_tier" })}`);
	assert(readable.id === me.id, "service token reads directus_users");
	await svc("GET", `/items/user_api_keys${q({ limit: "1" })}`);
	await svc("GET", `/items/api_key_usage${q({ limit: "1" })}`);
	await svc("GET", `/items/credit_transactions${q({ limit: "1" })}`);

	// What the sidecar does: read a user's tier, status and notification fields, and charge a fractional
	// deduction (cents with 9 decimals, sent as a decimal string).
	const premium = users.find((u) => u.env === "PREMIUM");
	const profile = await svc("GET", `/users/${premium.id}${q({ fields: SIDECAR_USER_FIELDS.join(",") })}`);
	assert(
		profile.id === premium.id && profile.email === premium.email && profile.status === "active" &&
			profile.subscription_tier === "premium" && typeof profile.email_notifications === "boolean",
		"service token reads the user fields the sidecar needs",
	);
	// ... and its usage records as it delivers them: an array (one POST per batch), occurred_at an RFC 3339
	// time with nanoseconds (Directus keeps milliseconds).
	const probes = {
		credit_transactions: {
			transaction_type: "deduction",
			service_type: "seed_probe",
			cost_cents: "0.000345000",
			description: "seed verification probe (deleted at once)",
		},
		api_key_usage: { provider: "openai", model: "seed-probe", total_tokens: 14, estimated_cost_cents: "0.000345000" },
	};
	for (const [collection, fields] of Object.entries(probes)) {
		const [created] = await svc("POST", `/items/${collection}${q({ fields: "id" })}`, [
			{
				user: premium.id,
				...fields,
				request_id: `seed:probe:${collection}:${randomToken().slice(0, 16)}`,
				occurred_at: "2026-11-28T12:00:00.123456789Z",
			},
		]);
		try {
			const money = collection === "credit_transactions" ? "cost_cents" : "estimated_cost_cents";
			const stored = await admin("GET", `/items/${collection}/${created.id}`);
			// PostgreSQL answers numeric(20,9) as a string ("0.000345000"), SQLite (a double) as a number.
			assert(Number(stored[money]).toFixed(9) === "0.000345000", `a fractional ${collection} cost is stored to 9 decimals`);
			assert(
				stored.occurred_at === "2026-11-28T12:00:00.123Z",
				`${collection}.occurred_at is stored (to the millisecond); got ${JSON.stringify(stored.occurred_at)}` +
					("occurred_at" in stored ? "" : " (no such field: see directus-schema/UPGRADING.md)"),
			);
		} finally {
			await admin("DELETE", `/items/${collection}/${created.id}`);
		}
	}

	const policy = await findOne("/policies", "name", SERVICE.policyName, "app_access,admin_access");
	assert(policy.app_access === false && policy.admin_access === false, "service policy is API-only");

	await Promise.all(users.map((u) => verifyEndUser(u, byokEnabled)));

	if (process.env.SEED_CHECK_HOOK === "1") await verifyHook(users, svc);
	else log("SEED_CHECK_HOOK is not 1: not checking the byok-bridge hook (without it the service token can create grants)");

	const broke = users.find((u) => u.env === "BROKE");
	const brokeCredits = await admin("GET", `/items/credit_transactions${q({ ...eq("user", broke.id), limit: "1" })}`);
	assert(brokeCredits.length === 0, "broke@example.com has no credit transactions");
	log(
		"verified: service token reads flags and the user fields it needs, writes a fractional deduction and a usage " +
			"record (array POSTs, occurred_at kept to the millisecond), cannot write " +
			"flags; end users log in without app access",
	);
}

async function verifyHook(users, svc) {
	const extensions = await admin("GET", "/extensions");
	const names = extensions.map((e) => e.schema?.name ?? e.name);
	assert(names.includes("directus-extension-byok-bridge"), "the byok-bridge hook extension is loaded");
	const premium = users.find((u) => u.env === "PREMIUM");

	// A plaintext key, bare or behind a fake envelope header ("-" and "_" are base64url characters).
	for (const encrypted_key of [
		"sk-plaintext-probe-0123456789abcdefghijklmnop",
		"byok:v1:00000000:sk-proj-plaintext-probe-0123456789abcdefghijklmnopqrstuv",
	]) {
		const row = { user: premium.id, provider: "openai", encrypted_key };
		await expectCreateRefused(admin, "/items/user_api_keys", row, 400, "INVALID_PAYLOAD", "a plaintext encrypted_key");
	}

	// The sidecar's role: deductions only, whatever Directus' (Core) permission allows.
	for (const transaction_type of ["grant", "refund"]) {
		const requestId = `seed:probe:${transaction_type}:${randomToken().slice(0, 16)}`;
		const row = { user: premium.id, transaction_type, cost_cents: 1, request_id: requestId };
		const what = `a ${transaction_type} by the service token`;
		await expectCreateRefused(svc, "/items/credit_transactions", row, 403, "FORBIDDEN", what);
	}

	// The hook's usage route (usage-ingest.js) serves the sidecar's role only and takes only deductions: a grant
	// in it is refused before anything is written, and an admin is refused outright (404: the route is off).
	const viaRoute = [{ user: premium.id, transaction_type: "grant", cost_cents: "1", request_id: randomUUID() }];
	await expectStatus(svc("POST", "/byok-bridge/usage/credit_transactions", viaRoute), [400, 404], "a grant through the usage route");
	await expectStatus(admin("POST", "/byok-bridge/usage/credit_transactions", viaRoute), [403, 404], "the usage route for an admin");

	// ... and only the user fields it needs: auth_data (SSO tokens) is refused, directly, through a relation,
	// or in a filter; a bare read comes back with the allowed fields only.
	for (const path of [
		`/users/${premium.id}${q({ fields: "auth_data" })}`,
		`/items/credit_transactions${q({ fields: "id,user.auth_data", limit: "1" })}`,
		`/users${q({ "filter[auth_data][_nnull]": "true", fields: "id" })}`,
	]) {
		const what = `reading directus_users.auth_data with the service token (${path.split("?")[0]})`;
		await expectStatus(svc("GET", path), [403], what);
	}
	const bare = await svc("GET", `/users/${premium.id}`);
	const extra = Object.keys(bare).filter((k) => !SIDECAR_USER_FIELDS.includes(k));
	assert(
		extra.length === 0 && bare.subscription_tier === "premium",
		`service token reads only ${SIDECAR_USER_FIELDS.join(", ")} (also got: ${extra.join(", ")})`,
	);

	// Admins are not narrowed: they still create grants and read every user field.
	const grant = await admin("POST", `/items/credit_transactions${q({ fields: "id" })}`, {
		user: premium.id,
		transaction_type: "grant",
		service_type: "seed_probe",
		cost_cents: 0,
		request_id: `seed:probe:admin-grant:${randomToken().slice(0, 16)}`,
	});
	await admin("DELETE", `/items/credit_transactions/${grant.id}`);
	const full = await admin("GET", `/users/${premium.id}${q({ fields: "id,auth_data,last_page" })}`);
	assert("auth_data" in full, "admins still read auth_data");
	log(
		"verified: byok-bridge hook loaded; plaintext encrypted_key refused (400); service token: no grants or refunds " +
			"(403, and 400 through the usage route, which refuses admins), no auth_data (403), only the user fields it " +
			"needs; admins unaffected",
	);
}

// A create that must be refused with `status` and Directus error `code`; a row created anyway is deleted
// (as admin) before failing, and the refusal must not echo what was sent.
async function expectCreateRefused(call, path, body, status, code, what) {
	let created;
	try {
		created = await call("POST", `${path}${q({ fields: "id" })}`, body);
	} catch (err) {
		if (err instanceof HttpError && err.status === status && err.message.includes(`"${code}"`)) {
			const secrets = Object.values(body).filter((v) => typeof v === "string" && v.includes("sk-"));
			assert(!secrets.some((v) => err.message.includes(v)), `the refusal of ${what} does not echo it`);
			return;
		}
		throw err;
	}
	await admin("DELETE", `${path}/${created.id}`);
	throw new Error(`verification failed: ${what} was stored (byok-bridge hook not active?)`);
}

async function verifyEndUser(u, byokEnabled) {
	const login = await request("POST", "/auth/login", { body: { email: u.email, password: u.password } });
	const parts = String(login.access_token).split(".");
	assert(parts.length === 3, `${u.email} gets a JWT`);
	const claims = JSON.parse(Buffer.from(parts[1], "base64url").toString("utf8"));
	assert(claims.id === u.id, `${u.email} JWT names the user`);
	assert(claims.app_access === false && claims.admin_access === false, `${u.email} has no app/admin access`);
	await expectStatus(
		request("GET", "/items/user_api_keys", { token: login.access_token }),
		[403],
		`${u.email} reading user_api_keys`,
	);
	await expectStatus(
		request("PATCH", `/items/feature_flags/${byokEnabled.id}`, {
			token: login.access_token,
			body: { is_enabled: byokEnabled.is_enabled },
		}),
		[403],
		`${u.email} updating feature_flags`,
	);
}

// ---- main ------------------------------------------------------------------------------------------

/** Production: only read checks with the service token (nothing is written to a real ledger). */
async function verifyProduction(serviceToken) {
	const svc = (method, path, body) => request(method, path, { token: serviceToken, body });
	const flags = await svc("GET", `/items/feature_flags${q({ fields: "id,key,is_enabled" })}`);
	for (const f of FLAGS) assert(flags.some((row) => row.key === f.key), `service token reads flag ${f.key}`);
	await expectStatus(svc("GET", "/settings"), [403], "reading directus_settings with the service token");
	const me = await svc("GET", `/users/me${q({ fields: "id" })}`);
	assert(typeof me.id === "string", "service token signs in");
	const policy = await findOne("/policies", "name", SERVICE.policyName, "app_access,admin_access");
	assert(policy.app_access === false && policy.admin_access === false, "service policy is API-only");
	log("verified (read-only): the service token reads flags and nothing it should not");
}

if (production) {
	try {
		await signInAdmin();
		await seedFlags();
		await seedDashboard();
		const serviceToken = await seedServiceUser({ keepToken: !rotateServiceToken });
		if (serviceToken !== null) {
			await verifyProduction(serviceToken);
			process.stdout.write(`DIRECTUS_TOKEN=${serviceToken}\n`);
			log("the sidecar's DIRECTUS_TOKEN is printed once, above: store it now");
		} else {
			log("the service user exists: its token was left as it is (--rotate-service-token issues a new one)");
		}
		log("done (production: no demo users, the admin untouched, no ledger rows)");
	} catch (err) {
		log(`failed: ${err.message}`);
		process.exit(1);
	}
	process.exit(0);
}

try {
	const adminStaticToken = await seedAdminToken();
	await seedFlags();
	await seedDashboard();
	await seedExampleFlow();
	const serviceToken = await seedServiceUser();
	const users = await seedEndUsers();
	await verify(serviceToken, users);

	const lines = [`DIRECTUS_TOKEN=${serviceToken}`, `DIRECTUS_ADMIN_TOKEN=${adminStaticToken}`];
	for (const u of users) {
		lines.push(`${u.env}_USER_EMAIL=${u.email}`, `${u.env}_USER_PASSWORD=${u.password}`, `${u.env}_USER_ID=${u.id}`);
	}
	process.stdout.write(`${lines.join("\n")}\n`);
	log("done");
} catch (err) {
	log(`failed: ${err.message}`);
	process.exit(1);
}
