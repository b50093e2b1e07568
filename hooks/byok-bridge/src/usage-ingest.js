// POST /byok-bridge/usage/:collection: the sidecar's usage records, many rows per INSERT.
//
// Directus's items API stores each row of a batch as its own createOne (permissions, payload processing,
// filters, an activity row): 0.6-1.4 ms of its CPU per row, 700-2,500 rows a second in its one Node.js process,
// less than one busy sidecar makes. This route (0.03 ms of CPU per row on SQLite, 24,000-27,000 rows a second
// in batches of 500) checks a batch here, field by field (Directus's own payload checks do not run), and
// inserts it in one transaction: on SQLite in one statement that takes the batch as JSON, elsewhere a few
// hundred rows per statement; a row whose request_id is stored already is skipped, so a batch sent twice is
// stored once. Only the sidecar's role may call it, and only with api_key_usage rows or credit_transactions
// deductions. Rows stored this way make no items.create events and no activity rows (api_key_usage never had
// them); BYOK_BRIDGE_BULK_USAGE=false turns the route off when a Flow must see each record, and so does a
// cache that purges itself on writes (CACHE_AUTO_PURGE); the sidecar then stores them through the items API.

import { randomBytes } from "node:crypto";

export const USAGE_ROUTE = "/byok-bridge/usage/:collection";
/** More rows than the sidecar ever sends in one batch (USAGE_BATCH_SIZE is at most 1,000). */
export const MAX_ROWS = 1_000;
const ROWS_PER_STATEMENT = 200;
/** Knex clients whose `onConflict().ignore()` skips only the duplicate row (MySQL's INSERT IGNORE skips more). */
const CLIENTS = new Set(["sqlite3", "pg", "postgres", "cockroachdb"]);

/** A UUID, in either case: a record's user and request_id here, a configured role id in index.js. */
export const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** decimal(20, 9), not negative: the money columns. */
const CENTS_RE = /^[0-9]{1,11}(\.[0-9]{1,9})?$/;
const ISO_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;

/** Random bytes drawn from the system's generator a pool at a time: 10 per id (74 random bits). */
const POOL_BYTES = 16 * 1024;
let pool = Buffer.alloc(0);
let taken = 0;
const HEX = Array.from({ length: 256 }, (_, byte) => byte.toString(16).padStart(2, "0"));

/**
 * A UUIDv7 (RFC 9562): the time first, so new rows go to the end of the primary key's index instead of a
 * random page of it (with v4 ids the insert slowed as the ledger grew). Its random bits come from a pool
 * (a `randomBytes` call per id was a third of the route's time checking a batch).
 */
export function uuidV7(now = Date.now()) {
	if (taken + 10 > pool.length) {
		pool = randomBytes(POOL_BYTES);
		taken = 0;
	}
	const r = pool.subarray(taken, taken + 10);
	taken += 10;
	const ms = now.toString(16).padStart(12, "0").slice(-12);
	const h = (i) => HEX[r[i]];
	return (
		`${ms.slice(0, 8)}-${ms.slice(8)}-7${HEX[r[0] & 0x0f][1]}${h(1)}-` +
		`${HEX[0x80 | (r[2] & 0x3f)]}${h(3)}-${h(4)}${h(5)}${h(6)}${h(7)}${h(8)}${h(9)}`
	);
}

const text = (value) => typeof value === "string" && value.length > 0 && value.length <= 255;
const tokens = (value) => Number.isSafeInteger(value) && value >= 0;

/** Per field: whether a value is acceptable. `fallback_from` is optional everywhere. */
const COMMON = {
	user: (v) => typeof v === "string" && UUID_RE.test(v),
	provider: text,
	model: text,
	prompt_tokens: tokens,
	completion_tokens: tokens,
	total_tokens: tokens,
	request_id: (v) => typeof v === "string" && UUID_RE.test(v),
	occurred_at: (v) => typeof v === "string" && ISO_RE.test(v) && !Number.isNaN(Date.parse(v)),
	fallback_from: (v) => v === undefined || v === null || text(v),
};
export const FIELDS = Object.freeze({
	api_key_usage: { ...COMMON, estimated_cost_cents: (v) => typeof v === "string" && CENTS_RE.test(v) },
	credit_transactions: {
		...COMMON,
		transaction_type: (v) => v === "deduction",
		service_type: text,
		cost_cents: (v) => typeof v === "string" && CENTS_RE.test(v),
		description: text,
	},
});
/** FIELDS as lists, made once rather than per record. */
const CHECKS = Object.fromEntries(Object.entries(FIELDS).map(([collection, fields]) => [collection, Object.entries(fields)]));

/** A 4xx or 5xx answer in Directus's error shape. */
export class IngestError extends Error {
	constructor(status, code, message) {
		super(message);
		this.status = status;
		this.code = code;
	}
}

/**
 * The rows to insert for `body` (a JSON array of the sidecar's records) into `collection`, or an IngestError
 * naming the first bad record and field. `hasFallbackFrom`: whether the collection has that field (an install
 * that predates it stores the rest, as the items API would). `now` and `newId` are for tests.
 */
export function usageRows(collection, body, { hasFallbackFrom = true, now = new Date(), newId = uuidV7 } = {}) {
	const checks = Object.hasOwn(CHECKS, collection) ? CHECKS[collection] : null;
	if (!checks) throw new IngestError(403, "FORBIDDEN", `usage records go to api_key_usage or credit_transactions, not ${collection}`);
	if (!Array.isArray(body) || body.length === 0 || body.length > MAX_ROWS) {
		throw new IngestError(400, "INVALID_PAYLOAD", `the body must be an array of 1 to ${MAX_ROWS} records`);
	}
	const fields = FIELDS[collection];
	return body.map((record, index) => {
		if (record === null || typeof record !== "object" || Array.isArray(record)) {
			throw new IngestError(400, "INVALID_PAYLOAD", `record ${index} is not an object`);
		}
		for (const name in record) {
			if (!Object.hasOwn(fields, name)) throw new IngestError(400, "INVALID_PAYLOAD", `record ${index}: unknown field ${name}`);
		}
		for (const [name, valid] of checks) {
			if (!valid(record[name])) throw new IngestError(400, "INVALID_PAYLOAD", `record ${index}: ${name} is missing or invalid`);
		}
		const row = { ...record, id: newId(), created_at: now, occurred_at: new Date(record.occurred_at) };
		if (!hasFallbackFrom || row.fallback_from === undefined) delete row.fallback_from;
		return row;
	});
}

/** The columns a batch fills in `collection`: the record's fields, its id and when it was stored. */
export function usageColumns(collection, hasFallbackFrom) {
	return ["id", "created_at", ...Object.keys(FIELDS[collection]).filter((name) => hasFallbackFrom || name !== "fallback_from")];
}

/** Inserts `rows` a few hundred per statement, a stored request_id skipped: any database knex speaks. */
export async function insertKnex(trx, collection, rows) {
	for (let start = 0; start < rows.length; start += ROWS_PER_STATEMENT) {
		await trx(collection).insert(rows.slice(start, start + ROWS_PER_STATEMENT)).onConflict("request_id").ignore();
	}
}

/**
 * SQLite: the whole batch as one JSON text that SQLite's `json_each` takes apart, a stored request_id skipped.
 * Knex building an INSERT of 200 rows by 13 values was a sixth of the route's CPU. Dates go in as knex's
 * driver binds them (milliseconds since 1970), so a row reads back the same either way.
 */
export async function insertSqlite(trx, collection, columns, rows) {
	const json = JSON.stringify(rows, function (key, value) {
		return this[key] instanceof Date ? this[key].getTime() : value;
	});
	const names = columns.map((name) => `"${name}"`).join(", ");
	const values = columns.map((name) => `json_extract(value, '$.${name}')`).join(", ");
	await trx.raw(`INSERT INTO "${collection}" (${names}) SELECT ${values} FROM json_each(?) WHERE true ON CONFLICT ("request_id") DO NOTHING`, [json]);
}

/** A database refusal that sending the same rows again cannot fix (unknown user, a value out of range). */
function refusedForGood(error) {
	const code = String(error?.code ?? "");
	return code === "SQLITE_CONSTRAINT" || code === "SQLITE_MISMATCH" || code.startsWith("22") || code.startsWith("23");
}

/**
 * The route's handler. `isService(accountability)` says whether the caller is the sidecar's role; `enabled` is
 * BYOK_BRIDGE_BULK_USAGE read once. Answers 404 when the route is off or the database is not one it supports:
 * the sidecar then uses the items API.
 */
export function usageIngestHandler({ database, isService, enabled, logger }) {
	const client = String(database?.client?.config?.client ?? "");
	const supported = enabled && CLIENTS.has(client);
	const answer = (res, error) =>
		res.status(error.status).json({ errors: [{ message: error.message, extensions: { code: error.code } }] });
	return async (req, res) => {
		try {
			if (!supported) {
				throw new IngestError(404, "ROUTE_NOT_FOUND", "bulk usage storage is off here; use the items API");
			}
			if (!(await isService(req.accountability))) {
				throw new IngestError(403, "FORBIDDEN", "only the byok-bridge service role stores usage records here");
			}
			const collection = req.params.collection;
			const fields = req.schema?.collections?.[collection]?.fields ?? {};
			const hasFallbackFrom = Object.hasOwn(fields, "fallback_from");
			const rows = usageRows(collection, req.body, { hasFallbackFrom });
			try {
				await database.transaction((trx) =>
					client === "sqlite3" ? insertSqlite(trx, collection, usageColumns(collection, hasFallbackFrom), rows) : insertKnex(trx, collection, rows),
				);
			} catch (error) {
				if (refusedForGood(error)) {
					throw new IngestError(400, "INVALID_PAYLOAD", "the database refused a record of the batch (e.g. an unknown user)");
				}
				logger?.warn?.({ code: error?.code }, "byok-bridge: cannot store usage records; the sidecar will send them again");
				throw new IngestError(503, "SERVICE_UNAVAILABLE", "cannot store the records now; send them again");
			}
			res.json({ data: { received: rows.length } });
		} catch (error) {
			if (error instanceof IngestError) return answer(res, error);
			// The error's kind only: its message could quote a record.
			logger?.error?.({ name: error?.name, code: error?.code }, "byok-bridge: usage ingest failed");
			return answer(res, new IngestError(500, "INTERNAL_SERVER_ERROR", "usage ingest failed"));
		}
	};
}

const off = (value) => value === false || String(value ?? "").trim().toLowerCase() === "false";
const on = (value) => value === true || String(value ?? "").trim().toLowerCase() === "true";

/**
 * Whether the route serves: unless BYOK_BRIDGE_BULK_USAGE is false (Directus may have parsed it as a boolean
 * already), or Directus's cache purges itself on writes (CACHE_AUTO_PURGE), which rows inserted here would not
 * do, so cached reads of the ledger would go stale.
 */
export function bulkUsageEnabled(env) {
	return !off(env?.BYOK_BRIDGE_BULK_USAGE) && !(on(env?.CACHE_ENABLED) && on(env?.CACHE_AUTO_PURGE));
}
