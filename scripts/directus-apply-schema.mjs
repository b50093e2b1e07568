#!/usr/bin/env node
// Apply a schema snapshot (YAML or JSON) to a RUNNING Directus through its REST API:
// POST /schema/diff (body = the bare snapshot) then POST /schema/apply with the {hash, diff} it returned.
// Same result as `directus schema apply --yes FILE`, without paying a second CLI start-up (~4 s), and the
// running server's schema cache is refreshed by the apply itself.
//
//   DIRECTUS_URL=http://127.0.0.1:8055 DIRECTUS_ADMIN_TOKEN=... DIRECTUS_INSTALL_DIR=... \
//     node scripts/directus-apply-schema.mjs directus-schema/snapshot.yaml [--force]
//   (or DIRECTUS_ADMIN_EMAIL + DIRECTUS_ADMIN_PASSWORD instead of DIRECTUS_ADMIN_TOKEN)
//
// --force: allow a snapshot taken on another database vendor or Directus version.
// DIRECTUS_INSTALL_DIR (the directus install, for its js-yaml) is needed for YAML files only.
// stdout: nothing. stderr: a short summary, never the token.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

const args = process.argv.slice(2);
const force = args.includes("--force");
const file = args.find((a) => !a.startsWith("--"));
const baseUrl = (process.env.DIRECTUS_URL ?? "").replace(/\/+$/, "");
let token = process.env.DIRECTUS_ADMIN_TOKEN;
const email = process.env.DIRECTUS_ADMIN_EMAIL;
const password = process.env.DIRECTUS_ADMIN_PASSWORD;
const log = (msg) => console.error(`[directus-apply-schema] ${msg}`);

if (!file || !baseUrl || !(token || (email && password))) {
	log(
		"usage: DIRECTUS_URL=.. DIRECTUS_ADMIN_TOKEN=.. (or DIRECTUS_ADMIN_EMAIL=.. DIRECTUS_ADMIN_PASSWORD=..) " +
			"[DIRECTUS_INSTALL_DIR=..] directus-apply-schema.mjs FILE [--force]",
	);
	process.exit(2);
}

function loadSnapshot(path) {
	const text = readFileSync(path, "utf8");
	if (!/\.ya?ml$/i.test(path)) return JSON.parse(text);
	const installDir = process.env.DIRECTUS_INSTALL_DIR;
	if (!installDir) throw new Error("DIRECTUS_INSTALL_DIR is required to read a YAML snapshot");
	const { load } = createRequire(join(installDir, "package.json"))("js-yaml");
	return load(text);
}

async function call(method, path, body) {
	const res = await fetch(`${baseUrl}${path}`, {
		method,
		headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
		body: JSON.stringify(body),
		signal: AbortSignal.timeout(60_000),
	});
	const text = await res.text();
	if (!res.ok) throw new Error(`${method} ${path} -> HTTP ${res.status}: ${text.slice(0, 1000)}`);
	return { status: res.status, data: text ? JSON.parse(text).data : null };
}

try {
	const snapshot = loadSnapshot(file);
	if (!token) token = (await call("POST", "/auth/login", { email, password })).data.access_token;
	const diff = await call("POST", `/schema/diff${force ? "?force=true" : ""}`, snapshot);
	if (diff.status === 204 || !diff.data) {
		log("schema already up to date");
	} else {
		const d = diff.data.diff;
		await call("POST", "/schema/apply", diff.data);
		log(
			`applied: ${d.collections.length} collections, ${d.fields.length} fields, ` +
				`${(d.systemFields ?? []).length} system fields, ${d.relations.length} relations changed`,
		);
	}
} catch (err) {
	log(`failed: ${err.message}`);
	process.exit(1);
}
