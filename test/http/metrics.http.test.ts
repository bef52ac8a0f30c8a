/**
 * A running Mint's Prometheus endpoint (METRICS_PORT):
 * - every metric the Grafana dashboards and the alert rules use is on it, with
 *   the labels they select and group on: the names are read from monitoring/,
 *   so renaming a metric or a label on either side fails here;
 * - the business counters count what people did (signups, logins by result,
 *   transactions by type and status, money moved, emails), and the gauges
 *   show what waits (a stuck transaction while its wallet step fails, a dead
 *   letter while mail cannot be written);
 * - it listens on HOST unless METRICS_HOST says otherwise, and publishes
 *   nothing that identifies the machine (addresses, host name, home
 *   directory, command line), while the process metrics are there.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { Errors, ServiceBroker } from "moleculer";
import { parse } from "yaml";
import { loadConfig } from "../../lib/config";
import { metricsOptions, type MintPrometheusReporter } from "../../lib/metrics-endpoint";
import { describeWithInfra } from "../helpers/infra";
import { login, signup, type Person, type Session } from "../helpers/http";
import { startTestMint, waitFor, type TestMint } from "../helpers/mint";
import { topUp, transfer } from "../helpers/money";
import { freePort } from "../helpers/ports";

const MONITORING = path.resolve(__dirname, "../../monitoring");
const PROMTOOL = "/usr/bin/promtool";

// ---- The endpoint's exposition, parsed ----

interface Sample {
	name: string;
	labels: Record<string, string>;
	value: number;
}

function parseExposition(text: string): Sample[] {
	return text
		.split("\n")
		.filter(line => line && !line.startsWith("#"))
		.map(line => {
			const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
			if (!match) throw new Error(`not an exposition line: ${line}`);
			const labels = Object.fromEntries([...(match[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map(([, k, v]) => [k, v]));
			return { name: match[1], labels, value: Number(match[3]) };
		});
}

/** The value of the one sample of `name` whose labels include `labels`. */
function sampleValue(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
	const found = samples.filter(s => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
	if (found.length > 1) throw new Error(`${found.length} samples of ${name} ${JSON.stringify(labels)}`);
	return found[0]?.value;
}

// ---- What monitoring/ asks of it ----

/** Labels Prometheus adds to every series it scrapes (prometheus.yml), not the endpoint. */
const TARGET_LABELS = new Set(["job", "instance", "role"]);
const PROMQL_WORDS = new Set(["by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "bool", "inf", "nan"]);

interface Query {
	where: string;
	expr: string;
}

/** Every PromQL expression of the dashboards (panels and variables) and of alerts.yml (alerts and recording rules). */
function monitoringQueries(): Query[] {
	const queries: Query[] = [];
	const dashboardsDir = path.join(MONITORING, "grafana", "dashboards");
	for (const file of fs.readdirSync(dashboardsDir)) {
		const dashboard = JSON.parse(fs.readFileSync(path.join(dashboardsDir, file), "utf8"));
		const panels = dashboard.panels.flatMap((p: any) => [p, ...(p.panels ?? [])]);
		for (const panel of panels) {
			for (const target of panel.targets ?? []) {
				if ((target.datasource ?? panel.datasource)?.uid === "prometheus") queries.push({ where: `${file}: ${panel.title}`, expr: target.expr });
			}
		}
		for (const variable of dashboard.templating.list) {
			// label_values(metric{...}, label): the metric and its label.
			const [, metric, label] = /^label_values\(([\w:]+)(?:\{[^}]*\})?,\s*(\w+)\)$/.exec(variable.query) ?? [];
			if (!metric) throw new Error(`${file}: variable ${variable.name} is not a label_values query`);
			queries.push({ where: `${file}: variable ${variable.name}`, expr: `sum by (${label}) (${metric})` });
		}
	}
	const alerts = parse(fs.readFileSync(path.join(MONITORING, "prometheus", "alerts.yml"), "utf8"));
	for (const rule of alerts.groups.flatMap((g: any) => g.rules)) queries.push({ where: `alerts.yml: ${rule.alert ?? rule.record}`, expr: rule.expr });
	return queries;
}

/** An expression without its strings, label matchers, ranges and grouping clauses: what is left names metrics and functions. */
const skeleton = (expr: string) =>
	expr
		.replace(/"(?:[^"\\]|\\.)*"/g, '""')
		.replace(/\{[^}]*\}/g, "{}")
		.replace(/\[[^\]]*\]/g, "[]")
		.replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, "");

/** Metric names (and recording rules, with a colon) an expression reads. */
export const metricNamesOf = (expr: string): string[] =>
	[...skeleton(expr).matchAll(/(?<![\w:$.])([a-zA-Z_:][\w:]*)(?![\w:]|\s*\()/g)].map(m => m[1]).filter(name => !PROMQL_WORDS.has(name));

/** name{label="..."} selectors: the labels each one matches on. */
const selectorsOf = (expr: string) =>
	[...expr.replace(/"(?:[^"\\]|\\.)*"/g, '""').matchAll(/([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}/g)].map(([, name, matchers]) => ({
		name,
		labels: [...matchers.matchAll(/(\w+)\s*(?:=~|!~|!=|=)/g)].map(m => m[1]),
	}));

/** The labels of `by (...)` and `without (...)` clauses. */
const groupingLabelsOf = (expr: string) =>
	[...expr.matchAll(/\b(?:by|without)\s*\(([^)]*)\)/g)].flatMap(([, list]) =>
		list
			.split(",")
			.map(s => s.trim())
			.filter(Boolean),
	);

// ---- The Mint under test ----

/** Fault injection from outside the product: wallet steps and reads that fail while a test says so. */
const faults = { credit: false, walletRead: false };
const Faults = {
	name: "Faults",
	localAction(next: (ctx: unknown) => unknown, action: { name: string }) {
		if (action.name === "wallet.credit") {
			return (ctx: unknown) => {
				if (faults.credit) throw new Error("EIO: i/o error, write /var/lib/mint/wallet/entries.db");
				return next(ctx);
			};
		}
		if (action.name === "wallet.mine") {
			return (ctx: unknown) => {
				if (faults.walletRead) throw new Error("EIO: i/o error, read /var/lib/mint/wallet/wallets.db");
				return next(ctx);
			};
		}
		return next;
	},
};

const NODE_ID = "metrics-test-node";
let mint: TestMint;
let metricsPort: number;
let alice: Session & { person: Person };
let bob: Session & { person: Person };

const scrapeText = async (): Promise<string> => {
	const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
	expect(res.status).toBe(200);
	return res.text();
};
const scrape = async () => parseExposition(await scrapeText());
/** Waits until the scraped value of a metric is `expected`. */
const metricBecomes = (name: string, labels: Record<string, string>, expected: number, timeoutMs = 5000) =>
	waitFor(async () => sampleValue(await scrape(), name, labels) === expected, timeoutMs).catch(async () => {
		throw new Error(`${name} ${JSON.stringify(labels)} is ${sampleValue(await scrape(), name, labels)}, not ${expected}`);
	});

beforeAll(async () => {
	metricsPort = await freePort();
	mint = await startTestMint(
		{
			METRICS_PORT: String(metricsPort),
			NODE_ID,
			LOG_LEVEL: "fatal",
			LOGIN_MAX_FAILURES_PER_ACCOUNT: "2",
			// A lease of half a second and a sweeper every 100 ms: a stuck transaction shows at once.
			TX_STUCK_AFTER_MS: "500",
			TX_SWEEP_INTERVAL_MS: "100",
			MAIL_MAX_ATTEMPTS: "1",
		},
		[Faults],
	);
	const reporter = (mint.broker.metrics as unknown as { reporter: MintPrometheusReporter[] }).reporter[0];
	await waitFor(() => reporter.server.listening);

	alice = await signup(mint);
	bob = await signup(mint);
	await login(mint, alice.person);
	// Two wrong passwords for bob from this address, then the login guard refuses the third attempt.
	for (const expected of [401, 401, 429]) {
		const res = await mint.http.post("/api/v1/auth/login").send({ email: bob.person.email, password: "not the password" });
		expect(res.status).toBe(expected);
	}
	expect((await topUp(mint, alice, 100)).status).toBe(201);
	expect((await transfer(mint, alice, 25.5, bob.user.id)).status).toBe(201);
	for (let i = 0; i < 2; i++) expect((await mint.http.get("/api/v1/wallet/user").set("Cookie", alice.cookie)).status).toBe(200);
	// One unexpected error: an answer 500.
	faults.walletRead = true;
	expect((await mint.http.get("/api/v1/wallet/user").set("Cookie", bob.cookie)).status).toBe(500);
	faults.walletRead = false;
	// An action that always fails: its circuit breaker opens.
	mint.broker.createService({
		name: "flaky",
		actions: {
			fail() {
				throw new Errors.MoleculerServerError("always fails", 500, "FLAKY");
			},
		},
	});
	await mint.broker.waitForServices("flaky");
	for (let i = 0; i < 25; i++) await mint.broker.call("flaky.fail").catch(() => undefined);
	// Every email of the above sent.
	await metricBecomes("mint_emails_total", { template: "transfer-received", result: "sent" }, 1);
});

afterAll(async () => {
	await mint?.stop();
});

describe("what the dashboards and alert rules read is on /metrics", () => {
	const queries = monitoringQueries();
	let samples: Sample[];
	const labelsOf = (name: string) => new Set(samples.filter(s => s.name === name).flatMap(s => Object.keys(s.labels)));
	beforeAll(async () => {
		samples = await scrape();
	});

	it("reads the queries of both dashboards and every rule", () => {
		expect(queries.filter(q => q.where.startsWith("business.json")).length).toBeGreaterThan(10);
		expect(queries.filter(q => q.where.startsWith("technical.json")).length).toBeGreaterThan(15);
		expect(queries.filter(q => q.where.startsWith("alerts.yml")).length).toBeGreaterThan(10);
		expect(metricNamesOf('sum by (le) (rate(moleculer_request_time_bucket{action="api.rest"}[5m])) / on(x) mint:a:b offset 5m > 0.5')).toEqual([
			"moleculer_request_time_bucket",
			"mint:a:b",
		]);
	});

	it("every metric they name is exposed", () => {
		const exposed = new Set(samples.map(s => s.name));
		const missing = queries.flatMap(({ where, expr }) =>
			metricNamesOf(expr)
				.filter(name => name !== "up" && !name.includes(":") && !exposed.has(name))
				.map(name => `${where}: ${name}`),
		);
		expect(missing).toEqual([]);
		// The names of the monitoring/ files, all of them on this node.
		const named = new Set(queries.flatMap(q => metricNamesOf(q.expr)));
		for (const name of ["mint_signups_total", "mint_money_moved_minor_total", "moleculer_circuit_breaker_opened_active", "mint_event_loop_lag_p99_seconds"]) {
			expect([name, named.has(name), exposed.has(name)]).toEqual([name, true, true]);
		}
	});

	it("every recording rule they read is defined in alerts.yml", () => {
		const records = new Set(queries.filter(q => q.where.startsWith("alerts.yml")).map(q => q.where.slice("alerts.yml: ".length)));
		const undefinedRules = queries.flatMap(({ where, expr }) =>
			metricNamesOf(expr)
				.filter(name => name.includes(":") && !records.has(name))
				.map(name => `${where}: ${name}`),
		);
		expect(undefinedRules).toEqual([]);
	});

	it("every label they select on is a label of that metric", () => {
		const wrong = queries.flatMap(({ where, expr }) =>
			selectorsOf(expr)
				.filter(({ name }) => !name.includes(":"))
				.flatMap(({ name, labels }) =>
					labels.filter(label => !TARGET_LABELS.has(label) && !labelsOf(name).has(label)).map(label => `${where}: ${name}{${label}}`),
				),
		);
		expect(wrong).toEqual([]);
	});

	it("every label they group by is a label of a metric they read", () => {
		const wrong = queries.flatMap(({ where, expr }) => {
			const available = new Set(metricNamesOf(expr).flatMap(name => [...labelsOf(name)]));
			// A recording rule keeps the labels it was summed by: namespace.
			if (metricNamesOf(expr).some(name => name.includes(":"))) available.add("namespace");
			return groupingLabelsOf(expr)
				.filter(label => !TARGET_LABELS.has(label) && !available.has(label))
				.map(label => `${where}: by ${label}`);
		});
		expect(wrong).toEqual([]);
	});
});

describe("the business counters count what was done", () => {
	const node = { namespace: "mint", node_id: NODE_ID };

	it("signups, logins by result", async () => {
		const samples = await scrape();
		expect(sampleValue(samples, "mint_signups_total", node)).toBe(2);
		expect(mint.events.filter(e => e.name === "user.signedUp")).toHaveLength(2);
		expect(["ok", "failed", "throttled"].map(result => sampleValue(samples, "mint_logins_total", { ...node, result }))).toEqual([1, 2, 1]);
	});

	it("transactions by type and status, and the money completed ones moved, in minor units", async () => {
		const samples = await scrape();
		const count = (type: string, status: string) => sampleValue(samples, "mint_transactions_total", { ...node, type, status });
		expect(["Pending", "Processing", "Completed", "Failed"].map(status => count("TopUp", status))).toEqual([1, 1, 1, 0]);
		expect(["Pending", "Processing", "Completed", "Failed"].map(status => count("Transfer", status))).toEqual([1, 1, 1, 0]);
		expect(sampleValue(samples, "mint_money_moved_minor_total", { ...node, type: "TopUp", currency: "USD" })).toBe(100_00);
		expect(sampleValue(samples, "mint_money_moved_minor_total", { ...node, type: "Transfer", currency: "USD" })).toBe(25_50);
		expect(sampleValue(samples, "mint_outbox_pending", { ...node, service: "transactions" })).toBe(0);
	});

	it("emails by template and result, cache lookups, the unexpected 500, the open breaker", async () => {
		const samples = await scrape();
		const emails = samples.filter(s => s.name === "mint_emails_total").map(s => `${s.labels.template} ${s.labels.result} ${s.value}`);
		expect(emails.sort()).toEqual(["topup-completed sent 1", "transfer-received sent 1", "transfer-sent sent 1", "welcome sent 2"]);
		expect(sampleValue(samples, "mint_emails_dead_letters", node)).toBe(0);
		expect(sampleValue(samples, "mint_cache_lookups_total", { ...node, action: "wallet.mine", result: "hit" })).toBe(1);
		expect(sampleValue(samples, "mint_http_unexpected_errors_total", node)).toBe(1);
		expect(sampleValue(samples, "moleculer_circuit_breaker_opened_active", { ...node, action: "flaky.fail", affected_node_id: NODE_ID })).toBe(1);
		expect(sampleValue(samples, "moleculer_request_error_total", { ...node, action: "api.rest", error_code: "undefined" })).toBe(1);
	});

	it("a transaction whose wallet step keeps failing is counted stuck until the sweeper finishes it; its email, undeliverable, is a dead letter", async () => {
		expect(sampleValue(await scrape(), "mint_transactions_stuck", node)).toBe(0);
		faults.credit = true;
		const res = await topUp(mint, alice, 5);
		expect([res.status, res.body.status]).toEqual([202, "Processing"]);
		// Unfinished half a second after its last change, and the sweeper's re-drives fail.
		await metricBecomes("mint_transactions_stuck", node, 1);
		// Mail cannot be written any more (DATA_DIR/mail is a file), and the wallet works again.
		fs.rmSync(path.join(mint.dataDir, "mail"), { recursive: true, force: true });
		fs.writeFileSync(path.join(mint.dataDir, "mail"), "");
		faults.credit = false;
		await metricBecomes("mint_transactions_stuck", node, 0);
		await metricBecomes("mint_emails_dead_letters", node, 1);
		const samples = await scrape();
		expect(sampleValue(samples, "mint_transactions_total", { ...node, type: "TopUp", status: "Completed" })).toBe(2);
		expect(sampleValue(samples, "mint_money_moved_minor_total", { ...node, type: "TopUp", currency: "USD" })).toBe(105_00);
		expect(sampleValue(samples, "mint_emails_total", { ...node, template: "topup-completed", result: "dead" })).toBe(1);
		expect(await mint.broker.call("notifications.deadLetters", {})).toHaveLength(1);
	});
});

describe("the endpoint", () => {
	it("listens on HOST (127.0.0.1 here), not on every interface", async () => {
		const reporter = (mint.broker.metrics as unknown as { reporter: MintPrometheusReporter[] }).reporter[0];
		expect(reporter.server.address()).toMatchObject({ address: "127.0.0.1", port: metricsPort });
		const external = Object.values(os.networkInterfaces())
			.flat()
			.find(i => i && !i.internal && i.family === "IPv4");
		if (external) {
			const refused = await new Promise<string>(resolve => {
				const socket = net.connect(metricsPort, external.address);
				socket.on("connect", () => {
					socket.destroy();
					resolve("connected");
				});
				socket.on("error", (err: NodeJS.ErrnoException) => resolve(String(err.code)));
			});
			expect([external.address, refused]).toEqual([external.address, "ECONNREFUSED"]);
		}
	});

	it("publishes no address, host name, user, home directory or command line, while it has the process metrics", async () => {
		const text = await scrapeText();
		const samples = parseExposition(text);
		const names = new Set(samples.map(s => s.name));
		// The process metrics are collected (so their absence below is not for want of them).
		for (const name of ["process_memory_rss", "process_memory_heap_size_used", "os_cpu_total", "process_uptime"])
			expect([name, names.has(name)]).toEqual([name, true]);
		expect([...names].filter(name => /^(os_network|os_hostname|os_user|process_arguments)/.test(name))).toEqual([]);
		const secrets = [
			...Object.values(os.networkInterfaces())
				.flat()
				.flatMap(i => (i && !i.internal ? [i.address, i.mac] : [])),
			os.userInfo().homedir,
			...process.argv.filter(arg => arg.length > 3),
		];
		expect(secrets.length).toBeGreaterThan(2);
		expect(secrets.filter(secret => text.includes(secret))).toEqual([]);
		const hostname = os.hostname();
		expect(samples.filter(s => Object.values(s.labels).some(v => v === hostname || v.startsWith(`${hostname}-`))).map(s => s.name)).toEqual([]);
	});

	it("reports the event loop's lag since the previous scrape", async () => {
		await scrape();
		const blockedUntil = Date.now() + 300;
		while (Date.now() < blockedUntil) {
			// A handler that hogs the loop for 300 ms.
		}
		// Then some 20 samples of an idle loop: the stall is one sample among them, not their median, even on a busy machine.
		await new Promise(resolve => setTimeout(resolve, 200));
		const blocked = await scrape();
		expect(sampleValue(blocked, "mint_event_loop_lag_max_seconds", { node_id: NODE_ID })).toBeGreaterThanOrEqual(0.25);
		expect(sampleValue(blocked, "mint_event_loop_lag_p50_seconds", { node_id: NODE_ID })).toBeLessThan(0.05);
		await new Promise(resolve => setTimeout(resolve, 200));
		expect(sampleValue(await scrape(), "mint_event_loop_lag_max_seconds", { node_id: NODE_ID })).toBeLessThan(0.2);
	});

	it("names its labels in snake_case, Moleculer's nodeID as node_id", async () => {
		const samples = await scrape();
		const labels = new Set(samples.flatMap(s => Object.keys(s.labels)));
		expect([...labels].filter(label => !/^[a-z][a-z0-9_]*$/.test(label))).toEqual([]);
		expect(sampleValue(samples, "moleculer_request_total", { node_id: NODE_ID, action: "auth.signup" })).toBe(2);
	});
});

describeWithInfra("the exposition, linted", { name: `promtool at ${PROMTOOL}`, available: fs.existsSync(PROMTOOL) }, () => {
	it("parses, and Mint's own metrics follow Prometheus's naming rules (promtool check metrics)", async () => {
		const run = spawnSync(PROMTOOL, ["check", "metrics"], { input: await scrapeText(), encoding: "utf8", timeout: 20_000 });
		const problems = `${run.stdout}${run.stderr}`.split("\n").filter(Boolean);
		expect(problems.filter(line => /error while linting|parsing error/i.test(line))).toEqual([]);
		// Moleculer's own names break some rules (its histograms carry quantiles, some gauges end in _total): not Mint's to rename.
		expect(problems.filter(line => line.startsWith("mint_"))).toEqual([]);
		expect(problems.some(line => line.startsWith("moleculer_"))).toBe(true);
	});
});

describe("the endpoint of a bare broker", () => {
	it("listens where METRICS_HOST says (0.0.0.0 for a Prometheus elsewhere)", async () => {
		const port = await freePort();
		const broker = new ServiceBroker({
			logger: false,
			nodeID: "bare",
			metrics: metricsOptions(loadConfig({ METRICS_PORT: String(port), METRICS_HOST: "0.0.0.0" })),
		});
		try {
			const reporter = (broker.metrics as unknown as { reporter: MintPrometheusReporter[] }).reporter[0];
			await waitFor(() => reporter.server.listening);
			expect(reporter.server.address()).toMatchObject({ address: "0.0.0.0", port });
		} finally {
			await broker.stop();
		}
	});

	it("a metrics port already taken is logged, and the node serves on", async () => {
		const taken = net.createServer();
		await new Promise<void>(resolve => taken.listen(0, "127.0.0.1", resolve));
		const port = (taken.address() as net.AddressInfo).port;
		const broker = new ServiceBroker({ logger: false, nodeID: "bare", metrics: metricsOptions(loadConfig({ METRICS_PORT: String(port) })) });
		try {
			const reporter = (broker.metrics as unknown as { reporter: MintPrometheusReporter[] }).reporter[0];
			const logged = jest.spyOn(reporter.logger, "error");
			broker.createService({ name: "greeter", actions: { hello: () => "hi" } });
			await broker.start();
			await waitFor(() => logged.mock.calls.length > 0);
			expect(logged).toHaveBeenCalledWith(
				expect.objectContaining({ port, err: expect.objectContaining({ code: "EADDRINUSE" }) }),
				"metrics endpoint cannot listen; this node serves on without it",
			);
			expect(await broker.call("greeter.hello")).toBe("hi");
		} finally {
			await broker.stop();
			taken.close();
		}
	});
});
