#!/usr/bin/env node
// Seed a Directus 12.4.0 that has directus-schema/snapshot.yaml applied (snapshots carry no data, users,
// policies or permissions):
//   - the three BYOK feature flags (created if missing; an existing flag keeps its is_enabled),
//   - the byok-bridge sidecar's API-only service user (policy without app/admin access: no Core seat),
//     with a new random static token and exactly the permissions the sidecar needs,
//   - a static token for the admin,
//   - demo end users (no role, no app access: no seat) with new random passwords and signup credit grants.
// Idempotent: re-running creates no duplicate rows; it rotates the printed passwords and tokens.
// Then it verifies the result (service token can read flags but NOT update them, users can log in, ...).
//
//   DIRECTUS_URL=http://127.0.0.1:8055 DIRECTUS_ADMIN_EMAIL=admin@example.com DIRECTUS_ADMIN_PASSWORD=... \
//     node scripts/directus-seed.mjs > seed.env
//
// With SEED_CHECK_HOOK=1 it also checks that the byok-bridge hook extension is loaded and refuses a
// plaintext user_api_keys.encrypted_key (scripts/directus-up.sh sets it).
//
// stdout: KEY=VALUE lines only (DIRECTUS_TOKEN, DIRECTUS_ADMIN_TOKEN, <TIER>_USER_EMAIL/_PASSWORD/_ID).
// stderr: progress messages, never a secret. Node >= 20 (global fetch).

import { randomBytes } from "node:crypto";

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
	roleName: "byok-bridge sidecar",
	email: "byok-bridge-sidecar@example.com",
	// Full-field, unfiltered permissions only (filters and field subsets are refused on the Core tier).
	permissions: [
		["feature_flags", "read"],
		["directus_users", "read"],
		["user_api_keys", "create"],
		["user_api_keys", "read"],
		["user_api_keys", "update"],
		["user_api_keys", "delete"],
		["api_key_usage", "create"],
		["api_key_usage", "read"],
		["credit_transactions", "create"],
		["credit_transactions", "read"],
		["directus_notifications", "create"],
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
	const token = randomToken();
	await admin("PATCH", "/users/me", { token });
	adminToken = token;
	const me = await admin("GET", `/users/me${q({ fields: "id" })}`);
	log(`admin static token set (admin user ${me.id})`);
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

async function ensurePermissions(policyId, wanted) {
	const current = await admin("GET", `/permissions${q({ ...eq("policy", policyId), fields: "*", limit: "-1" })}`);
	const wantedKeys = new Set(wanted.map(([c, a]) => `${c}:${a}`));
	const isFullField = (p) =>
		Array.isArray(p.fields) &&
		p.fields.includes("*") &&
		!p.permissions &&
		!p.validation &&
		!p.presets;
	const keep = new Set();
	for (const p of current) {
		const key = `${p.collection}:${p.action}`;
		if (wantedKeys.has(key) && isFullField(p) && !keep.has(key)) keep.add(key);
		else await admin("DELETE", `/permissions/${p.id}`); // nothing beyond the list, no duplicates
	}
	for (const [collection, action] of wanted) {
		if (keep.has(`${collection}:${action}`)) continue;
		await admin("POST", "/permissions", {
			policy: policyId,
			collection,
			action,
			fields: ["*"],
			permissions: null,
			validation: null,
			presets: null,
		});
	}
}

async function seedServiceUser() {
	const policyId = await ensurePolicy({
		name: SERVICE.policyName,
		icon: "smart_toy",
		description:
			"API-only access for the byok-bridge sidecar (static token). No app access, so it takes no license seat.",
	});
	await ensurePermissions(policyId, SERVICE.permissions);
	const roleId = await ensureRole({
		name: SERVICE.roleName,
		icon: "smart_toy",
		description: "The byok-bridge sidecar's service user",
		policyId,
	});

	const token = randomToken();
	const fields = { first_name: "byok-bridge", last_name: "sidecar", role: roleId, status: "active", token };
	const existing = await findOne("/users", "email", SERVICE.email, "id");
	let id;
	if (existing) {
		await admin("PATCH", `/users/${existing.id}`, fields);
		id = existing.id;
	} else {
		id = (await admin("POST", "/users", { email: SERVICE.email, ...fields })).id;
	}
	log(`service user ${SERVICE.email} (${id}): role "${SERVICE.roleName}", ${SERVICE.permissions.length} permissions, new token`);
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

	const policy = await findOne("/policies", "name", SERVICE.policyName, "app_access,admin_access");
	assert(policy.app_access === false && policy.admin_access === false, "service policy is API-only");

	await Promise.all(users.map((u) => verifyEndUser(u, byokEnabled)));

	if (process.env.SEED_CHECK_HOOK === "1") await verifyHook(users[0].id);

	const broke = users.find((u) => u.env === "BROKE");
	const brokeCredits = await admin("GET", `/items/credit_transactions${q({ ...eq("user", broke.id), limit: "1" })}`);
	assert(brokeCredits.length === 0, "broke@example.com has no credit transactions");
	log("verified: service token reads flags/users but cannot write flags; end users log in without app access");
}

async function verifyHook(userId) {
	const extensions = await admin("GET", "/extensions");
	const names = extensions.map((e) => e.schema?.name ?? e.name);
	assert(names.includes("directus-extension-byok-bridge"), "the byok-bridge hook extension is loaded");
	try {
		await admin("POST", "/items/user_api_keys", {
			user: userId,
			provider: "openai",
			encrypted_key: "sk-plaintext-probe-0123456789abcdefghijklmnop",
		});
	} catch (err) {
		if (err instanceof HttpError && err.status === 400 && err.message.includes('"INVALID_PAYLOAD"')) {
			assert(!err.message.includes("sk-plaintext-probe"), "the hook does not echo the rejected value");
			log("verified: byok-bridge hook loaded, plaintext encrypted_key refused with 400 INVALID_PAYLOAD");
			return;
		}
		throw err;
	}
	throw new Error("verification failed: a plaintext encrypted_key was stored (byok-bridge hook not active)");
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

try {
	const adminStaticToken = await seedAdminToken();
	await seedFlags();
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
