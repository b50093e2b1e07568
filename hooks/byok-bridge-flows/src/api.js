// The bundle's server side, in the shape Directus 12 loads: each operation by name, with its handler, and the
// endpoint background jobs report to.
import { llmOperation, routeOperation } from "./call.js";
import { jobResultEndpoint } from "./jobs.js";

export default {
	hooks: [],
	endpoints: [{ name: "byok-bridge-flows", config: jobResultEndpoint }],
	operations: [
		{ name: "byok-bridge-llm", config: llmOperation },
		{ name: "byok-bridge-route", config: routeOperation },
	],
};
