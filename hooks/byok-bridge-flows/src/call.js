// byok-bridge for Directus Flows: the two operations' server side. Plain ESM, no dependencies, no build step.
//
// Each calls the sidecar with the Flows credential (BYOK_BRIDGE_FLOWS_TOKEN in Directus's environment, the
// sidecar's FLOWS_TOKEN) on behalf of one user: the Flow's own user ($accountability.user) or one named in the
// operation's options (a user id from the Flow's data). The sidecar applies the same routing matrix, limits
// and accounting as for the user's own calls, and accepts this credential for nothing else.

import { answerText, resultCollections } from "./results.js";

const TIMEOUT_MS = 120_000;

/** An error the next operation sees as `$last`: the sidecar's coded error, never a token. */
export class ByokBridgeError extends Error {
	constructor(status, code, message) {
		super(`byok-bridge ${status} ${code}: ${message}`);
		this.status = status;
		this.code = code;
	}
}

/** The user a call is for: the option if set (a template already rendered by Directus), else the Flow's user. */
export function userFor(options, accountability) {
	const chosen = String(options?.user ?? "").trim() || accountability?.user || "";
	if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(chosen)) {
		throw new ByokBridgeError(400, "invalid_request", "no user to act for: set the operation's User or run the Flow as a user");
	}
	return chosen.toLowerCase();
}

/** POSTs `body` to the sidecar's `path` for `user`; resolves `{status, headers, body}`, rejects with ByokBridgeError. */
export async function callSidecar(env, path, user, body, fetchImpl = fetch) {
	const base = String(env?.BYOK_BRIDGE_URL ?? "").trim().replace(/\/+$/, "");
	const token = String(env?.BYOK_BRIDGE_FLOWS_TOKEN ?? "").trim();
	if (!base || !token) {
		throw new ByokBridgeError(503, "not_configured", "BYOK_BRIDGE_URL and BYOK_BRIDGE_FLOWS_TOKEN must be set in Directus");
	}
	let response;
	try {
		response = await fetchImpl(`${base}${path}`, {
			method: "POST",
			headers: {
				"content-type": "application/json",
				authorization: `Bearer ${token}`,
				"x-byok-on-behalf-of": user,
			},
			body: JSON.stringify(body),
			signal: AbortSignal.timeout(TIMEOUT_MS),
		});
	} catch (error) {
		throw new ByokBridgeError(503, "sidecar_unreachable", `the sidecar could not be reached (${error?.name ?? "error"})`);
	}
	const text = await response.text();
	let parsed = null;
	try {
		parsed = text ? JSON.parse(text) : null;
	} catch {
		parsed = null;
	}
	if (!response.ok) {
		const error = parsed?.error ?? {};
		throw new ByokBridgeError(response.status, error.code ?? "error", error.message ?? `HTTP ${response.status}`);
	}
	return { status: response.status, headers: response.headers, body: parsed };
}

/** Options as Directus stores them: `messages` is JSON text or already parsed; a plain prompt becomes one message. */
export function requestBody(options) {
	const api = options?.api === "messages" ? "messages" : "chat.completions";
	let messages = options?.messages;
	if (typeof messages === "string" && messages.trim() !== "") messages = JSON.parse(messages);
	if (!Array.isArray(messages) || messages.length === 0) {
		messages = [{ role: "user", content: String(options?.prompt ?? "") }];
	}
	const maxTokens = Number(options?.max_tokens) > 0 ? Math.floor(Number(options.max_tokens)) : 1024;
	const body = { model: String(options?.model ?? ""), messages, max_tokens: maxTokens };
	return { api, path: api === "messages" ? "/v1/messages" : "/v1/chat/completions", body };
}

/** The job an operation in the background queues: the answer goes to `{collection, item, field}` when it is done. */
export function jobBody(options, api, body, env) {
	const collection = String(options?.result_collection ?? "").trim();
	const item = String(options?.result_item ?? "").trim();
	const field = String(options?.result_field ?? "").trim();
	if (!collection || !item || !field) {
		throw new ByokBridgeError(400, "invalid_request", "in the background, set where the answer goes: collection, item and field");
	}
	if (!resultCollections(env).has(collection)) {
		throw new ByokBridgeError(400, "invalid_request", `answers may not be written to ${collection}: add it to BYOK_BRIDGE_FLOW_RESULT_COLLECTIONS in Directus`);
	}
	return { api, request: body, notify_on_failure: true, metadata: { directus_flow: { collection, item, field } } };
}

export const llmOperation = {
	id: "byok-bridge-llm",
	/**
	 * Resolves `{text, source, usage_id, response}` for the next operation (`{{$last.text}}`); in the background,
	 * `{job_id, status}` at once, the answer written to the item later.
	 */
	handler: async (options, { accountability, env }) => {
		const user = userFor(options, accountability);
		const { api, path, body } = requestBody(options);
		if (!body.model) throw new ByokBridgeError(400, "invalid_request", "set the operation's Model");
		if (options?.background === true || options?.background === "true") {
			const { body: job } = await callSidecar(env, "/v1/jobs", user, jobBody(options, api, body, env));
			return { job_id: job.id, status: job.status };
		}
		const { headers, body: answer } = await callSidecar(env, path, user, body);
		return {
			text: answerText(api, answer),
			source: headers.get("x-byok-source"),
			usage_id: headers.get("x-byok-usage-id"),
			response: answer,
		};
	},
};

export const routeOperation = {
	id: "byok-bridge-route",
	/** Resolves the sidecar's decision: `{source, provider, mode, ...}`. */
	handler: async (options, { accountability, env }) => {
		const user = userFor(options, accountability);
		// Any declared provider's id (the sidecar refuses ids it does not know); a malformed one asks for OpenAI.
		const provider = /^[a-z][a-z0-9_-]{0,31}$/.test(options?.provider ?? "") ? options.provider : "openai";
		return (await callSidecar(env, "/v1/route", user, { provider })).body;
	},
};
