// The bundle's Data Studio side: how the two operations look in the Flow editor. Plain objects: no Vue, no build.
const userOption = {
	field: "user",
	name: "User",
	type: "string",
	meta: {
		width: "full",
		interface: "input",
		note: "Who pays (their own key or their credits): a user id or a template. Empty: the user the Flow runs as. A template such as {{$trigger.payload.user}} charges whoever the payload names, so use it only when the caller cannot choose that value.",
	},
};

const llm = {
	id: "byok-bridge-llm",
	name: "byok-bridge: LLM call",
	icon: "smart_toy",
	description: "Call OpenAI or Anthropic through byok-bridge for a user: their own key or their credits, as the platform's flags say.",
	overview: ({ api, model }) => [
		{ label: "API", text: api === "messages" ? "Anthropic Messages" : "OpenAI Chat Completions" },
		{ label: "Model", text: model ?? "" },
	],
	options: [
		{
			field: "api",
			name: "API",
			type: "string",
			schema: { default_value: "chat.completions" },
			meta: {
				width: "half",
				interface: "select-dropdown",
				options: { choices: [{ text: "OpenAI Chat Completions", value: "chat.completions" }, { text: "Anthropic Messages", value: "messages" }] },
			},
		},
		{ field: "model", name: "Model", type: "string", meta: { width: "half", interface: "input", required: true } },
		{ field: "prompt", name: "Prompt", type: "text", meta: { width: "full", interface: "input-multiline", note: "Templates allowed, e.g. Summarize: {{$trigger.payload.text}}" } },
		{ field: "max_tokens", name: "Longest answer (tokens)", type: "integer", schema: { default_value: 1024 }, meta: { width: "half", interface: "input" } },
		userOption,
		{
			field: "background",
			name: "Run in the background",
			type: "boolean",
			schema: { default_value: false },
			meta: {
				width: "full",
				interface: "boolean",
				note: "Queue a durable job instead of waiting: rate limits and outages are retried for hours, and the answer is written to the item below when it is done. The next operation gets {job_id, status}.",
			},
		},
		{ field: "result_collection", name: "Write the answer to: collection", type: "string", meta: { width: "third", interface: "input", note: "e.g. byok_demo_notes" } },
		{ field: "result_item", name: "item", type: "string", meta: { width: "third", interface: "input", note: "e.g. {{$trigger.key}}" } },
		{ field: "result_field", name: "field", type: "string", meta: { width: "third", interface: "input", note: "e.g. summary" } },
	],
};

// The providers byok-bridge ships (catalog/providers.json); an operator's PROVIDERS_FILE may declare more,
// typed in as "other".
const SHIPPED_PROVIDERS = [
	{ text: "OpenAI", value: "openai" },
	{ text: "Anthropic", value: "anthropic" },
	{ text: "Google Gemini", value: "gemini" },
	{ text: "Mistral AI", value: "mistral" },
	{ text: "Groq", value: "groq" },
	{ text: "DeepSeek", value: "deepseek" },
	{ text: "xAI", value: "xai" },
	{ text: "OpenRouter", value: "openrouter" },
];
const route = {
	id: "byok-bridge-route",
	name: "byok-bridge: route",
	icon: "alt_route",
	description: "Ask byok-bridge which credentials a call for this user would use (their key or credits), or why none.",
	overview: ({ provider }) => [{ label: "Provider", text: provider ?? "openai" }],
	options: [
		{
			field: "provider",
			name: "Provider",
			type: "string",
			schema: { default_value: "openai" },
			meta: { width: "half", interface: "select-dropdown", options: { choices: SHIPPED_PROVIDERS, allowOther: true } },
		},
		userOption,
	],
};

// A bundle's app side exports one named list per entry type (Directus imports `operations` from it).
export const operations = [llm, route];
