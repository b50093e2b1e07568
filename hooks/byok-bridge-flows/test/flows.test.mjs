import assert from "node:assert/strict";
import { test } from "node:test";

import api from "../src/api.js";
import * as app from "../src/app.js";
import { createHmac } from "node:crypto";

import { ByokBridgeError, callSidecar, llmOperation, requestBody, userFor } from "../src/call.js";
import { callbackKey, jobResultEndpoint, verifyDelivery } from "../src/jobs.js";
import { answerText, resultCollections, resultTarget } from "../src/results.js";

const USER = "6f1c2d0e-8a1b-4c3d-9e8f-0a1b2c3d4e5f";
const ENV = {
	BYOK_BRIDGE_URL: "http://sidecar:8787/",
	BYOK_BRIDGE_FLOWS_TOKEN: "flows-token-0123456789abcdef0123456789",
	BYOK_BRIDGE_FLOW_RESULT_COLLECTIONS: "notes, directus_users",
};

/** A fetch that records the request and answers `status` with `body` and headers. */
function fakeFetch(status, body, headers = {}) {
	const calls = [];
	const impl = async (url, init) => {
		calls.push({ url, init });
		return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });
	};
	return { impl, calls };
}

test("the job-result endpoint is registered beside the operations", () => {
	assert.deepEqual(api.endpoints.map((e) => [e.name, e.config.id]), [["byok-bridge-flows", "byok-bridge-flows"]]);
});

test("both operations are registered by name, on both sides", () => {
	assert.deepEqual(api.operations.map((o) => [o.name, o.config.id]), [
		["byok-bridge-llm", "byok-bridge-llm"],
		["byok-bridge-route", "byok-bridge-route"],
	]);
	assert.deepEqual(app.operations.map((o) => o.id), ["byok-bridge-llm", "byok-bridge-route"]);
	assert.ok(app.operations.every((o) => typeof o.overview({}) === "object" && Array.isArray(o.options)));
});

test("the user is the option, else the Flow's own; anything else is refused", () => {
	assert.equal(userFor({ user: ` ${USER.toUpperCase()} ` }, { user: "x" }), USER);
	assert.equal(userFor({}, { user: USER }), USER);
	for (const [options, accountability] of [[{}, null], [{ user: "1 OR 1=1" }, null], [{ user: "{{$trigger.payload.user}}" }, null]]) {
		assert.throws(() => userFor(options, accountability), ByokBridgeError);
	}
});

test("a prompt becomes one user message; messages JSON is used as given", () => {
	assert.deepEqual(requestBody({ model: "gpt-4o-mini", prompt: "Summarize: hi" }), {
		api: "chat.completions",
		path: "/v1/chat/completions",
		body: { model: "gpt-4o-mini", messages: [{ role: "user", content: "Summarize: hi" }], max_tokens: 1024 },
	});
	const anthropic = requestBody({ api: "messages", model: "claude-3-5-haiku-latest", messages: '[{"role":"user","content":"x"}]', max_tokens: "50" });
	assert.equal(anthropic.path, "/v1/messages");
	assert.deepEqual(anthropic.body.messages, [{ role: "user", content: "x" }]);
	assert.equal(anthropic.body.max_tokens, 50);
	assert.equal(answerText("messages", { content: [{ type: "text", text: "a" }, { type: "tool_use" }, { type: "text", text: "b" }] }), "ab");
	assert.equal(answerText("chat.completions", { choices: [{ message: { content: "Hi!" } }] }), "Hi!");
});

test("the sidecar is called with the Flows credential on the user's behalf, and its answer handed on", async () => {
	const { impl, calls } = fakeFetch(200, { choices: [{ message: { content: "Hi!" } }] }, { "x-byok-source": "internal", "x-byok-usage-id": "u-1" });
	const original = globalThis.fetch;
	globalThis.fetch = impl;
	try {
		const out = await llmOperation.handler({ model: "gpt-4o-mini", prompt: "hello" }, { accountability: { user: USER }, env: ENV });
		assert.equal(out.text, "Hi!");
		assert.equal(out.source, "internal");
		assert.equal(out.usage_id, "u-1");
	} finally {
		globalThis.fetch = original;
	}
	assert.equal(calls[0].url, "http://sidecar:8787/v1/chat/completions");
	assert.equal(calls[0].init.headers.authorization, `Bearer ${ENV.BYOK_BRIDGE_FLOWS_TOKEN}`);
	assert.equal(calls[0].init.headers["x-byok-on-behalf-of"], USER);
});

test("a refusal reaches the next operation as the sidecar's coded error, never with the token", async () => {
	const { impl } = fakeFetch(402, { error: { code: "insufficient_credits", message: "You are out of credits." } });
	await assert.rejects(callSidecar(ENV, "/v1/route", USER, {}, impl), (error) => {
		assert.equal(error.code, "insufficient_credits");
		assert.equal(error.status, 402);
		assert.ok(!error.message.includes(ENV.BYOK_BRIDGE_FLOWS_TOKEN));
		return true;
	});
	const unreachable = async () => {
		throw new TypeError("fetch failed");
	};
	await assert.rejects(callSidecar(ENV, "/v1/route", USER, {}, unreachable), { code: "sidecar_unreachable" });
	await assert.rejects(callSidecar({}, "/v1/route", USER, {}, unreachable), { code: "not_configured" });
});

/** A delivery signed the Standard Webhooks way with `key`, at `timestamp`. */
function signed(key, body, timestamp = Math.floor(Date.now() / 1000), id = "msg_1") {
	const signature = createHmac("sha256", key).update(`${id}.${timestamp}.${body}`).digest("base64");
	return { "webhook-id": id, "webhook-timestamp": String(timestamp), "webhook-signature": `v1,${signature}` };
}

test("the callback key is the sidecar's derivation of the Flows credential (shared vector)", () => {
	const key = callbackKey("flows-token-0123456789abcdef0123456789");
	assert.equal(`whsec_${key.toString("base64")}`, "whsec_z6pOJFoVCq8Ne3MGwXY3GSKhuXygtdyVw4W2OT4M/y8=");
});

test("only deliveries signed with the derived key, recently, verify", () => {
	const key = callbackKey(ENV.BYOK_BRIDGE_FLOWS_TOKEN);
	const body = JSON.stringify({ type: "job.succeeded" });
	const now = Math.floor(Date.now() / 1000);
	assert.ok(verifyDelivery(key, signed(key, body), Buffer.from(body), now));
	assert.ok(!verifyDelivery(key, signed(key, body), Buffer.from(body.replace("succeeded", "failed")), now));
	assert.ok(!verifyDelivery(callbackKey("another-token-000000000000000000000"), signed(key, body), Buffer.from(body), now));
	assert.ok(!verifyDelivery(key, signed(key, body, now - 600), Buffer.from(body), now), "too old");
	assert.ok(!verifyDelivery(key, {}, Buffer.from(body), now));
});

test("results go only to a named field of a named item in a collection the operator allowed, never a system one", () => {
	const allowed = resultCollections(ENV);
	assert.deepEqual([...allowed], ["notes"], "directus_* is never allowed");
	assert.deepEqual(resultTarget({ directus_flow: { collection: "notes", item: "7", field: "summary" } }, allowed), { collection: "notes", item: "7", field: "summary" });
	for (const target of [{ collection: "directus_users", item: "1", field: "email" }, { collection: "orders", item: "1", field: "total" },
		{ collection: "notes", item: "", field: "summary" }, { collection: "notes", item: "1", field: "" }]) {
		assert.equal(resultTarget({ directus_flow: target }, allowed), null, JSON.stringify(target));
	}
	assert.equal(resultTarget(undefined, allowed), null);
	assert.equal(resultCollections({}).size, 0, "none by default");
});

test("in the background the operation queues a job saying where the answer goes, and hands on its id", async () => {
	const { impl, calls } = fakeFetch(202, { id: "job-1", status: "queued" });
	const options = { model: "gpt-4o-mini", prompt: "Summarize", user: USER, background: true, result_collection: "notes", result_item: "7", result_field: "summary" };
	const original = globalThis.fetch;
	globalThis.fetch = impl;
	try {
		assert.deepEqual(await llmOperation.handler(options, { accountability: null, env: ENV }), { job_id: "job-1", status: "queued" });
	} finally {
		globalThis.fetch = original;
	}
	assert.equal(calls[0].url, "http://sidecar:8787/v1/jobs");
	const sent = JSON.parse(calls[0].init.body);
	assert.deepEqual(sent.metadata, { directus_flow: { collection: "notes", item: "7", field: "summary" } });
	assert.equal(sent.api, "chat.completions");
	assert.equal(sent.notify_on_failure, true);
	await assert.rejects(llmOperation.handler({ ...options, result_field: "" }, { accountability: null, env: ENV }), ByokBridgeError);
	await assert.rejects(llmOperation.handler({ ...options, result_collection: "orders" }, { accountability: null, env: ENV }), /BYOK_BRIDGE_FLOW_RESULT_COLLECTIONS/);
});

test("the endpoint writes a signed result into the item and refuses anything unsigned", async () => {
	let handler;
	const router = { post: (path, fn) => { assert.equal(path, "/job-result"); handler = fn; } };
	const updates = [];
	class ItemsService {
		constructor(collection, options) { this.collection = collection; assert.equal(options.accountability, null); }
		async updateOne(item, data) { updates.push([this.collection, item, data]); }
	}
	jobResultEndpoint.handler(router, { env: ENV, services: { ItemsService }, getSchema: async () => ({}) });
	const event = { type: "job.succeeded", data: { id: "job-1", api: "chat.completions", metadata: { directus_flow: { collection: "notes", item: "7", field: "summary" } },
		result: { choices: [{ message: { content: "Short." } }] } } };
	const raw = JSON.stringify(event);
	const respond = () => {
		const res = { code: 0, status(c) { this.code = c; return this; }, json() { return this; }, end() { return this; } };
		return res;
	};
	const key = callbackKey(ENV.BYOK_BRIDGE_FLOWS_TOKEN);
	const ok = respond();
	await handler({ headers: signed(key, raw), rawBody: Buffer.from(raw), body: event }, ok);
	assert.equal(ok.code, 204);
	assert.deepEqual(updates, [["notes", "7", { summary: "Short." }]]);
	const forged = respond();
	await handler({ headers: signed(callbackKey("not-the-token-0000000000000000000"), raw), rawBody: Buffer.from(raw), body: event }, forged);
	assert.equal(forged.code, 401);
	assert.equal(updates.length, 1);
});

test("the route operation offers every provider the sidecar ships, and any other declared id", async () => {
	const { readFile } = await import("node:fs/promises");
	const catalog = JSON.parse(await readFile(new URL("../../../catalog/providers.json", import.meta.url), "utf8"));
	const route = app.operations.find((o) => o.id === "byok-bridge-route");
	const options = route.options.find((o) => o.field === "provider").meta.options;
	assert.deepEqual(options.choices, catalog.providers.map(({ id, name }) => ({ text: name, value: id })));
	assert.equal(options.allowOther, true);
});

test("the route operation passes a declared provider's id and refuses to pass a malformed one", async () => {
	const { routeOperation } = await import("../src/call.js");
	const sent = [];
	const original = globalThis.fetch;
	globalThis.fetch = async (url, init) => {
		sent.push(JSON.parse(init.body).provider);
		return new Response("{}", { status: 200, headers: { "content-type": "application/json" } });
	};
	try {
		for (const provider of ["mistral", "../admin"]) {
			await routeOperation.handler({ provider, user: USER }, { accountability: { admin: true }, env: ENV });
		}
	} finally {
		globalThis.fetch = original;
	}
	assert.deepEqual(sent, ["mistral", "openai"]);
});
