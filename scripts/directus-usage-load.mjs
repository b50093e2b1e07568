#!/usr/bin/env node
// A running Directus stores usage records at a steady rate, delivered as a sidecar making that many calls a
// second delivers them: records accrue at LOAD_RATE a second; each round POSTs what has accrued (at most
// LOAD_BATCH, the sidecar's USAGE_BATCH_SIZE) to the hook's usage route, one request in flight. After a POST the
// next waits for a full batch or LOAD_LINGER_MS (the sidecar's USAGE_DELIVERY_LINGER_MS) since it ended, looking
// every 5 ms (the outbox writer's linger, after which the sidecar's flusher hears of new records).
// scripts/bench.sh runs its direct and bare-proxy baselines beside it, so that they have the sidecar's neighbour
// too: a Directus on the same cores storing the sidecar's records.
//
//   DIRECTUS_URL=http://127.0.0.1:8055 DIRECTUS_TOKEN=<the sidecar's static token> LOAD_USER=<a user id> \
//     LOAD_RATE=6000 LOAD_SECONDS=60 node scripts/directus-usage-load.mjs
//
// Settings (environment): LOAD_COLLECTION (credit_transactions, or api_key_usage), LOAD_BATCH (500),
// LOAD_LINGER_MS (100; 0 sends whatever has accrued at once).
// The records stay in the database (credit_transactions deductions lower the user's balance). Prints one line
// of JSON at the end: records stored, seconds, records per second, the largest batch, and `behind`, the
// records accrued but not stored when the time was up (Directus not keeping up). Exit 1 when Directus refuses
// a batch. Prints no secret. Node >= 20, no dependencies.

import { setTimeout as sleep } from "node:timers/promises";

import { recordMaker } from "./usage-records.mjs";

const WRITER_LINGER_MS = 5;

function setting(name, fallback) {
	const value = process.env[name] ?? fallback;
	if (value === undefined || value === "") {
		console.error(`directus-usage-load: ${name} is not set (see the header of this script)`);
		process.exit(2);
	}
	return value;
}
function positive(name, fallback) {
	const value = Number(setting(name, fallback));
	if (!(value > 0)) {
		console.error(`directus-usage-load: ${name} must be a positive number`);
		process.exit(2);
	}
	return value;
}

const collection = setting("LOAD_COLLECTION", "credit_transactions");
const url = `${setting("DIRECTUS_URL").replace(/\/+$/, "")}/byok-bridge/usage/${collection}`;
const token = setting("DIRECTUS_TOKEN");
const next = recordMaker(collection, [setting("LOAD_USER")]);
const rate = positive("LOAD_RATE");
const seconds = positive("LOAD_SECONDS");
const batch = positive("LOAD_BATCH", "500");
if (!Number.isInteger(batch)) {
	console.error("directus-usage-load: LOAD_BATCH must be a whole number of records");
	process.exit(2);
}
const linger = Number(setting("LOAD_LINGER_MS", "100"));
if (!(linger >= 0)) {
	console.error("directus-usage-load: LOAD_LINGER_MS must be a number of milliseconds, 0 or more");
	process.exit(2);
}

const started = performance.now();
const accrued = () => Math.floor(((Math.min(performance.now() - started, seconds * 1000)) / 1000) * rate);
let stored = 0;
let largest = 0;
let lastEnded = -Infinity;
while (performance.now() - started < seconds * 1000) {
	const count = Math.min(accrued() - stored, batch);
	if (count === 0 || (count < batch && performance.now() - lastEnded < linger)) {
		await sleep(WRITER_LINGER_MS);
		continue;
	}
	const response = await fetch(url, {
		method: "POST",
		headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
		body: JSON.stringify(Array.from({ length: count }, next)),
	});
	if (response.status !== 200) {
		console.error(`directus-usage-load: the usage route answered HTTP ${response.status}: ${(await response.text()).slice(0, 200)}`);
		process.exit(1);
	}
	await response.arrayBuffer();
	lastEnded = performance.now();
	stored += count;
	largest = Math.max(largest, count);
}
const elapsed = (performance.now() - started) / 1000;
console.log(
	JSON.stringify({
		records: stored,
		seconds: Number(elapsed.toFixed(1)),
		per_second: Math.round(stored / elapsed),
		largest_batch: largest,
		behind: accrued() - stored,
	}),
);
