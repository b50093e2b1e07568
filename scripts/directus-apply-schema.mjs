#!/usr/bin/env node
// Apply a schema snapshot (YAML or JSON) to a RUNNING Directus through its REST API:
// POST /schema/diff (the snapshot: a JSON body, or a YAML file uploaded as multipart/form-data, which
// Directus parses itself) then POST /schema/apply with the {hash, diff} it returned.
// Same result as `directus schema apply --yes FILE`, without paying a second CLI start-up (~4 s), and the
// running server's schema cache is refreshed by the apply itself. Needs nothing but Node >= 20 (no
// node_modules): the docker-compose init service runs it in a plain node image.
//
//   DIRECTUS_URL=http://127.0.0.1:8055 DIRECTUS_ADMIN_TOKEN=... \
//     node scripts/directus-apply-schema.mjs directus-schema/snapshot.yaml [--force] [--only-if-new]
//   (or DIRECTUS_ADMIN_EMAIL + DIRECTUS_ADMIN_PASSWORD instead of DIRECTUS_ADMIN_TOKEN)
//
// --force: allow a snapshot taken on another database vendor or Directus version.
// --only-if-new: apply only when it creates collections (a new install); when every collection of the snapshot
//   exists already, change nothing and succeed. The snapshot is for new installs; existing ones are upgraded
//   as directus-schema/UPGRADING.md says. Needed for a re-run on PostgreSQL: the snapshot is taken on SQLite,
//   and diffing it against an installed PostgreSQL schema yields vendor-only changes that Directus cannot apply
//   (e.g. `alter column "id" drop not null` on a primary key). The docker-compose init service re-runs on
//   every `docker compose up`.
// Never deletes: Directus diffs the whole schema, so every collection, field and relation of an existing install
// that the snapshot does not list comes back as a deletion; those entries are dropped before applying (the
// snapshot only ever adds byok-bridge's own collections and fields). Safe on a Directus with other data.
// stdout: nothing. stderr: a short summary, never the token.

import { readFileSync } from "node:fs";
import { basename } from "node:path";

const args = process.argv.slice(2);
const force = args.includes("--force");
const onlyIfNew = args.includes("--only-if-new");
const file = args.find((a) => !a.startsWith("--"));
const baseUrl = (process.env.DIRECTUS_URL ?? "").replace(/\/+$/, "");
let token = process.env.DIRECTUS_ADMIN_TOKEN;
const email = process.env.DIRECTUS_ADMIN_EMAIL;
const password = process.env.DIRECTUS_ADMIN_PASSWORD;
const log = (msg) => console.error(`[directus-apply-schema] ${msg}`);

if (!file || !baseUrl || !(token || (email && password))) {
	log(
		"usage: DIRECTUS_URL=.. DIRECTUS_ADMIN_TOKEN=.. (or DIRECTUS_ADMIN_EMAIL=.. DIRECTUS_ADMIN_PASSWORD=..) " +
			"directus-apply-schema.mjs FILE [--force] [--only-if-new]",
	);
	process.exit(2);
}

// The request body for POST /schema/diff: a JSON snapshot as is, a YAML one as an uploaded file.
function snapshotBody(path) {
	const text = readFileSync(path, "utf8");
	if (!/\.ya?ml$/i.test(path)) return JSON.parse(text);
	const form = new FormData();
	form.append("file", new Blob([text], { type: "application/x-yaml" }), basename(path));
	return form;
}

async function call(method, path, body) {
	const isForm = body instanceof FormData;
	const res = await fetch(`${baseUrl}${path}`, {
		method,
		headers: {
			...(isForm ? {} : { "content-type": "application/json" }), // fetch sets the multipart boundary
			...(token ? { authorization: `Bearer ${token}` } : {}),
		},
		body: isForm ? body : JSON.stringify(body),
		signal: AbortSignal.timeout(60_000),
	});
	const text = await res.text();
	if (!res.ok) throw new Error(`${method} ${path} -> HTTP ${res.status}: ${text.slice(0, 1000)}`);
	return { status: res.status, data: text ? JSON.parse(text).data : null };
}

/** A diff entry that removes a whole collection, field or relation (kind "D" at its root). */
const isDeletion = (entry) => entry.diff.some((d) => d.kind === "D" && !d.path);

/** The diff without deletions, and how many were dropped. */
function withoutDeletions(diff) {
	let dropped = 0;
	const keep = (entries) => {
		const kept = (entries ?? []).filter((e) => !isDeletion(e));
		dropped += (entries ?? []).length - kept.length;
		return kept;
	};
	const d = diff.diff;
	const body = { ...diff, diff: { ...d, collections: keep(d.collections), fields: keep(d.fields), relations: keep(d.relations) } };
	return { dropped, body };
}

try {
	const snapshot = snapshotBody(file);
	if (!token) token = (await call("POST", "/auth/login", { email, password })).data.access_token;
	const diff = await call("POST", `/schema/diff${force ? "?force=true" : ""}`, snapshot);
	// A collection to create has a diff entry of kind "N" at its root (no path).
	const created = (diff.data?.diff?.collections ?? []).filter((c) => c.diff.some((d) => d.kind === "N" && !d.path));
	if (diff.status === 204 || !diff.data) {
		log("schema already up to date");
	} else if (onlyIfNew && created.length === 0) {
		log(
			"the snapshot's collections exist already (an existing install): nothing applied (--only-if-new); " +
				"upgrade existing installs as directus-schema/UPGRADING.md says",
		);
	} else {
		const { dropped, body } = withoutDeletions(diff.data);
		const d = body.diff;
		if (dropped > 0) log(`left alone: ${dropped} collections, fields or relations the snapshot does not list`);
		if (d.collections.length + d.fields.length + (d.systemFields ?? []).length + d.relations.length === 0) {
			log("nothing of byok-bridge's to change");
		} else {
			await call("POST", "/schema/apply", body);
			log(
				`applied: ${d.collections.length} collections, ${d.fields.length} fields, ` +
					`${(d.systemFields ?? []).length} system fields, ${d.relations.length} relations changed`,
			);
		}
	}
} catch (err) {
	log(`failed: ${err.message}`);
	process.exit(1);
}
