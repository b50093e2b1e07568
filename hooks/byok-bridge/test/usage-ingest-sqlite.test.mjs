// The bulk usage route's two ways into the database, on real SQLite through Directus's own knex and sqlite3
// (the cached Directus 12.4.0 install: scripts/directus-install.sh, run here if missing): a batch stored with
// SQLite's json_each reads back exactly as the same batch stored by knex, and both skip a stored request_id.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";

import { insertKnex, insertSqlite, usageColumns, usageRows } from "../src/usage-ingest.js";

const root = new URL("../../../", import.meta.url).pathname;
const install = execFileSync(join(root, "scripts/directus-install.sh"), { encoding: "utf8" }).trim().split("\n").pop();
const knex = createRequire(join(install, "node_modules/directus/package.json"))("knex");

// The tables as Directus 12.4.0 makes them from directus-schema/snapshot.yaml on SQLite.
const TABLES = [
	"CREATE TABLE directus_users (`id` char(36) NOT NULL, PRIMARY KEY (`id`))",
	"CREATE TABLE `api_key_usage` (`id` char(36) NOT NULL DEFAULT null, `user` char(36) NULL DEFAULT null, `provider` varchar(255) NULL DEFAULT null, `model` varchar(255) NULL DEFAULT null, `prompt_tokens` integer NULL DEFAULT '0', `completion_tokens` integer NULL DEFAULT '0', `total_tokens` integer NULL DEFAULT '0', `estimated_cost_cents` float NULL DEFAULT '0', `request_id` varchar(255) NULL DEFAULT null, `created_at` datetime NULL DEFAULT null, `occurred_at` datetime NULL DEFAULT null, `fallback_from` varchar(255) NULL DEFAULT null, PRIMARY KEY (`id`), CONSTRAINT `api_key_usage_user_foreign` FOREIGN KEY (`user`) REFERENCES `directus_users` (`id`) ON DELETE SET NULL ON UPDATE NO ACTION)",
	"CREATE UNIQUE INDEX `api_key_usage_request_id_unique` on `api_key_usage` (`request_id`)",
	"CREATE TABLE `credit_transactions` (`id` char(36) NOT NULL DEFAULT null, `user` char(36) NULL DEFAULT null, `transaction_type` varchar(255) NOT NULL DEFAULT null, `service_type` varchar(255) NULL DEFAULT null, `cost_cents` float NOT NULL DEFAULT '0', `description` varchar(255) NULL DEFAULT null, `request_id` varchar(255) NULL DEFAULT null, `created_at` datetime NULL DEFAULT null, `provider` varchar(255) NULL DEFAULT null, `model` varchar(255) NULL DEFAULT null, `prompt_tokens` integer NULL DEFAULT null, `completion_tokens` integer NULL DEFAULT null, `total_tokens` integer NULL DEFAULT null, `occurred_at` datetime NULL DEFAULT null, PRIMARY KEY (`id`), CONSTRAINT `credit_transactions_user_foreign` FOREIGN KEY (`user`) REFERENCES `directus_users` (`id`) ON DELETE SET NULL ON UPDATE NO ACTION)",
	"CREATE UNIQUE INDEX `credit_transactions_request_id_unique` on `credit_transactions` (`request_id`)",
];
const USER = "6f1c2d0e-8a1b-4c3d-9e8f-0a1b2c3d4e5f";
const NOW = new Date("2026-12-06T03:00:00.250Z");

const dir = mkdtempSync(join(tmpdir(), "byok-usage-sqlite-"));
const open = [];
after(async () => {
	await Promise.all(open.map((db) => db.destroy()));
	rmSync(dir, { recursive: true, force: true });
});

/** A fresh database file with Directus's tables, configured as Directus configures SQLite. */
async function database(name) {
	const db = knex({
		client: "sqlite3",
		connection: { filename: join(dir, `${name}.db`) },
		useNullAsDefault: true,
		pool: { afterCreate: (conn, done) => conn.run("PRAGMA foreign_keys = ON", (error) => done(error, conn)) },
	});
	open.push(db);
	for (const sql of TABLES) await db.raw(sql);
	await db("directus_users").insert({ id: USER });
	return db;
}

const usage = (n, overrides = {}) => ({
	user: USER,
	provider: "openai",
	model: "gpt-4o-mini",
	prompt_tokens: 11 + n,
	completion_tokens: 3,
	total_tokens: 14 + n,
	estimated_cost_cents: ["0.000345000", "12.5", "0", "99999999999.999999999"][n % 4],
	request_id: `01a2484d-9a86-72ca-91d9-${String(n).padStart(12, "0")}`,
	occurred_at: ["2026-12-05T22:00:00.123Z", "2026-12-05T23:00:00.5+01:00", "2026-12-05T22:00:00.123456789Z"][n % 3],
	...(n % 2 ? { fallback_from: "gpt-4o" } : n % 3 ? { fallback_from: null } : {}),
	...overrides,
});

/** Every stored row but its random id, with each value's SQLite type, in request_id order. */
async function stored(db, table) {
	const columns = (await db.raw(`PRAGMA table_info(${table})`)).map((c) => c.name).filter((name) => name !== "id");
	const typed = columns.map((name) => `"${name}", typeof("${name}") AS "${name}:type"`).join(", ");
	return db.raw(`SELECT ${typed} FROM ${table} ORDER BY request_id`);
}

/** The route's two ways in, called as its handler calls them. */
const JSON_EACH = (trx, table, rows, hasFallbackFrom) => insertSqlite(trx, table, usageColumns(table, hasFallbackFrom), rows);
const KNEX = (trx, table, rows) => insertKnex(trx, table, rows);

let ids = 0;
/** Stores `body` in `table` of `db` in one transaction, as the route does, one of the two ways in. */
async function store(db, way, table, body, hasFallbackFrom = true) {
	const rows = usageRows(table, body, { hasFallbackFrom, now: NOW, newId: () => `00000000-0000-7000-8000-${String(ids++).padStart(12, "0")}` });
	await db.transaction((trx) => way(trx, table, rows, hasFallbackFrom));
}

test("a batch stored through json_each reads back exactly as the same batch stored by knex", async () => {
	const body = Array.from({ length: 12 }, (_, n) => usage(n));
	const [viaJson, viaKnex] = [await database("json"), await database("knex")];
	await store(viaJson, JSON_EACH, "api_key_usage", body);
	await store(viaKnex, KNEX, "api_key_usage", body);
	const [json, built] = [await stored(viaJson, "api_key_usage"), await stored(viaKnex, "api_key_usage")];
	assert.equal(json.length, 12);
	assert.deepEqual(json, built);
	assert.equal(json[0]["occurred_at:type"], "integer", "dates as milliseconds, as knex's driver binds them");
	assert.equal(json[0].occurred_at, Date.parse("2026-12-05T22:00:00.123Z"));
	assert.equal(json[0].created_at, NOW.getTime());
	assert.deepEqual([json[0]["estimated_cost_cents:type"], json[1].estimated_cost_cents], ["real", 12.5]);
	assert.deepEqual([json[0].fallback_from, json[1].fallback_from], [null, "gpt-4o"]);
});

test("a ledger without fallback_from takes the rest; a deduction reads back as knex stores it", async () => {
	const deduction = (n) => {
		const { estimated_cost_cents, fallback_from, ...rest } = usage(n);
		return { ...rest, transaction_type: "deduction", service_type: "openai.chat_completions", cost_cents: estimated_cost_cents, description: "openai gpt-4o-mini" };
	};
	const body = Array.from({ length: 5 }, (_, n) => deduction(n));
	const [viaJson, viaKnex] = [await database("ledger-json"), await database("ledger-knex")];
	await store(viaJson, JSON_EACH, "credit_transactions", body, false);
	await store(viaKnex, KNEX, "credit_transactions", body, false);
	const json = await stored(viaJson, "credit_transactions");
	assert.equal(json.length, 5);
	assert.deepEqual(json, await stored(viaKnex, "credit_transactions"));
	assert.equal(json[3].cost_cents, 99999999999.999999999);
});

test("json_each skips a stored request_id, in the batch or before it, and an unknown user fails the batch", async () => {
	const db = await database("repeat");
	await store(db, JSON_EACH, "api_key_usage", [usage(0), usage(1)]);
	await store(db, JSON_EACH, "api_key_usage", [usage(1, { model: "changed" }), usage(2), usage(2, { model: "twice" })]);
	const rows = await stored(db, "api_key_usage");
	assert.deepEqual(rows.map((r) => [r.request_id.slice(-1), r.model]), [["0", "gpt-4o-mini"], ["1", "gpt-4o-mini"], ["2", "gpt-4o-mini"]]);

	const stranger = usage(3, { user: "6f1c2d0e-8a1b-4c3d-9e8f-0a1b2c3d4e60" });
	await assert.rejects(store(db, JSON_EACH, "api_key_usage", [usage(4), stranger]), (error) => error.code === "SQLITE_CONSTRAINT");
	assert.equal((await stored(db, "api_key_usage")).length, 3, "nothing of the failed batch stays");
});
