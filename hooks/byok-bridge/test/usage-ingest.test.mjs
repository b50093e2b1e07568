// Unit tests for the bulk usage route (src/usage-ingest.js); the end-to-end suite runs it in a real Directus.
import assert from "node:assert/strict";
import { test } from "node:test";

import { IngestError, MAX_ROWS, bulkUsageEnabled, usageIngestHandler, usageRows, uuidV7 } from "../src/usage-ingest.js";

const USER = "6f1c2d0e-8a1b-4c3d-9e8f-0a1b2c3d4e5f";
const deduction = (overrides = {}) => ({
	user: USER,
	transaction_type: "deduction",
	service_type: "openai.chat_completions",
	cost_cents: "0.000345",
	provider: "openai",
	model: "gpt-4o-mini",
	prompt_tokens: 11,
	completion_tokens: 3,
	total_tokens: 14,
	request_id: "01a2484d-9a86-72ca-91d9-c88f0b2eb87e",
	occurred_at: "2026-12-05T22:00:00.123Z",
	description: "openai gpt-4o-mini",
	...overrides,
});
const refusal = (status, pattern) => (error) => error instanceof IngestError && error.status === status && pattern.test(error.message);

test("ids are UUIDv7: the time in the first 48 bits, version 7, RFC variant, the rest random", () => {
	const at = Date.UTC(2026, 11, 6, 1, 2, 3, 456);
	const ids = Array.from({ length: 1_000 }, () => uuidV7(at));
	for (const id of ids) {
		assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
		assert.equal(Number.parseInt(id.replace(/-/g, "").slice(0, 12), 16), at);
	}
	assert.equal(new Set(ids).size, ids.length);
	assert.ok(uuidV7(at) < uuidV7(at + 1), "a later millisecond sorts after");
	assert.equal(uuidV7(0).slice(0, 13), "00000000-0000");
});

test("a deduction becomes a row with a new id, the time it was stored and its own time as dates", () => {
	const now = new Date("2026-12-05T23:00:00Z");
	const [row] = usageRows("credit_transactions", [deduction({ fallback_from: "gpt-4o" })], { now, newId: () => "id-1" });
	assert.equal(row.id, "id-1");
	assert.equal(row.created_at, now);
	assert.equal(row.occurred_at.toISOString(), "2026-12-05T22:00:00.123Z");
	assert.equal(row.cost_cents, "0.000345");
	assert.equal(row.fallback_from, "gpt-4o");
});

test("fallback_from is left out where the collection predates it, as the items API would", () => {
	const [row] = usageRows("credit_transactions", [deduction({ fallback_from: "gpt-4o" })], { hasFallbackFrom: false });
	assert.equal(Object.hasOwn(row, "fallback_from"), false);
});

test("only deductions reach the ledger: a grant or a refund is refused", () => {
	for (const transaction_type of ["grant", "refund", undefined]) {
		assert.throws(() => usageRows("credit_transactions", [deduction({ transaction_type })]), refusal(400, /record 0: transaction_type/));
	}
});

test("every field is checked, since Directus's own payload checks do not run", () => {
	const bad = {
		user: "not-a-uuid",
		cost_cents: "-1",
		request_id: "x",
		occurred_at: "yesterday",
		prompt_tokens: -1,
		total_tokens: 1.5,
		model: "m".repeat(256),
		description: "",
	};
	for (const [field, value] of Object.entries(bad)) {
		assert.throws(() => usageRows("credit_transactions", [deduction(), deduction({ [field]: value })]), refusal(400, new RegExp(`record 1: ${field}`)));
	}
	assert.throws(() => usageRows("credit_transactions", [deduction({ cost_cents: "0.0000000001" })]), refusal(400, /cost_cents/));
	assert.throws(() => usageRows("credit_transactions", [deduction({ admin: true })]), refusal(400, /unknown field admin/));
	assert.throws(() => usageRows("api_key_usage", [deduction()]), refusal(400, /unknown field transaction_type/));
});

test("a batch is a non-empty array of at most MAX_ROWS records, for the two usage collections only", () => {
	for (const body of [[], {}, null, Array(MAX_ROWS + 1).fill(deduction())]) {
		assert.throws(() => usageRows("credit_transactions", body), refusal(400, /array of 1 to/));
	}
	for (const collection of ["directus_users", "__proto__", "constructor", "toString"]) {
		assert.throws(() => usageRows(collection, [deduction()]), refusal(403, new RegExp(`not ${collection}`)), collection);
	}
	const usage = { ...deduction(), estimated_cost_cents: "0.5" };
	for (const field of ["transaction_type", "service_type", "cost_cents", "description"]) delete usage[field];
	assert.equal(usageRows("api_key_usage", [usage]).length, 1);
});

test("BYOK_BRIDGE_BULK_USAGE=false, or a cache that purges itself on writes, turns the route off", () => {
	assert.equal(bulkUsageEnabled({}), true);
	assert.equal(bulkUsageEnabled({ CACHE_ENABLED: true }), true, "a cache that expires on its own");
	assert.equal(bulkUsageEnabled({ CACHE_ENABLED: true, CACHE_AUTO_PURGE: "true" }), false);
	assert.equal(bulkUsageEnabled({ BYOK_BRIDGE_BULK_USAGE: "true" }), true);
	assert.equal(bulkUsageEnabled({ BYOK_BRIDGE_BULK_USAGE: false }), false);
	assert.equal(bulkUsageEnabled({ BYOK_BRIDGE_BULK_USAGE: " FALSE " }), false);
});

/** A knex-like database that records each INSERT (built by knex, or raw SQL with the batch as JSON), or fails it with `fail`. */
function fakeDatabase({ client = "sqlite3", fail = null } = {}) {
	const statements = [];
	const trx = (table) => ({
		insert: (rows) => ({
			onConflict: (column) => ({
				ignore: async () => {
					if (fail) throw fail;
					statements.push({ table, rows: rows.length, column });
				},
			}),
		}),
	});
	trx.raw = async (sql, [json]) => {
		if (fail) throw fail;
		const [, table, column] = sql.match(/^INSERT INTO "(\w+)" .* ON CONFLICT \("(\w+)"\) DO NOTHING$/);
		statements.push({ table, rows: JSON.parse(json).length, column });
	};
	return { statements, client: { config: { client } }, transaction: async (work) => work(trx) };
}

/** Runs `handler` on a request; returns [status, body]. */
async function call(handler, { body = [deduction()], collection = "credit_transactions", accountability = { role: "sidecar" } } = {}) {
	const answer = { status: 200, body: null };
	const res = {
		status(code) {
			answer.status = code;
			return this;
		},
		json(payload) {
			answer.body = payload;
			return this;
		},
	};
	const req = { params: { collection }, body, accountability, schema: { collections: { [collection]: { fields: { fallback_from: {} } } } } };
	await handler(req, res);
	return [answer.status, answer.body];
}

const isService = async (accountability) => accountability?.role === "sidecar";

test("the sidecar's batch is inserted a few hundred rows per statement (SQLite: one), a stored request_id skipped", async () => {
	const body = Array.from({ length: 450 }, (_, n) => deduction({ request_id: `01a2484d-9a86-72ca-91d9-${String(n).padStart(12, "0")}` }));
	for (const [client, statements] of [["pg", [200, 200, 50]], ["sqlite3", [450]]]) {
		const database = fakeDatabase({ client });
		const handler = usageIngestHandler({ database, isService, enabled: true });
		const [status, answer] = await call(handler, { body });
		assert.equal(status, 200);
		assert.deepEqual(answer, { data: { received: 450 } });
		assert.deepEqual(database.statements.map((s) => s.rows), statements, client);
		assert.ok(database.statements.every((s) => s.table === "credit_transactions" && s.column === "request_id"));
	}
});

test("anyone but the sidecar's role is refused before anything is read or written", async () => {
	const database = fakeDatabase();
	const handler = usageIngestHandler({ database, isService, enabled: true });
	for (const accountability of [null, { role: "editor" }, { role: null, admin: true }]) {
		const [status, answer] = await call(handler, { accountability });
		assert.equal(status, 403);
		assert.equal(answer.errors[0].extensions.code, "FORBIDDEN");
	}
	assert.equal(database.statements.length, 0);
});

test("off, or on a database whose conflict handling is not exact, the route answers 404 (the sidecar uses the items API)", async () => {
	for (const [client, enabled] of [["sqlite3", false], ["mysql", true], ["mssql", true]]) {
		const database = fakeDatabase({ client });
		const [status] = await call(usageIngestHandler({ database, isService, enabled }));
		assert.equal(status, 404);
		assert.equal(database.statements.length, 0);
	}
});

test("a record the database refuses for good fails the batch with 400; anything else with 503, to be sent again", async () => {
	for (const [code, expected] of [["SQLITE_CONSTRAINT", 400], ["23503", 400], ["SQLITE_BUSY", 503], ["ECONNRESET", 503]]) {
		const fail = Object.assign(new Error("constraint on users.c8dac341"), { code });
		const [status, answer] = await call(usageIngestHandler({ database: fakeDatabase({ fail }), isService, enabled: true }));
		assert.equal(status, expected, code);
		assert.doesNotMatch(JSON.stringify(answer), /c8dac341/, "the database's own message is not passed on");
	}
});
