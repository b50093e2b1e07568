#!/usr/bin/env node
// Measure how fast a running Directus stores byok-bridge usage records (api_key_usage rows and
// credit_transactions deductions) when they are POSTed as JSON arrays, one request per batch, the way the
// sidecar delivers its spool. Prints a Markdown table: rows/s per collection, batch size and number of
// batch POSTs in flight.
//
//   DIRECTUS_URL=http://127.0.0.1:8055 DIRECTUS_TOKEN=<the sidecar's static token> \
//     node scripts/measure-directus-ingest.mjs
//
// e.g. on an instance from scripts/directus-up.sh (its instance.env has the URL, both tokens and the pid):
//   set -a; . DIR/instance.env; set +a
//   MEASURE_ACCOUNTABILITY=activity,null MEASURE_CONCURRENCY=1,2 MEASURE_REPEAT=2 \
//     MEASURE_CPU_PIDS=directus=$DIRECTUS_PID node scripts/measure-directus-ingest.mjs
// (PostgreSQL: add db=<postmaster pid>, the first line of its postmaster.pid: its backends are its children.)
//
// Settings (environment, all optional except the first two):
//   MEASURE_COLLECTIONS   api_key_usage,credit_transactions
//   MEASURE_BATCHES       1,10,100,500,1000,2000       records per POST
//   MEASURE_CONCURRENCY   1                            batch POSTs in flight at once (e.g. 1,2,4)
//   MEASURE_SECONDS       5                            per cell (each in-flight slot also sends >= 3 batches)
//   MEASURE_ROUTE         items                        items: POST /items/<collection> (a createOne per row);
//                                                      bulk: POST /byok-bridge/usage/<collection> (the hook's
//                                                      route, a few hundred rows per INSERT; at most 1,000 per
//                                                      batch); or both, e.g. "items,bulk"
//   MEASURE_FIELDS        id                           ?fields= of the POST (what Directus reads back and
//                                                      returns: "id" is the cheapest; "" = every field)
//   MEASURE_USER_IDS      (read from GET /users)       users the records belong to, comma-separated
//   MEASURE_REPEAT        1                            runs per cell; the fastest undisturbed run is kept (with
//                                                      MEASURE_CPU_PIDS, a disturbed run does not count: up to
//                                                      3 x N tries, 5 s apart)
//   MEASURE_CPU_PIDS      directus=PID,db=PID          optional (Linux): CPU use of these processes and all
//                                                      their descendants during each cell, in % of one core and
//                                                      in CPU milliseconds per stored row; "others" = every other
//                                                      process on the machine (this script excluded): a run with
//                                                      others above 25% of a core is marked noisy ("*")
//   MEASURE_ACCOUNTABILITY  e.g. "activity,null"       optional: run the whole matrix once per value, setting
//                                                      both collections' meta.accountability with
//                                                      DIRECTUS_ADMIN_TOKEN (the original is restored at the end)
//   DIRECTUS_ADMIN_TOKEN  optional: also report activity and revision rows written per record
//
// Every record is realistic (scripts/usage-records.mjs: the sidecar's fields, a fresh UUIDv7 request_id each)
// and stays in the database: run this against a throwaway instance. Node >= 20 (global fetch), no dependencies.
// Prints no secret.

import { readFileSync, readdirSync } from "node:fs";

import { recordMaker } from "./usage-records.mjs";

const baseUrl = (process.env.DIRECTUS_URL ?? "").replace(/\/+$/, "");
const token = process.env.DIRECTUS_TOKEN;
const adminToken = process.env.DIRECTUS_ADMIN_TOKEN || null;
if (!baseUrl || !token) {
	console.error("usage: DIRECTUS_URL=.. DIRECTUS_TOKEN=.. node scripts/measure-directus-ingest.mjs (see the header)");
	process.exit(2);
}
const list = (name, fallback) =>
	(process.env[name] ?? fallback)
		.split(",")
		.map((s) => s.trim())
		.filter(Boolean);
const numbers = (name, fallback) =>
	list(name, fallback).map((s) => {
		const n = Number(s);
		if (!Number.isInteger(n) || n < 1) throw new Error(`${name}: ${s} is not a positive integer`);
		return n;
	});

const collections = list("MEASURE_COLLECTIONS", "api_key_usage,credit_transactions");
const batches = numbers("MEASURE_BATCHES", "1,10,100,500,1000,2000");
const concurrencies = numbers("MEASURE_CONCURRENCY", "1");
const seconds = Number(process.env.MEASURE_SECONDS ?? 5);
const repeat = Number(process.env.MEASURE_REPEAT ?? 1);
const fields = process.env.MEASURE_FIELDS ?? "id";
const routes = list("MEASURE_ROUTE", "items");
for (const route of routes) {
	if (route !== "items" && route !== "bulk") throw new Error(`MEASURE_ROUTE: ${route} is neither items nor bulk`);
}
const accountabilities = list("MEASURE_ACCOUNTABILITY", "").map((a) => (a === "null" ? null : a));
if (accountabilities.length > 0 && !adminToken) {
	console.error("MEASURE_ACCOUNTABILITY needs DIRECTUS_ADMIN_TOKEN");
	process.exit(2);
}
const log = (msg) => console.error(`[measure] ${msg}`);

// ---- HTTP ------------------------------------------------------------------------------------------

async function call(method, path, body, bearer = token) {
	const res = await fetch(`${baseUrl}${path}`, {
		method,
		headers: {
			authorization: `Bearer ${bearer}`,
			...(body === undefined ? {} : { "content-type": "application/json" }),
		},
		body,
		signal: AbortSignal.timeout(300_000),
	});
	const text = await res.text();
	let json = null;
	try {
		json = text ? JSON.parse(text) : null;
	} catch {
		// not JSON (e.g. a proxy's error page)
	}
	return { status: res.status, json, text };
}
async function must(method, path, body, bearer) {
	const r = await call(method, path, body === undefined ? undefined : JSON.stringify(body), bearer);
	if (r.status >= 300) throw new Error(`${method} ${path} -> HTTP ${r.status}: ${r.text.slice(0, 300)}`);
	return r.json?.data;
}

// ---- records ---------------------------------------------------------------------------------------

let userIds = list("MEASURE_USER_IDS", "");
const makers = new Map();
/** The next record for `collection`, for the users of userIds in turn (set before the first record). */
function record(collection) {
	if (!makers.has(collection)) makers.set(collection, recordMaker(collection, userIds));
	return makers.get(collection)();
}

// ---- CPU (Linux /proc) -----------------------------------------------------------------------------

const cpuRoots = list("MEASURE_CPU_PIDS", "").map((entry) => {
	const [name, pid] = entry.includes("=") ? entry.split("=") : [entry, entry];
	return { name, pid: Number(pid) };
});
const CLOCK_TICKS = 100; // USER_HZ on Linux
function procStat(pid) {
	try {
		const s = readFileSync(`/proc/${pid}/stat`, "utf8");
		const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
		return { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) };
	} catch {
		return null;
	}
}
// CPU seconds used so far by each root process and its live descendants, and by the whole machine.
function cpuSnapshot() {
	if (cpuRoots.length === 0) return null;
	let machine = NaN;
	try {
		// user nice system idle iowait irq softirq steal (guest time is already inside user and nice)
		const cpu = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1, 9).map(Number);
		machine = (cpu.reduce((a, b) => a + b, 0) - cpu[3] - cpu[4]) / CLOCK_TICKS; // all but idle and iowait
	} catch {
		// not Linux
	}
	const all = new Map();
	for (const d of readdirSync("/proc")) {
		if (!/^\d+$/.test(d)) continue;
		const st = procStat(d);
		if (st) all.set(Number(d), st);
	}
	const children = new Map();
	for (const [pid, st] of all) children.set(st.ppid, [...(children.get(st.ppid) ?? []), pid]);
	const out = {};
	for (const { name, pid } of cpuRoots) {
		let ticks = 0;
		const stack = [pid];
		while (stack.length) {
			const p = stack.pop();
			ticks += all.get(p)?.ticks ?? 0;
			stack.push(...(children.get(p) ?? []));
		}
		out[name] = ticks / CLOCK_TICKS;
	}
	out.machine = machine;
	return out;
}

// ---- one cell ----------------------------------------------------------------------------------------

async function countRows(path) {
	if (!adminToken) return null;
	const data = await must("GET", `${path}${path.includes("?") ? "&" : "?"}aggregate[count]=*`, undefined, adminToken);
	return Number(data[0].count);
}
const activityCount = () => countRows("/activity");
const revisionCount = () => countRows("/revisions");

function percentile(sorted, p) {
	if (sorted.length === 0) return NaN;
	return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

async function measureCell(collection, batch, inFlight, route) {
	const path =
		route === "bulk"
			? `/byok-bridge/usage/${collection}`
			: `/items/${collection}${fields ? `?fields=${encodeURIComponent(fields)}` : ""}`;
	// One warm-up request (schema and permission caches, connection reuse).
	const warm = await call("POST", path, JSON.stringify([record(collection)]));
	if (warm.status !== 200) throw new Error(`warm-up POST ${path} -> HTTP ${warm.status}: ${warm.text.slice(0, 300)}`);

	const [act0, rev0] = [await activityCount(), await revisionCount()];
	const cpu0 = cpuSnapshot();
	const self0 = process.cpuUsage();
	const latencies = [];
	let rows = 0;
	let failure = null;
	let bodyBytes = 0;
	const started = performance.now();
	const deadline = started + seconds * 1000;
	async function slot() {
		for (let sent = 0; !failure && (sent < 3 || performance.now() < deadline); sent++) {
			const body = JSON.stringify(Array.from({ length: batch }, () => record(collection)));
			bodyBytes = Math.max(bodyBytes, Buffer.byteLength(body));
			const t0 = performance.now();
			let r;
			try {
				r = await call("POST", path, body);
			} catch (err) {
				// e.g. the connection reset while sending a body above MAX_PAYLOAD_SIZE
				failure = `no answer: ${err.cause?.code ?? err.name ?? err.message}`;
				return;
			}
			if (r.status !== 200) {
				const e = r.json?.errors?.[0];
				failure = `HTTP ${r.status} ${e?.extensions?.code ?? ""} ${(e?.message ?? r.text).slice(0, 120)}`.trim();
				return;
			}
			latencies.push(performance.now() - t0);
			rows += batch;
		}
	}
	await Promise.all(Array.from({ length: inFlight }, slot));
	const elapsed = (performance.now() - started) / 1000;
	const cpu1 = cpuSnapshot();
	const self = process.cpuUsage(self0);
	const [act1, rev1] = [await activityCount(), await revisionCount()];
	latencies.sort((a, b) => a - b);
	const cpu = {};
	const cpuMsPerRow = {};
	let noisy = false;
	if (cpu0) {
		let measured = (self.user + self.system) / 1e6;
		for (const { name } of cpuRoots) {
			const used = cpu1[name] - cpu0[name];
			measured += used;
			cpu[name] = (100 * used) / elapsed;
			cpuMsPerRow[name] = rows > 0 ? (1000 * used) / rows : NaN;
		}
		cpu.others = (100 * (cpu1.machine - cpu0.machine - measured)) / elapsed;
		noisy = cpu.others > 25;
	}
	return {
		collection,
		batch,
		inFlight,
		requests: latencies.length,
		rows,
		elapsed,
		rowsPerSec: rows / elapsed,
		p50: percentile(latencies, 50),
		p99: percentile(latencies, 99),
		bodyBytes,
		cpu,
		activityPerRow: act0 === null || rows === 0 ? null : (act1 - act0) / rows,
		revisionsPerRow: rev0 === null || rows === 0 ? null : (rev1 - rev0) / rows,
		cpuMsPerRow,
		noisy,
		failure,
	};
}

// ---- main ----------------------------------------------------------------------------------------

const fmt = (n, d = 0) => (Number.isFinite(n) ? n.toFixed(d) : "-");
const size = (b) =>
	b >= 1024 * 1024 ? `${(b / 1024 / 1024).toFixed(2)} MiB` : b >= 1024 ? `${(b / 1024).toFixed(1)} KiB` : `${b} B`;

async function setAccountability(value) {
	for (const c of collections) await must("PATCH", `/collections/${c}`, { meta: { accountability: value } }, adminToken);
}

async function main() {
	if (userIds.length === 0) {
		const users = await must("GET", "/users?fields=id&limit=20");
		userIds = users.map((u) => u.id);
		if (userIds.length === 0) throw new Error("no readable users: set MEASURE_USER_IDS");
	}
	const info = await must("GET", "/server/info").catch(() => null);
	log(
		`${baseUrl}${info?.version ? ` (Directus ${info.version})` : ""}: ${collections.join(", ")}; batches ${batches.join(
			", ",
		)}; in flight ${concurrencies.join(", ")}; ${seconds} s per cell; ${userIds.length} users; ?fields=${fields || "(all)"}`,
	);

	let original = null;
	if (accountabilities.length > 0) {
		original = {};
		for (const c of collections) original[c] = (await must("GET", `/collections/${c}`, undefined, adminToken)).meta.accountability;
	}
	const runs = accountabilities.length > 0 ? accountabilities : [undefined];
	const results = [];
	try {
		for (const acc of runs) {
			if (acc !== undefined) await setAccountability(acc);
			for (const collection of collections) {
				const current = adminToken
					? (await must("GET", `/collections/${collection}`, undefined, adminToken)).meta.accountability
					: "?";
				for (const route of routes) for (const inFlight of concurrencies) {
					for (const batch of batches) {
						let r = null;
						for (let i = 0, good = 0, lastNoisy = false; good < repeat && i < 3 * repeat; i++) {
							if (lastNoisy) await new Promise((resolve) => setTimeout(resolve, 5000));
							const run = await measureCell(collection, batch, inFlight, route);
							lastNoisy = run.noisy;
							if (!run.noisy) good++;
							const better =
								r === null || run.failure || (r.noisy && !run.noisy) || (r.noisy === run.noisy && run.rowsPerSec > r.rowsPerSec);
							if (better) r = run;
							if (run.failure) break;
						}
						r.accountability = current;
						r.route = route;
						results.push(r);
						log(
							`${collection} ${route} acc=${current} batch=${batch} inflight=${inFlight}: ${fmt(r.rowsPerSec)} rows/s` +
								` (p50 ${fmt(r.p50)} ms)${r.failure ? ` FAILED ${r.failure}` : ""}`,
						);
					}
				}
			}
		}
	} finally {
		if (original) for (const [c, value] of Object.entries(original)) {
			await must("PATCH", `/collections/${c}`, { meta: { accountability: value } }, adminToken).catch((e) =>
				log(`could not restore ${c} accountability: ${e.message}`),
			);
		}
	}

	const cpuNames = cpuRoots.map((r) => r.name);
	const cpuCols = cpuNames.length > 0 ? [...cpuNames.flatMap((n) => [`${n} CPU`, `${n} CPU ms/row`]), "others CPU"] : [];
	const head = ["collection", "route", "accountability", "batch", "in flight", "requests", "rows/s", "p50 ms", "p99 ms", "body", ...cpuCols];
	if (adminToken) head.push("activity/row", "revisions/row");
	head.push("note");
	const lines = [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`];
	for (const r of results) {
		const row = [
			r.collection,
			r.route,
			String(r.accountability),
			r.batch,
			r.inFlight,
			r.requests,
			fmt(r.rowsPerSec),
			fmt(r.p50, 1),
			fmt(r.p99, 1),
			size(r.bodyBytes),
			...(cpuNames.length > 0
				? [...cpuNames.flatMap((n) => [`${fmt(r.cpu[n])}%`, fmt(r.cpuMsPerRow[n], 2)]), `${fmt(r.cpu.others)}%${r.noisy ? " *" : ""}`]
				: []),
		];
		if (adminToken) row.push(fmt(r.activityPerRow, 2), fmt(r.revisionsPerRow, 2));
		row.push(r.failure ?? "");
		lines.push(`| ${row.join(" | ")} |`);
	}
	process.stdout.write(`${lines.join("\n")}\n`);
}

main().catch((err) => {
	log(`failed: ${err.message}`);
	process.exit(1);
});
