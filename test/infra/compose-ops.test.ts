/**
 * docker-compose.yml against what it wires together: nginx's template and
 * its upstreams, Prometheus's scrape targets, Grafana's datasources and
 * dashboards, promtail's Loki, the nodes' Zipkin URL and healthchecks, each
 * Mint node as Mint itself reads its environment (loadConfig), and
 * .env.example. It works on the file as docker-compose resolves it (anchors
 * merged, variables substituted, paths made absolute) and reads each config
 * through the volume that mounts it into its container, so a moved file, a
 * renamed service or a changed port on one side fails here.
 */
import { spawnSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import vm from "node:vm";
import proxyaddr from "proxy-addr";
import { parse } from "yaml";
import { type Config, loadConfig } from "../../lib/config";
import { describeWithInfra } from "../helpers/infra";
import { ENVSUBST_BIN, MINT_TEMPLATE, renderTemplate } from "../helpers/nginx";

const ROOT = path.resolve(__dirname, "../..");
const MONITORING = path.join(ROOT, "monitoring");
const VARIABLES = {
	AUTH_SECRET: crypto.randomBytes(36).toString("base64url"),
	RABBITMQ_PASSWORD: crypto.randomBytes(24).toString("hex"),
	GRAFANA_ADMIN_PASSWORD: crypto.randomBytes(16).toString("hex"),
};
const REQUIRED = Object.keys(VARIABLES);

type Service = Record<string, any>;

/** docker-compose.yml as docker-compose resolves it with these variables: only them, and no .env file. */
function resolveCompose(
	variables: Record<string, string>,
	envFile: string,
): { services: Record<string, Service>; networks: Record<string, any>; volumes: Record<string, unknown> } {
	const run = spawnSync("docker-compose", ["--env-file", envFile, "config"], {
		cwd: ROOT,
		env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...variables },
		encoding: "utf8",
	});
	if (run.status !== 0) throw new Error(`docker-compose config failed: ${run.stderr}`);
	return parse(run.stdout);
}

/** A volume entry as (source, target): "src:dst[:mode]" or the long syntax. */
function mountOf(volume: string | { source?: string; target: string }): { source: string; target: string } {
	if (typeof volume === "object") return { source: volume.source ?? "", target: volume.target };
	const [source, target] = volume.split(":");
	return target === undefined ? { source: "", target: source } : { source, target };
}

/** The file on this machine that a container path of a service is: through its bind mount (the longest that holds the path). */
function hostPathOf(service: Service, containerPath: string): string | undefined {
	const mounts = ((service.volumes ?? []) as Parameters<typeof mountOf>[0][])
		.map(mountOf)
		.filter(m => path.isAbsolute(m.source) && (containerPath === m.target || containerPath.startsWith(`${m.target}/`)))
		.sort((a, b) => b.target.length - a.target.length);
	return mounts[0] && path.join(mounts[0].source, path.relative(mounts[0].target, containerPath));
}

/** A service's published ports as { host address, host port, container port }. */
function publishedPortsOf(service: Service): { hostIp: string; published: number; target: number }[] {
	return ((service.ports ?? []) as (string | { host_ip?: string; published: number | string; target: number | string })[]).map(port => {
		if (typeof port === "object") return { hostIp: port.host_ip ?? "", published: Number(port.published), target: Number(port.target) };
		const parts = port.replace(/\/(tcp|udp)$/, "").split(":");
		const [hostIp, published, target] = parts.length === 3 ? parts : ["", ...parts];
		return { hostIp, published: Number(published), target: Number(target ?? published) };
	});
}

/** "http://host:port/..." or "host:port" as [host, port]. */
function hostPort(address: string): [string, number] {
	const url = new URL(address.includes("://") ? address : `tcp://${address}`);
	return [url.hostname, Number(url.port)];
}

/** The value of a `--flag=value` (or `-flag=value`) in a command. */
const flagOf = (service: Service, flag: string) => ((service.command ?? []) as string[]).find(arg => arg.startsWith(`${flag}=`))?.slice(flag.length + 1);

const readYaml = (file: string) => parse(fs.readFileSync(file, "utf8"));

/** The top-level directives of an nginx file (comments and quoted strings skipped). */
function topLevelDirectives(conf: string): string[] {
	const names: string[] = [];
	let depth = 0;
	let quote = "";
	let word = "";
	let first = true;
	for (let i = 0; i < conf.length; i++) {
		const c = conf[i];
		if (quote) {
			if (c === "\\") i++;
			else if (c === quote) quote = "";
			continue;
		}
		if (c === "#") {
			while (i < conf.length && conf[i] !== "\n") i++;
			continue;
		}
		if (c === '"' || c === "'") quote = c;
		if (/[\s{};"']/.test(c)) {
			if (word && first && depth === 0) names.push(word);
			if (word) first = false;
			word = "";
			if (c === "{") depth++;
			if (c === "}") depth--;
			if (c === "{" || c === "}" || c === ";") first = true;
			continue;
		}
		word += c;
	}
	if (depth !== 0) throw new Error(`unbalanced braces (depth ${depth})`);
	return names;
}

/** What may stand at the top of a file the image's nginx.conf includes inside http {} (conf.d/*.conf). */
const HTTP_CONTEXT = new Set(["upstream", "map", "geo", "split_clients", "limit_req_zone", "limit_conn_zone", "log_format", "proxy_cache_path", "server"]);

/**
 * The Dockerfile's HEALTHCHECK command, run with a node's environment and a
 * stand-in fetch: the URL it asks, and its exit code when /ready answers ok
 * and when it does not.
 */
async function imageHealthcheck(env: Record<string, string>): Promise<{ urls: string[]; exits: number[] }> {
	const dockerfile = fs.readFileSync(path.join(ROOT, "Dockerfile"), "utf8");
	const match = /^HEALTHCHECK\s.*?\bCMD\s+(\[.*\])\s*$/m.exec(dockerfile);
	if (!match) throw new Error("the Dockerfile has no HEALTHCHECK in exec form");
	const [program, flag, script] = JSON.parse(match[1]) as string[];
	expect([program, flag]).toEqual(["node", "-e"]);
	const urls: string[] = [];
	const exits: number[] = [];
	for (const ok of [true, false]) {
		const sandbox = {
			fetch: (url: string) => {
				urls.push(url);
				return Promise.resolve({ ok });
			},
			process: { env, exit: (code: number) => exits.push(code) },
		};
		vm.runInNewContext(script, sandbox);
		await new Promise(resolve => setImmediate(resolve));
	}
	return { urls, exits };
}

const hasCompose = spawnSync("docker-compose", ["version"], { stdio: "ignore" }).status === 0;
const need = {
	name: `docker-compose (Debian package docker-compose) and envsubst (${ENVSUBST_BIN}, gettext-base)`,
	available: hasCompose && fs.existsSync(ENVSUBST_BIN),
};

describeWithInfra("docker-compose.yml with nginx/ and monitoring/", need, () => {
	let tmp = "";
	let emptyEnvFile = "";
	let services: Record<string, Service> = {};
	let networks: Record<string, any> = {};
	/** Each Mint node (image mint:local) as Mint reads its environment. */
	const mint = new Map<string, Config>();
	const mintEnv = new Map<string, Record<string, string>>();

	beforeAll(() => {
		tmp = fs.mkdtempSync(path.join(os.tmpdir(), "mint-compose-ops-"));
		emptyEnvFile = path.join(tmp, "empty.env");
		fs.writeFileSync(emptyEnvFile, "");
		({ services, networks } = resolveCompose(VARIABLES, emptyEnvFile));
		for (const [name, service] of Object.entries(services)) {
			if (service.image !== "mint:local") continue;
			mintEnv.set(name, service.environment);
			mint.set(name, loadConfig(service.environment));
		}
	});
	afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

	/** The ports a service is known to serve on the compose network, from its own config where it has one. */
	function servedPorts(name: string): number[] {
		const service = services[name];
		const config = mint.get(name);
		const ports = publishedPortsOf(service).map(p => p.target);
		if (config) {
			if (config.services.includes("api")) ports.push(config.port);
			if (config.probePort !== undefined) ports.push(config.probePort);
			if (config.metricsPort) ports.push(config.metricsPort);
		}
		if (name === "loki") ports.push(lokiConfig().server.http_listen_port);
		if (name === "jaeger") ports.push(Number(String(service.environment.COLLECTOR_ZIPKIN_HOST_PORT).split(":").pop()));
		return [...new Set(ports)];
	}

	/** Loki's config, read through the file its command names. */
	function lokiConfig() {
		const file = hostPathOf(services.loki, flagOf(services.loki, "-config.file") ?? "");
		expect(file).toBe(path.join(MONITORING, "loki", "loki.yml"));
		return readYaml(file as string);
	}

	it("reads every Mint node's environment as valid for production", () => {
		expect([...mint.keys()].sort()).toEqual(["core", "gateway-1", "gateway-2", "notifications"]);
		for (const [name, config] of mint) expect([name, config.production, config.http.cookieSecure]).toEqual([name, true, true]);
	});

	it("nginx renders the template from nginx/ into conf.d: an http-context file listening on the one public port", () => {
		const nginx = services.nginx;
		expect(nginx.image).toMatch(/^nginx:1\.\d+/);
		// The image renders /etc/nginx/templates/<name>.template into /etc/nginx/conf.d/<name>, which its nginx.conf includes inside http {} as *.conf.
		const target = "/etc/nginx/templates/mint.conf.template";
		expect(hostPathOf(nginx, target)).toBe(MINT_TEMPLATE);
		expect(path.basename(target, ".template")).toMatch(/\.conf$/);
		const template = fs.readFileSync(MINT_TEMPLATE, "utf8");
		// Upper-case names are envsubst's: each set on the container; nginx's own $variables are lower-case.
		const placeholders = new Set([...template.matchAll(/\$\{?([A-Z][A-Z0-9_]*)\}?/g)].map(m => m[1]));
		expect([...placeholders].sort()).toEqual(["MINT_GATEWAY_1", "MINT_GATEWAY_2", "NGINX_PORT"]);
		for (const name of placeholders) expect([name, typeof nginx.environment[name]]).toEqual([name, "string"]);
		const rendered = renderTemplate(MINT_TEMPLATE, nginx.environment);
		expect(rendered).not.toMatch(/\$\{?[A-Z]/);
		for (const directive of topLevelDirectives(rendered)) expect([directive, HTTP_CONTEXT.has(directive)]).toEqual([directive, true]);
		const listens = [...rendered.matchAll(/^\s*listen\s+(\S+?)[\s;]/gm)].map(m => Number(m[1].split(":").pop()));
		expect(listens).toEqual([Number(nginx.environment.NGINX_PORT)]);
		expect(publishedPortsOf(nginx)).toEqual([{ hostIp: "", published: 8080, target: listens[0] }]);
	});

	it("nginx's upstreams are exactly the gateway nodes, on the address and port each listens on, and nginx waits for them", () => {
		const rendered = renderTemplate(MINT_TEMPLATE, services.nginx.environment);
		const upstream = /upstream\s+mint_gateways\s*\{([^}]*)\}/.exec(rendered)?.[1] ?? "";
		const servers = [...upstream.matchAll(/^\s*server\s+(\S+)/gm)].map(m => hostPort(m[1]));
		expect(servers).toEqual([
			["gateway-1", 3000],
			["gateway-2", 3000],
		]);
		for (const [host, port] of servers) {
			const config = mint.get(host);
			expect([host, config?.services]).toEqual([host, ["api"]]);
			// Reached from the nginx container: not on loopback.
			expect([host, config?.host, config?.port]).toEqual([host, "0.0.0.0", port]);
			expect([host, services.nginx.depends_on[host]]).toEqual([host, { condition: "service_started" }]);
		}
		const gateways = [...mint].filter(([, config]) => config.services.includes("api")).map(([name]) => name);
		expect(servers.map(([host]) => host).sort()).toEqual(gateways.sort());
	});

	it("the gateways believe X-Forwarded-* from this stack's network only, and the emails link to nginx's public address", () => {
		const subnet: string = networks.default.ipam.config[0].subnet;
		expect(subnet).toBe("172.29.80.0/24");
		for (const [name, service] of Object.entries(services)) expect([name, service.networks, service.network_mode]).toEqual([name, undefined, undefined]);
		const inStack = subnet.replace(/\.0\/\d+$/, ".7");
		for (const [name, config] of mint) {
			expect([name, config.auth.publicBaseUrl]).toEqual([name, `http://localhost:${publishedPortsOf(services.nginx)[0].published}`]);
			if (!config.services.includes("api")) continue;
			expect([name, config.http.trustedProxies]).toEqual([name, [subnet]]);
			const trust = proxyaddr.compile(config.http.trustedProxies);
			expect([name, trust(inStack, 0), trust("127.0.0.1", 0), trust("203.0.113.9", 0)]).toEqual([name, true, false, false]);
		}
		// Another range and public address: the network and the gateways' trust follow the one variable, the links the other.
		const moved = resolveCompose({ ...VARIABLES, MINT_SUBNET: "10.231.7.0/24", PUBLIC_URL: "https://mint.example.com" }, emptyEnvFile);
		expect(moved.networks.default.ipam.config[0].subnet).toBe("10.231.7.0/24");
		for (const name of mint.keys()) {
			const config = loadConfig(moved.services[name].environment);
			expect([name, config.auth.publicBaseUrl]).toEqual([name, "https://mint.example.com"]);
			if (config.services.includes("api")) expect([name, config.http.trustedProxies]).toEqual([name, ["10.231.7.0/24"]]);
		}
	});

	it("Prometheus loads prometheus.yml and its rules from monitoring/, and scrapes every Mint node by service name on the port its metrics listen on", () => {
		const prometheus = services.prometheus;
		const configFile = hostPathOf(prometheus, flagOf(prometheus, "--config.file") ?? "");
		expect(configFile).toBe(path.join(MONITORING, "prometheus", "prometheus.yml"));
		const config = readYaml(configFile as string);
		for (const rules of config.rule_files as string[])
			expect([rules, fs.existsSync(path.resolve(path.dirname(configFile as string), rules))]).toEqual([rules, true]);
		// Its data in a named volume.
		const dataMount = (prometheus.volumes as string[]).map(mountOf).find(m => m.target === flagOf(prometheus, "--storage.tsdb.path"));
		expect(dataMount?.source).toBe("prometheus-data");

		const targetsOf = (job: string): string[] =>
			config.scrape_configs.find((j: { job_name: string }) => j.job_name === job).static_configs.flatMap((g: { targets: string[] }) => g.targets);
		const mintTargets = targetsOf("mint");
		expect(mintTargets.sort()).toEqual([...mint].map(([name, node]) => `${name}:${node.metricsPort}`).sort());
		for (const [name, node] of mint) {
			// Reachable from the Prometheus container, and on no host port.
			expect([name, node.metricsPort, node.metricsHost]).toEqual([name, 3031, "0.0.0.0"]);
			expect([name, publishedPortsOf(services[name]).some(p => p.target === node.metricsPort)]).toEqual([name, false]);
		}
		// Its own target: the port it serves (published on 127.0.0.1).
		expect(targetsOf("prometheus")).toEqual([`localhost:${servedPorts("prometheus")[0]}`]);
		expect(publishedPortsOf(prometheus)).toEqual([{ hostIp: "127.0.0.1", published: 9090, target: 9090 }]);
	});

	it("Grafana is provisioned from monitoring/grafana: its datasources are compose services on ports they serve, its dashboards mounted where the provider looks", () => {
		const grafana = services.grafana;
		const provisioning = hostPathOf(grafana, "/etc/grafana/provisioning");
		expect(provisioning).toBe(path.join(MONITORING, "grafana", "provisioning"));
		const datasources: { uid: string; url: string }[] = readYaml(path.join(provisioning as string, "datasources", "datasources.yml")).datasources;
		const reached = datasources.map(d => [d.uid, ...hostPort(d.url)]);
		expect(reached).toEqual([
			["prometheus", "prometheus", 9090],
			["loki", "loki", lokiConfig().server.http_listen_port],
			["jaeger", "jaeger", 16686],
		]);
		for (const [uid, host, port] of reached) {
			expect([uid, host in services]).toEqual([uid, true]);
			expect([uid, servedPorts(host as string).includes(port as number)]).toEqual([uid, true]);
			expect([uid, grafana.depends_on[host as string]]).toEqual([uid, { condition: "service_started" }]);
		}
		const [provider] = readYaml(path.join(provisioning as string, "dashboards", "dashboards.yml")).providers;
		const dashboards = hostPathOf(grafana, provider.options.path);
		expect(dashboards).toBe(path.join(MONITORING, "grafana", "dashboards"));
		expect(fs.readdirSync(dashboards as string).filter(f => f.endsWith(".json")).length).toBeGreaterThanOrEqual(2);
		expect(grafana.environment.GF_SECURITY_ADMIN_PASSWORD).toBe(VARIABLES.GRAFANA_ADMIN_PASSWORD);
		expect(publishedPortsOf(grafana)).toEqual([{ hostIp: "127.0.0.1", published: 3000, target: 3000 }]);
	});

	it("promtail reads the containers through the Docker socket, pushes to the loki service's port, and labels exactly the Mint services app=mint", () => {
		const promtail = services.promtail;
		const configFile = hostPathOf(promtail, flagOf(promtail, "-config.file") ?? "");
		expect(configFile).toBe(path.join(MONITORING, "promtail", "promtail.yml"));
		const config = readYaml(configFile as string);
		const [client] = config.clients;
		const push = new URL(client.url);
		expect([push.hostname, Number(push.port), push.pathname]).toEqual(["loki", lokiConfig().server.http_listen_port, "/loki/api/v1/push"]);
		expect(promtail.depends_on.loki).toEqual({ condition: "service_healthy" });

		const [job] = config.scrape_configs;
		const socket = new URL(job.docker_sd_configs[0].host);
		expect(socket.protocol).toBe("unix:");
		const mounts = (promtail.volumes as string[]).map(mountOf);
		expect(mounts).toContainEqual({ source: socket.pathname, target: socket.pathname });
		// Where it remembers how far it read: a named volume.
		const positions = mounts.find(m => m.target === path.dirname(config.positions.filename));
		expect(positions?.source).toBe("promtail-positions");

		const app = job.relabel_configs.find((r: { target_label?: string }) => r.target_label === "app");
		// Prometheus-style relabelling anchors the regex at both ends.
		const isMint = new RegExp(`^(?:${app.regex})$`);
		expect(
			Object.keys(services)
				.filter(name => isMint.test(name))
				.sort(),
		).toEqual([...mint.keys()].sort());
	});

	it("every Mint node sends its spans to Jaeger's Zipkin collector, which publishes no host port", () => {
		const jaeger = services.jaeger;
		const zipkinPort = Number(String(jaeger.environment.COLLECTOR_ZIPKIN_HOST_PORT).split(":").pop());
		expect(zipkinPort).toBe(9411);
		for (const [name, config] of mint) {
			expect([name, config.tracing.zipkinUrl && hostPort(config.tracing.zipkinUrl)]).toEqual([name, ["jaeger", zipkinPort]]);
			expect([name, config.tracing.sampleRate]).toEqual([name, 1]);
		}
		expect(publishedPortsOf(jaeger)).toEqual([{ hostIp: "127.0.0.1", published: 16686, target: 16686 }]);
	});

	it("every Mint node's healthcheck (the image's) asks /ready on the port where the node serves it", async () => {
		for (const [name, config] of mint) {
			// Not replaced nor turned off here.
			expect([name, services[name].healthcheck]).toEqual([name, undefined]);
			const { urls, exits } = await imageHealthcheck(mintEnv.get(name) as Record<string, string>);
			// The gateway serves /ready on PORT; a node without it, from its probe server on PORT (set explicitly).
			const port = config.services.includes("api") ? config.port : config.probePort;
			expect([name, port]).toEqual([name, 3000]);
			expect([name, urls, exits]).toEqual([name, [`http://127.0.0.1:${port}/ready`, `http://127.0.0.1:${port}/ready`], [0, 1]]);
			// 127.0.0.1 reaches it: the node listens on every interface or on loopback.
			expect([name, ["0.0.0.0", "127.0.0.1"].includes(config.host)]).toEqual([name, true]);
		}
	});

	it("every service another waits for as healthy has a healthcheck, and every service but Mailpit declares or inherits one", () => {
		const imageHealthchecks = new Set([...mint.keys()]);
		const hasHealthcheck = (name: string) => imageHealthchecks.has(name) || Array.isArray(services[name].healthcheck?.test);
		for (const [name, service] of Object.entries(services)) {
			for (const [dependency, { condition }] of Object.entries<{ condition: string }>(service.depends_on ?? {})) {
				expect([name, dependency, dependency in services]).toEqual([name, dependency, true]);
				if (condition === "service_healthy") expect([name, dependency, hasHealthcheck(dependency)]).toEqual([name, dependency, true]);
			}
		}
		// Mailpit's image carries its own HEALTHCHECK (mailpit readyz); nothing waits for it to be healthy.
		expect(Object.keys(services).filter(name => !hasHealthcheck(name))).toEqual(["mailpit"]);
		for (const [name] of mint) {
			expect([name, services[name].depends_on]).toMatchObject([
				name,
				{ mongo: { condition: "service_healthy" }, rabbitmq: { condition: "service_healthy" }, redis: { condition: "service_healthy" } },
			]);
		}
	});

	it(".env.example is not usable as it is (its secrets are empty), and its other values are the file's own defaults", () => {
		const example = path.join(ROOT, ".env.example");
		const run = (variables: Record<string, string>) =>
			spawnSync("docker-compose", ["--env-file", example, "config"], {
				cwd: ROOT,
				env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...variables },
				encoding: "utf8",
			});
		const refused = run({});
		expect(refused.status).not.toBe(0);
		expect(refused.stderr).toMatch(new RegExp(REQUIRED.join("|")));
		const withSecrets = run(VARIABLES);
		expect(withSecrets.status).toBe(0);
		expect(parse(withSecrets.stdout)).toEqual(resolveCompose(VARIABLES, emptyEnvFile));
	});
});

describe(".env.example", () => {
	const compose = parse(fs.readFileSync(path.join(ROOT, "docker-compose.yml"), "utf8"), { merge: true });
	const lines = fs.readFileSync(path.join(ROOT, ".env.example"), "utf8").split("\n");

	/** Every ${NAME...} in the file's values (not its comments), with its default or `required`. */
	function variablesOf(node: unknown, found = new Map<string, string>()): Map<string, string> {
		if (typeof node === "string") {
			for (const [, name, kind, rest] of node.matchAll(/\$\{(\w+)(?::([-?])([^}]*))?\}/g))
				found.set(name, kind === "?" ? "required" : kind === "-" ? rest : "");
		} else if (node && typeof node === "object") {
			for (const value of Object.values(node)) variablesOf(value, found);
		}
		return found;
	}

	it("documents every variable docker-compose.yml reads, and no other; the secrets empty, the rest at the file's defaults", () => {
		const used = variablesOf(compose);
		const example = new Map(lines.filter(l => /^\w+=/.test(l)).map(l => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]));
		expect([...example.keys()].sort()).toEqual([...used.keys()].sort());
		for (const [name, kind] of used) expect([name, example.get(name)]).toEqual([name, kind === "required" ? "" : kind]);
		expect([...used].filter(([, kind]) => kind === "required").map(([name]) => name)).toEqual(REQUIRED);
	});

	it("explains each variable in a comment above it, and sends Mint's own variables to the README's Configuration", () => {
		lines.forEach((line, i) => {
			if (!/^\w+=/.test(line)) return;
			let above = i - 1;
			while (above >= 0 && /^\w+=/.test(lines[above])) above--;
			expect([line, lines[above]?.startsWith("# ")]).toEqual([line, true]);
		});
		expect(lines.join("\n")).toMatch(/README, "Configuration"/);
	});
});
