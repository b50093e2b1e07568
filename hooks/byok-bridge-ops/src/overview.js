// What the admin endpoint asks the sidecar, with the operator token only Directus's server holds
// (BYOK_BRIDGE_OPERATOR_TOKEN, the sidecar's OPERATOR_TOKEN): it never reaches a browser.

const TIMEOUT_MS = 10_000;

async function ask(env, method, path, fetchImpl) {
	const base = String(env?.BYOK_BRIDGE_URL ?? "").trim().replace(/\/+$/, "");
	const token = String(env?.BYOK_BRIDGE_OPERATOR_TOKEN ?? "").trim();
	if (!base || !token) return { ok: false, error: "BYOK_BRIDGE_URL and BYOK_BRIDGE_OPERATOR_TOKEN must be set in Directus" };
	try {
		const response = await fetchImpl(`${base}${path}`, {
			method,
			headers: { authorization: `Bearer ${token}` },
			signal: AbortSignal.timeout(TIMEOUT_MS),
		});
		const body = await response.json().catch(() => null);
		return response.ok ? { ok: true, body } : { ok: false, error: body?.error?.message ?? `HTTP ${response.status}` };
	} catch (error) {
		return { ok: false, error: `the sidecar could not be reached (${error?.name ?? "error"})` };
	}
}

/** The sidecar's view in one answer: flags, readiness, provider status, durable jobs, today's spending on the
 * platform's keys, and the BYOK-only pre-flight. */
export async function overview(env, fetchImpl = fetch) {
	const [flags, ready, status, jobs, spend, preflight] = await Promise.all([
		ask(env, "GET", "/v1/flags", fetchImpl),
		ask(env, "GET", "/readyz", fetchImpl),
		ask(env, "GET", "/v1/status", fetchImpl),
		ask(env, "GET", "/v1/admin/jobs", fetchImpl),
		ask(env, "GET", "/v1/admin/spend", fetchImpl),
		ask(env, "GET", "/v1/admin/preflight", fetchImpl),
	]);
	return { flags, ready, status, jobs, spend, preflight };
}

export const notifyPreflight = (env, fetchImpl = fetch) => ask(env, "POST", "/v1/admin/preflight/notify", fetchImpl);
