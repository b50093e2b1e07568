// byok-bridge for Directus Flows, in the background: the "LLM call" operation can queue a durable job instead of
// waiting for the answer. The sidecar posts the finished job to POST /byok-bridge-flows/job-result, signed the
// Standard Webhooks way with a secret both sides derive from the Flows credential (so nobody without it can
// write here), and the answer's text is written into the item the operation named.
import { createHmac, timingSafeEqual } from "node:crypto";

import { answerText, resultCollections, resultTarget } from "./results.js";

/** Must match the sidecar's derivation (`WebhookSecret::derived`). */
export const CALLBACK_PURPOSE = "byok-bridge flow job callbacks";
const TOLERANCE_SECS = 5 * 60;

/** The callback signing key: HMAC-SHA256(Flows credential, purpose). */
export function callbackKey(token) {
	return createHmac("sha256", token).update(CALLBACK_PURPOSE).digest();
}

/** Whether a delivery carries a valid `v1` signature by `key`, made within five minutes of `nowSecs`. */
export function verifyDelivery(key, headers, rawBody, nowSecs) {
	const id = headers?.["webhook-id"];
	const timestamp = headers?.["webhook-timestamp"];
	const signatures = headers?.["webhook-signature"];
	if (!id || !/^\d{1,12}$/.test(timestamp ?? "") || !signatures || !rawBody) return false;
	if (Math.abs(nowSecs - Number(timestamp)) > TOLERANCE_SECS) return false;
	const expected = createHmac("sha256", key).update(`${id}.${timestamp}.`).update(rawBody).digest();
	return String(signatures)
		.split(" ")
		.slice(0, 8)
		.some((entry) => {
			const [version, encoded] = entry.split(",");
			const candidate = Buffer.from(encoded ?? "", "base64");
			return version === "v1" && candidate.length === expected.length && timingSafeEqual(candidate, expected);
		});
}

export const jobResultEndpoint = {
	id: "byok-bridge-flows",
	handler: (router, { env, services, getSchema, logger }) => {
		router.post("/job-result", async (req, res) => {
			const token = String(env?.BYOK_BRIDGE_FLOWS_TOKEN ?? "").trim();
			const refuse = (status, message) => res.status(status).json({ errors: [{ message, extensions: { code: "FORBIDDEN" } }] });
			if (!token) return refuse(503, "byok-bridge: BYOK_BRIDGE_FLOWS_TOKEN is not set");
			if (!verifyDelivery(callbackKey(token), req.headers, req.rawBody, Math.floor(Date.now() / 1000))) {
				return refuse(401, "byok-bridge: invalid signature");
			}
			const job = req.body?.data;
			const target = resultTarget(job?.metadata, resultCollections(env));
			if (req.body?.type === "job.succeeded" && !target) {
				logger?.warn?.(`byok-bridge: job ${job?.id} names no collection in BYOK_BRIDGE_FLOW_RESULT_COLLECTIONS; nothing written`);
			} else if (req.body?.type === "job.succeeded") {
				const items = new services.ItemsService(target.collection, { schema: await getSchema(), accountability: null });
				await items.updateOne(target.item, { [target.field]: answerText(job.api, job.result) });
				logger?.info?.(`byok-bridge: job ${job.id} written to ${target.collection}/${target.item}`);
			} else if (req.body?.type === "job.failed") {
				logger?.warn?.(`byok-bridge: job ${job?.id} failed: ${job?.error?.code}`);
			}
			return res.status(204).end();
		});
	},
};
