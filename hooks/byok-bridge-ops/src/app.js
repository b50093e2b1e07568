// The bundle's Data Studio side: an Insights panel, written with Vue render functions (no template compiler,
// no build step; `vue` and `@directus/extensions-sdk` are the Data Studio's own, shared with extensions).
import { defineComponent, h, onMounted, onUnmounted, ref } from "vue";
import { useApi } from "@directus/extensions-sdk";

const REFRESH_MS = 15_000;
const muted = { color: "var(--theme--foreground-subdued)" };
const section = { marginBottom: "14px" };
const heading = { fontWeight: "600", marginBottom: "4px" };
const onOff = (value) => (value ? "on" : "off");

function row(label, value, testid) {
	return h("div", { style: { display: "flex", justifyContent: "space-between", gap: "12px" } }, [
		h("span", { style: muted }, label),
		h("span", { "data-testid": testid }, String(value ?? "–")),
	]);
}

function dollars(cents) {
	return `$${(Number(cents) / 100).toFixed(2)}`;
}

// A bar of `percent` (red from 80, where the admins are told).
function bar(percent) {
	const share = Math.max(0, Math.min(100, Number(percent) || 0));
	const color = share >= 80 ? "var(--theme--danger)" : "var(--theme--primary)";
	return h("div", { role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": share,
		"aria-label": "the platform's daily budget spent", style: { height: "8px", background: "var(--theme--background-accent)", borderRadius: "4px", margin: "4px 0" } },
		[h("div", { style: { width: `${share}%`, height: "100%", background: color, borderRadius: "4px" } })]);
}

const OWN_KEYS = "#2563EB";
const CREDITS = "#C2410C";

// A bar per day (every day of the range, so one day of data is still a bar), own keys under credits; by cost,
// or by requests when nothing cost anything.
function dailyBars(days) {
	const byCost = days.some((d) => Number(d.own_keys.cost_cents) + Number(d.credits.cost_cents) > 0);
	const value = (part) => Number(byCost ? part.cost_cents : part.requests) || 0;
	const max = Math.max(0, ...days.map((d) => value(d.own_keys) + value(d.credits)));
	const label = (d) =>
		`${d.day}: own keys ${dollars(d.own_keys.cost_cents)} (${d.own_keys.requests} requests), credits ${dollars(d.credits.cost_cents)} (${d.credits.requests} requests)`;
	const segment = (amount, color) =>
		h("div", { style: { height: `${max > 0 ? (amount / max) * 100 : 0}%`, minHeight: amount > 0 ? "2px" : "0", background: color } });
	return h(
		"div",
		{ role: "list", "aria-label": `${byCost ? "Cost" : "Requests"} per day`, "data-testid": "ops-daily",
			style: { display: "flex", alignItems: "flex-end", gap: "2px", height: "80px", borderBottom: "1px solid var(--theme--border-color-subdued)" } },
		days.map((d) =>
			h("div", { role: "listitem", title: label(d), "aria-label": label(d), "data-testid": "ops-day",
				style: { flex: "1", height: "100%", display: "flex", flexDirection: "column-reverse" } },
				[segment(value(d.own_keys), OWN_KEYS), segment(value(d.credits), CREDITS)]),
		),
	);
}

function failed(part) {
	return h("div", { style: { color: "var(--theme--danger)" }, role: "alert" }, part.error);
}

const OpsPanel = defineComponent({
	name: "ByokBridgeOpsPanel",
	props: { showHeader: { type: Boolean, default: false } },
	setup() {
		const api = useApi();
		const view = ref(null);
		const error = ref(null);
		const notice = ref(null);
		const busy = ref(false);
		async function load() {
			try {
				view.value = (await api.get("/byok-bridge-ops/overview")).data;
				error.value = null;
			} catch (e) {
				error.value = e?.response?.data?.errors?.[0]?.message ?? String(e);
			}
		}
		async function notify() {
			busy.value = true;
			try {
				const answer = (await api.post("/byok-bridge-ops/preflight/notify")).data;
				notice.value = answer.ok
					? `Notified ${answer.body.notified}; told already ${answer.body.already_notified}; failed ${answer.body.failed}.`
					: answer.error;
				await load();
			} finally {
				busy.value = false;
			}
		}
		let timer;
		onMounted(() => {
			load();
			timer = setInterval(load, REFRESH_MS);
		});
		onUnmounted(() => clearInterval(timer));

		return () => {
			const body = [];
			if (error.value) body.push(h("div", { role: "alert" }, error.value));
			const v = view.value;
			if (!v) return h("div", { style: { padding: "12px" } }, error.value ?? "Asking the sidecar…");

			const flags = v.flags;
			body.push(
				h("div", { style: section }, [
					h("div", { style: heading }, "Flags in force"),
					...(flags.ok
						? [
								row("byok_enabled", onOff(flags.body.flags.byok_enabled), "ops-byok-enabled"),
								row("byok_uses_internal_credits", onOff(flags.body.flags.byok_uses_internal_credits), "ops-credits-first"),
								row("byok_only_mode", onOff(flags.body.flags.byok_only_mode), "ops-byok-only"),
								row("routing mode", flags.body.mode, "ops-mode"),
								row("loaded", new Date(flags.body.loaded_at).toLocaleString() + (flags.body.stale ? " (stale)" : ""), "ops-loaded"),
								row("key vault", flags.body.vault_configured ? "configured" : "not configured", "ops-vault"),
							]
						: [failed(flags)]),
				]),
			);
			const ready = v.ready;
			body.push(
				h("div", { style: section }, [
					h("div", { style: heading }, "Sidecar"),
					...(ready.ok
						? [
								row("status", ready.body.status, "ops-status"),
								row("usage records waiting for Directus", ready.body.usage_records_waiting, "ops-waiting"),
								row("credit holds open", ready.body.open_credit_holds, "ops-holds"),
								row("Redis", ready.body.redis, "ops-redis"),
							]
						: [failed(ready)]),
				]),
			);
			const status = v.status;
			body.push(
				h("div", { style: section }, [
					h("div", { style: heading }, "Providers"),
					...(status.ok
						? status.body.providers.map((p) => row(p.name, p.status, `ops-provider-${p.provider}`))
						: [failed(status)]),
				]),
			);
			const jobs = v.jobs;
			body.push(
				h("div", { style: section }, [
					h("div", { style: heading }, "Durable jobs"),
					...(jobs?.ok
						? ["queued", "running", "paused", "failed", "succeeded"].map((s) => row(s, jobs.body.counts[s] ?? 0, `ops-jobs-${s}`))
						: [failed(jobs ?? { error: "not asked" })]),
				]),
			);
			const spend = v.spend;
			const budgets = spend?.ok
				? [
						...(spend.body.platform ? [["all providers", "ops-platform-spend", spend.body.platform]] : []),
						...(spend.body.platform_providers ?? []).map((b) => [b.provider, `ops-platform-spend-${b.provider}`, b]),
					]
				: [];
			body.push(
				h("div", { style: section }, [
					h("div", { style: heading }, "Platform's daily budget (UTC)"),
					...(!spend?.ok
						? [failed(spend ?? { error: "not asked" })]
						: budgets.length > 0
							? budgets.flatMap(([name, testid, budget]) => [
									row(`spent today, ${name}`, `${dollars(budget.spent_cents)} of ${dollars(budget.cap_cents)} (${budget.percent}%)`, testid),
									bar(budget.percent),
								])
							: [h("div", { style: muted, "data-testid": "ops-platform-spend" }, "No daily budget (PLATFORM_DAILY_BUDGET_CENTS is not set).")]),
				]),
			);
			const daily = spend?.ok && Array.isArray(spend.body.daily) ? spend.body.daily : [];
			const top = spend?.ok && Array.isArray(spend.body.top_users) ? spend.body.top_users : [];
			if (spend?.ok) {
				body.push(
					h("div", { style: section }, [
						h("div", { style: heading }, `Spending, last ${spend.body.days} days (UTC)`),
						dailyBars(daily),
						h("div", { style: { ...muted, fontSize: "12px" } }, [
							h("span", { style: { color: OWN_KEYS } }, "■"), " users' own keys  ",
							h("span", { style: { color: CREDITS } }, "■"), " platform credits",
						]),
					]),
					h("div", { style: section }, [
						h("div", { style: heading }, "Top users by credit cost"),
						top.length === 0
							? h("div", { style: muted, "data-testid": "ops-top-users" }, "No calls on credits in this time.")
							: h(
									"ol",
									{ style: { margin: "4px 0", paddingLeft: "22px" }, "data-testid": "ops-top-users" },
									top.map((u) => h("li", { "data-testid": "ops-top-user" }, `${u.email ?? u.user}: ${dollars(u.cost_cents)} (${u.requests} requests)`)),
								),
					]),
				);
			}
			const pre = v.preflight;
			const missing = pre.ok ? pre.body.users_without_usable_key : [];
			body.push(
				h("div", { style: section }, [
					h("div", { style: heading }, "BYOK-only pre-flight"),
					...(pre.ok
						? [
								h(
									"div",
									{ "data-testid": "ops-preflight-count" },
									`${missing.length} of ${pre.body.entitled_users} premium and lifetime users have no usable key.`,
								),
								h(
									"ul",
									{ style: { margin: "4px 0", paddingLeft: "18px" } },
									missing.slice(0, 8).map((u) => h("li", {}, `${u.email ?? u.id} (${u.subscription_tier})`)),
								),
								missing.length > 8 ? h("div", { style: muted }, `… and ${missing.length - 8} more`) : null,
								h(
									"button",
									{
										type: "button",
										disabled: busy.value || missing.length === 0,
										onClick: notify,
										"data-testid": "ops-notify",
										style: {
											marginTop: "6px",
											padding: "6px 12px",
											borderRadius: "6px",
											border: "none",
											background: "var(--theme--primary)",
											color: "var(--theme--foreground-inverted, #fff)",
											cursor: "pointer",
										},
									},
									"Notify them (once)",
								),
								notice.value ? h("div", { role: "status", style: { marginTop: "6px" } }, notice.value) : null,
							]
						: [failed(pre)]),
				]),
			);
			return h("div", { style: { padding: "12px", overflow: "auto", height: "100%", fontSize: "14px" } }, body);
		};
	},
});

// A bundle's app side exports one named list per entry type (Directus imports `panels` from it).
export const panels = [
	{
		id: "byok-bridge-ops",
		name: "byok-bridge: operations",
		icon: "smart_toy",
		description: "The sidecar's view: flags in force, vault, providers, records waiting, today's spending against the platform's budget; and the BYOK-only pre-flight.",
		component: OpsPanel,
		options: [],
		minWidth: 16,
		minHeight: 14,
	},
];
