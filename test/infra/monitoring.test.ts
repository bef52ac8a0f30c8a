/**
 * monitoring/: Prometheus's scrape config and alert rules pass promtool
 * (check config, check rules, and the rules' own unit tests, in which every
 * alert fires on a series that should fire it beside one that should not);
 * the dashboards' PromQL parses; Grafana's provisioning points at
 * datasources and dashboards that exist; promtail never makes a request or
 * trace id a label, and ships to the Loki the config describes.
 *
 * That the dashboards' and rules' metric names exist on a running Mint is
 * checked by test/http/metrics.http.test.ts.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parse } from "yaml";
import { describeWithInfra } from "../helpers/infra";

const MONITORING = path.resolve(__dirname, "../../monitoring");
const PROMTOOL = "/usr/bin/promtool";
const PROMETHEUS_DIR = path.join(MONITORING, "prometheus");

const readYaml = (...parts: string[]) => parse(fs.readFileSync(path.join(MONITORING, ...parts), "utf8"));
const readJson = (...parts: string[]) => JSON.parse(fs.readFileSync(path.join(MONITORING, ...parts), "utf8"));

/** Runs promtool in monitoring/prometheus; its exit code and everything it printed. */
function promtool(...args: string[]): { status: number | null; output: string } {
	const run = spawnSync(PROMTOOL, args, { cwd: PROMETHEUS_DIR, encoding: "utf8", timeout: 20_000 });
	if (run.error) throw run.error;
	return { status: run.status, output: `${run.stdout}${run.stderr}` };
}

const alerts = readYaml("prometheus", "alerts.yml");
const alertTests = readYaml("prometheus", "alerts.test.yml");
const rules: { alert?: string; record?: string; expr: string }[] = alerts.groups.flatMap((g: { rules: unknown[] }) => g.rules);
const alertNames = rules.flatMap(r => (r.alert ? [r.alert] : []));
const dashboards = fs.readdirSync(path.join(MONITORING, "grafana", "dashboards")).map(file => ({ file, json: readJson("grafana", "dashboards", file) }));

interface Target {
	expr: string;
	datasource?: { uid?: string };
}
interface Panel {
	title: string;
	type: string;
	datasource?: { uid?: string };
	targets?: Target[];
	panels?: Panel[];
}
const panelsOf = (dashboard: { panels: Panel[] }): Panel[] => dashboard.panels.flatMap(p => [p, ...(p.panels ?? [])]);

/** Grafana's variables as plain values, so an expression is PromQL promtool can read. */
const asPromql = (expr: string) =>
	expr.replaceAll("$__rate_interval", "1m").replaceAll("$__range", "1h").replaceAll("$namespace", "mint").replaceAll("$node", ".*");

describeWithInfra("monitoring/ configuration", { name: `promtool at ${PROMTOOL}`, available: fs.existsSync(PROMTOOL) }, () => {
	it("prometheus.yml passes promtool check config and loads alerts.yml", () => {
		const { status, output } = promtool("check", "config", "prometheus.yml");
		expect(output).toContain("SUCCESS: 1 rule files found");
		expect(output).toContain("SUCCESS: prometheus.yml is valid prometheus config file syntax");
		expect(status).toBe(0);
	});

	it("scrapes every Mint node of docker-compose by service name on METRICS_PORT 3031", () => {
		const config = readYaml("prometheus", "prometheus.yml");
		const mint = config.scrape_configs.find((job: { job_name: string }) => job.job_name === "mint");
		const targets = mint.static_configs.flatMap((group: { targets: string[]; labels: { role: string } }) =>
			group.targets.map(t => `${group.labels.role} ${t}`),
		);
		expect(targets).toEqual(["gateway gateway-1:3031", "gateway gateway-2:3031", "core core:3031", "notifications notifications:3031"]);
		expect(mint.metrics_path).toBe("/metrics");
		expect(config.rule_files).toEqual(["alerts.yml"]);
	});

	it("alerts.yml passes promtool check rules", () => {
		const { status, output } = promtool("check", "rules", "alerts.yml");
		expect(output).toContain(`SUCCESS: ${rules.length} rules found`);
		expect(status).toBe(0);
	});

	it("the alerts' unit tests pass (promtool test rules)", () => {
		const { status, output } = promtool("test", "rules", "alerts.test.yml");
		expect(output).not.toContain("FAILED");
		expect(output).toContain("SUCCESS");
		expect(status).toBe(0);
	});

	it("has the alerts operators need", () => {
		expect(alertNames.sort()).toEqual(
			[
				"MintCircuitBreakerOpen",
				"MintDeadLettersGrowing",
				"MintHighErrorRate",
				"MintHighLatency",
				"MintLowCacheHitRate",
				"MintNodeDown",
				"MintOutboxBacklog",
				"MintTransactionsStuck",
				"MintUnexpectedErrors",
			].sort(),
		);
		for (const rule of rules.filter(r => r.alert)) {
			expect([rule.alert, (rule as { labels?: { severity?: string } }).labels?.severity]).toEqual([rule.alert, expect.stringMatching(/^(critical|warning)$/)]);
		}
	});

	it("tests every alert firing, beside an input series that must not fire it", () => {
		type Expected = { exp_labels: Record<string, string> };
		type Case = { alertname: string; exp_alerts: Expected[] };
		type Group = { input_series: { series: string }[]; alert_rule_test?: Case[] };
		const labelsOf = (series: string): Record<string, string> =>
			Object.fromEntries([...series.matchAll(/(\w+)="([^"]*)"/g)].map(([, name, value]) => [name, value]));
		const proven = new Set<string>();
		for (const group of alertTests.tests as Group[]) {
			for (const test of group.alert_rule_test ?? []) {
				if (test.exp_alerts.length === 0) continue;
				// A series whose labels (those the expected alerts name) match none of the expected alerts: the quiet one.
				const quiet = group.input_series.some(({ series }) => {
					const labels = labelsOf(series);
					return test.exp_alerts.every(({ exp_labels }) => Object.entries(exp_labels).some(([name, value]) => name in labels && labels[name] !== value));
				});
				if (quiet) proven.add(test.alertname);
			}
		}
		expect(alertNames.filter(name => !proven.has(name))).toEqual([]);
	});

	it("every dashboard query is PromQL that promtool parses, and uses only recording rules that exist", () => {
		const records = new Set(rules.flatMap(r => (r.record ? [r.record] : [])));
		const exprs = dashboards.flatMap(({ json }) =>
			panelsOf(json).flatMap(panel => (panel.targets ?? []).filter(t => (t.datasource ?? panel.datasource)?.uid === "prometheus").map(t => t.expr)),
		);
		expect(exprs.length).toBeGreaterThan(30);
		for (const expr of exprs) {
			for (const [name] of expr.matchAll(/\bmint:[\w:]+/g)) expect([expr, records.has(name)]).toEqual([expr, true]);
		}
		// One recording rule per query, checked by promtool like alerts.yml.
		const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mint-dashboards-"));
		try {
			const file = path.join(dir, "dashboards.rules.yml");
			const doc = { groups: [{ name: "dashboards", rules: exprs.map((expr, i) => ({ record: `dashboard:query_${i}`, expr: asPromql(expr) })) }] };
			fs.writeFileSync(file, JSON.stringify(doc));
			const { status, output } = promtool("check", "rules", file);
			expect(output).toContain(`SUCCESS: ${exprs.length} rules found`);
			expect(status).toBe(0);
		} finally {
			fs.rmSync(dir, { recursive: true, force: true });
		}
	});
});

describe("Grafana provisioning", () => {
	const datasources: { uid: string; type: string; url: string; jsonData?: any }[] = readYaml(
		"grafana",
		"provisioning",
		"datasources",
		"datasources.yml",
	).datasources;
	const uids = new Set(datasources.map(d => d.uid));

	it("provisions Prometheus (the default), Loki and Jaeger, linked both ways by trace id", () => {
		expect(datasources.map(d => [d.uid, d.type, d.url])).toEqual([
			["prometheus", "prometheus", "http://prometheus:9090"],
			["loki", "loki", "http://loki:3100"],
			["jaeger", "jaeger", "http://jaeger:16686"],
		]);
		expect(datasources.filter(d => (d as { isDefault?: boolean }).isDefault).map(d => d.uid)).toEqual(["prometheus"]);
		const loki = datasources.find(d => d.uid === "loki");
		const [derived] = loki?.jsonData.derivedFields ?? [];
		expect(derived).toMatchObject({ datasourceUid: "jaeger", url: "$${__value.raw}" });
		// The derived field finds a Mint log line's trace id (pino JSON, lib/request-context.ts).
		const line = JSON.stringify({ level: 30, msg: "user signed up", requestId: "r1", traceId: "4bf92f3577b34da6a3ce929d0e0e4736" });
		expect(new RegExp(derived.matcherRegex).exec(line)?.[1]).toBe("4bf92f3577b34da6a3ce929d0e0e4736");
		expect(datasources.find(d => d.uid === "jaeger")?.jsonData.tracesToLogsV2.datasourceUid).toBe("loki");
	});

	it("loads the dashboards folder, where Business and Technical are, each panel on a provisioned datasource", () => {
		const [provider] = readYaml("grafana", "provisioning", "dashboards", "dashboards.yml").providers;
		expect(provider).toMatchObject({ type: "file", folder: "Mint", options: { path: "/var/lib/grafana/dashboards/mint" } });
		expect(dashboards.map(d => [d.file, d.json.uid, d.json.title])).toEqual([
			["business.json", "mint-business", "Mint / Business"],
			["technical.json", "mint-technical", "Mint / Technical"],
		]);
		for (const { json } of dashboards) {
			const panels = panelsOf(json).filter(p => p.type !== "row");
			expect(new Set(panelsOf(json).map(p => (p as { id?: number }).id)).size).toBe(panelsOf(json).length);
			for (const panel of panels) {
				expect([panel.title, uids.has(String(panel.datasource?.uid))]).toEqual([panel.title, true]);
				expect([panel.title, (panel.targets ?? []).length > 0]).toEqual([panel.title, true]);
				for (const target of panel.targets ?? []) expect([panel.title, target.expr.trim().length > 0]).toEqual([panel.title, true]);
			}
		}
	});

	it("the Business dashboard shows signups, logins by result, transactions by type and status, money moved and emails", () => {
		const business = dashboards.find(d => d.file === "business.json")?.json;
		const exprs = panelsOf(business).flatMap(p => (p.targets ?? []).map(t => t.expr));
		for (const metric of ["mint_signups_total", "mint_logins_total", "mint_transactions_total", "mint_money_moved_minor_total", "mint_emails_total"]) {
			expect([metric, exprs.some(e => e.includes(metric))]).toEqual([metric, true]);
		}
		expect(exprs).toContain('sum by (result) (rate(mint_logins_total{namespace="$namespace"}[$__rate_interval])) * 60');
		expect(exprs).toContain('sum by (type, status) (rate(mint_transactions_total{namespace="$namespace"}[$__rate_interval])) * 60');
	});

	it("the Technical dashboard shows requests, latency and errors per action and node, cache hit rate, circuit breakers and event-loop lag", () => {
		const technical = dashboards.find(d => d.file === "technical.json")?.json;
		const exprs = panelsOf(technical).flatMap(p => (p.targets ?? []).map(t => t.expr));
		const has = (pattern: RegExp) => [String(pattern), exprs.some(e => pattern.test(e))];
		for (const pattern of [
			/by \(action, node_id\) \(rate\(moleculer_request_total/,
			/by \(le, action\) \(rate\(moleculer_request_time_bucket/,
			/by \(le, node_id\) \(rate\(moleculer_request_time_bucket/,
			/by \(action, node_id, error_type\) \(rate\(moleculer_request_error_total/,
			/mint_cache_lookups_total\{[^}]*result=~"hit\|coalesced"/,
			/moleculer_circuit_breaker_opened_active/,
			/mint_event_loop_lag_p99_seconds/,
		]) {
			expect(has(pattern)).toEqual([String(pattern), true]);
		}
		expect(technical.templating.list.map((v: { name: string }) => v.name)).toEqual(["namespace", "node"]);
	});
});

describe("Loki and promtail", () => {
	const loki = readYaml("loki", "loki.yml");
	const promtail = readYaml("promtail", "promtail.yml");
	const [job] = promtail.scrape_configs;
	const mintStages = job.pipeline_stages.find((s: { match?: unknown }) => s.match).match;

	it("promtail reads the containers from Docker and ships to the Loki of loki.yml", () => {
		expect(job.docker_sd_configs[0].host).toBe("unix:///var/run/docker.sock");
		expect(promtail.clients).toEqual([{ url: `http://loki:${loki.server.http_listen_port}/loki/api/v1/push` }]);
		expect(loki.auth_enabled).toBe(false);
		expect(loki.schema_config.configs.map((c: { store: string; schema: string }) => [c.store, c.schema])).toEqual([["tsdb", "v13"]]);
	});

	it("labels a Mint line with its level, node and service, parsed from pino's JSON, and the Mint nodes with app=mint", () => {
		expect(mintStages.selector).toBe('{app="mint"}');
		const json = mintStages.stages.find((s: { json?: unknown }) => s.json).json;
		expect(json.expressions).toEqual({ level: "level", node_id: "nodeID", service: "svc" });
		const labels = mintStages.stages.find((s: { labels?: unknown }) => s.labels).labels;
		expect(Object.keys(labels).sort()).toEqual(["level", "node_id", "service"]);
		const mintApp = job.relabel_configs.find((r: { target_label?: string }) => r.target_label === "app");
		const matches = (service: string) => new RegExp(`^(?:${mintApp.regex})$`).test(service);
		expect(["gateway-1", "gateway-2", "core", "notifications", "gateway"].every(matches)).toBe(true);
		expect(["rabbitmq", "mongo", "redis", "loki", "gateway-ui"].some(matches)).toBe(false);
	});

	it("never makes a request id, trace id or span id a label (one stream per request)", () => {
		const everyLabel = [
			...job.relabel_configs.map((r: { target_label?: string }) => r.target_label ?? ""),
			...job.pipeline_stages.flatMap(function stageLabels(stage: any): string[] {
				return [...Object.keys(stage.labels ?? {}), ...(stage.match?.stages ?? []).flatMap(stageLabels)];
			}),
		];
		expect(everyLabel.length).toBeGreaterThan(5);
		expect(everyLabel.filter(name => /request|trace|span/i.test(name))).toEqual([]);
		// Nor from a value that holds one.
		const sources = Object.values(mintStages.stages.find((s: { json?: unknown }) => s.json).json.expressions) as string[];
		expect(sources.filter(name => /request|trace|span/i.test(name))).toEqual([]);
	});

	it("turns pino's numeric levels into their names", () => {
		const template: string = mintStages.stages.find((s: { template?: unknown }) => s.template).template.template;
		const levels = Object.fromEntries([...template.matchAll(/eq \.Value "(\d+)" \}\}(\w+)/g)].map(([, n, name]) => [n, name]));
		expect(levels).toEqual({ "10": "trace", "20": "debug", "30": "info", "40": "warn", "50": "error", "60": "fatal" });
	});
});
