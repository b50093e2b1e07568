// The bundle's server side: /byok-bridge-ops/overview and /byok-bridge-ops/preflight/notify, for admins only.
import { notifyPreflight, overview } from "./overview.js";

const endpoint = {
	id: "byok-bridge-ops",
	handler: (router, { env }) => {
		const adminsOnly = (req, res, next) =>
			req.accountability?.admin === true
				? next()
				: res.status(403).json({ errors: [{ message: "byok-bridge: admins only", extensions: { code: "FORBIDDEN" } }] });
		router.get("/overview", adminsOnly, async (_req, res) => res.json(await overview(env)));
		router.post("/preflight/notify", adminsOnly, async (_req, res) => res.json(await notifyPreflight(env)));
	},
};

export default { hooks: [], endpoints: [{ name: "byok-bridge-ops", config: endpoint }], operations: [] };
