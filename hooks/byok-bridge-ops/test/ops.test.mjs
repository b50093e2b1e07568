import assert from "node:assert/strict";
import { test } from "node:test";

import api from "../src/api.js";
import { notifyPreflight, overview } from "../src/overview.js";

const ENV = { BYOK_BRIDGE_URL: "http://sidecar:8787", BYOK_BRIDGE_OPERATOR_TOKEN: "operator-token-0123456789abcdef" };

test("the endpoint is registered under its name", () => {
	assert.deepEqual(api.endpoints.map((e) => [e.name, e.config.id]), [["byok-bridge-ops", "byok-bridge-ops"]]);
});

test("the overview asks the sidecar with the operator token and keeps each part's failure apart", async () => {
	const seen = [];
	const fetchImpl = async (url, init) => {
		seen.push([init.method, url, init.headers.authorization]);
		if (url.endsWith("/v1/status")) throw new TypeError("fetch failed");
		return new Response(JSON.stringify({ path: new URL(url).pathname }), { status: 200 });
	};
	const view = await overview(ENV, fetchImpl);
	assert.equal(view.flags.body.path, "/v1/flags");
	assert.equal(view.preflight.body.path, "/v1/admin/preflight");
	assert.equal(view.jobs.body.path, "/v1/admin/jobs");
	assert.equal(view.spend.body.path, "/v1/admin/spend");
	assert.equal(view.status.ok, false);
	assert.ok(!view.status.error.includes(ENV.BYOK_BRIDGE_OPERATOR_TOKEN));
	assert.ok(seen.every(([, , auth]) => auth === `Bearer ${ENV.BYOK_BRIDGE_OPERATOR_TOKEN}`));
	const notified = await notifyPreflight(ENV, async () => new Response('{"notified":2}', { status: 200 }));
	assert.deepEqual(notified, { ok: true, body: { notified: 2 } });
	assert.equal((await overview({}, fetchImpl)).flags.ok, false, "unconfigured: a clear error, no request");
});
