// Usage records as the sidecar sends them to Directus (its fields, UUIDv7 request ids), for the scripts that load
// a Directus with them: measure-directus-ingest.mjs (how fast it stores them) and directus-usage-load.mjs (a
// steady stream of them beside the benchmark). Node >= 20, no dependencies.

import { uuidV7 } from "../hooks/byok-bridge/src/usage-ingest.js";

const MODELS = [
	["openai", "gpt-4o-mini", 15, 60],
	["openai", "gpt-4o", 250, 1000],
	["anthropic", "claude-3-5-haiku", 80, 400],
];

/**
 * A function that returns the next record for `collection` (api_key_usage or credit_transactions), for the users
 * in `userIds` in turn, with varied models and token counts.
 */
export function recordMaker(collection, userIds) {
	let seq = 0;
	return () => {
		const [provider, model, inPrice, outPrice] = MODELS[seq % MODELS.length];
		const prompt = 5 + (seq % 2000);
		const completion = 1 + ((seq * 7) % 800);
		// Cents with 9 decimals, as the sidecar sends them (prices in cents per million tokens here).
		const cost = ((prompt * inPrice + completion * outPrice) / 1e6).toFixed(9);
		const user = userIds[seq % userIds.length];
		seq++;
		const common = {
			user,
			provider,
			model,
			prompt_tokens: prompt,
			completion_tokens: completion,
			total_tokens: prompt + completion,
			// UUIDv7, as the sidecar's request ids are: Directus's request_id index grows at its end.
			request_id: uuidV7(),
			occurred_at: new Date().toISOString(),
		};
		if (collection === "credit_transactions") {
			return {
				...common,
				transaction_type: "deduction",
				service_type: `${provider}.${provider === "openai" ? "chat_completions" : "messages"}`,
				cost_cents: cost,
				description: `${provider} ${model}`,
			};
		}
		return { ...common, estimated_cost_cents: cost };
	};
}
