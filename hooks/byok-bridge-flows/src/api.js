// The bundle's server side, in the shape Directus 12 loads: each operation by name, with its handler.
import { llmOperation, routeOperation } from "./call.js";

export default {
	hooks: [],
	endpoints: [],
	operations: [
		{ name: "byok-bridge-llm", config: llmOperation },
		{ name: "byok-bridge-route", config: routeOperation },
	],
};
