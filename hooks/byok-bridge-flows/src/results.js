// byok-bridge for Directus Flows: what a Flow's answer is and where it may be written, shared by the operation
// (call.js) and the endpoint that writes a background job's answer (jobs.js).

/** A collection or field name as Directus allows it. */
const NAME = /^[a-z0-9_]{1,64}$/i;

/** The text of an answer of either API. */
export function answerText(api, answer) {
	if (api === "messages") return (answer?.content ?? []).filter((b) => b?.type === "text").map((b) => b.text).join("");
	return answer?.choices?.[0]?.message?.content ?? "";
}

/**
 * The collections answers may be written to (`BYOK_BRIDGE_FLOW_RESULT_COLLECTIONS`, comma-separated): the
 * endpoint writes with full rights, so the operator names them; none by default.
 */
export function resultCollections(env) {
	return new Set(
		String(env?.BYOK_BRIDGE_FLOW_RESULT_COLLECTIONS ?? "")
			.split(",")
			.map((c) => c.trim())
			.filter((c) => NAME.test(c) && !c.startsWith("directus_")),
	);
}

/** Where the operation asked the answer to go: `{collection, item, field}`, in a collection `allowed` names. */
export function resultTarget(metadata, allowed) {
	const target = metadata?.directus_flow;
	const collection = String(target?.collection ?? "");
	const field = String(target?.field ?? "");
	const item = target?.item;
	if (!allowed.has(collection) || !NAME.test(field)) return null;
	if (!(typeof item === "number" || (typeof item === "string" && item.trim() !== ""))) return null;
	return { collection, item, field };
}
