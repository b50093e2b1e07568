import assert from "node:assert/strict";
import { test } from "node:test";

import api from "../src/api.js";
import * as app from "../src/app.js";
import { ByokBridgeError, answerText, callSidecar, llmOperation, requestBody, userFor } from "../src/call.js";

const USER = "6f1c2d0e-8a1b-4c3d-9e8f-0a1b2c3d4e5f";
const ENV = { BYOK_BRIDGE_URL: "http://sidecar:8787/", BYOK_BRIDGE_FLOWS_TOKEN: "flows-token-0123456789abcdef0123456789" };

/** A fetch that records the request and answers `status` with `body` and headers. */
function fakeFetch(status, body, headers = {}) {
	const calls = [];
	const impl = async (url, init) => {
		calls.push({ url, init });
		return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });
	};
	return { impl, calls };
}

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
