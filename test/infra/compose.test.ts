/**
 * docker-compose.yml: every Mint node's environment passes Mint's own config
 * check, only nginx is reachable from the network (operator UIs on
 * 127.0.0.1; the gateways, MongoDB, Redis and Loki on no port), the secrets
 * come from the environment with no default, MongoDB is a replica set the
 * nodes wait for, and docker-compose accepts the file.
 *
 * How compose fits nginx/ and monitoring/ (upstreams, scrape targets,
 * datasources, ports): test/infra/compose-ops.test.ts.
 */
import { execFileSync, spawnSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import vm from "node:vm";
import { parse } from "yaml";
import { ALL_SERVICES, loadConfig } from "../../lib/config";
import { describeWithInfra } from "../helpers/infra";

const ROOT = path.resolve(__dirname, "../..");
const compose = parse(fs.readFileSync(path.join(ROOT, "docker-compose.yml"), "utf8"), { merge: true });
const secret = crypto.randomBytes(36).toString("base64url");
const brokerPassword = crypto.randomBytes(24).toString("hex");
const grafanaPassword = crypto.randomBytes(16).toString("hex");
const VARIABLES: Record<string, string> = { AUTH_SECRET: secret, RABBITMQ_PASSWORD: brokerPassword, GRAFANA_ADMIN_PASSWORD: grafanaPassword };
const REQUIRED = ["AUTH_SECRET", "RABBITMQ_PASSWORD", "GRAFANA_ADMIN_PASSWORD"];

/** docker-compose's substitution (${VAR}, ${VAR:-default}, ${VAR:?message}) with these variables set; a missing required one throws. */
function interpolate(value: string, variables: Record<string, string | undefined>): string {
	return value.replace(/\$\{(\w+)(?::([-?])([^}]*))?\}/g, (_, name: string, kind?: string, rest?: string) => {
		const set = variables[name];
		if (set !== undefined && set !== "") return set;
		if (kind === "-") return rest ?? "";
		if (kind === "?") throw new Error(`${name}: ${rest}`);
		return "";
	});
}

const mintNodes = Object.entries<any>(compose.services).filter(([, s]) => s.image === "mint:local");
const envOf = (service: any, variables = VARIABLES) =>
	Object.fromEntries(Object.entries<string>(service.environment).map(([k, v]) => [k, interpolate(String(v), variables)]));

/** The host address a published port listens on ("" = every interface), from the short ("[ip:]host:container[/proto]") or long syntax. */
function hostIpOf(port: string | number | { host_ip?: string; published?: string | number }): string {
	if (typeof port === "object") return port.host_ip ?? "";
	const spec = String(port).replace(/\/(tcp|udp|sctp)$/, "");
	const ipv6 = /^\[([^\]]+)\]:/.exec(spec);
	if (ipv6) return ipv6[1];
	const parts = spec.split(":");
	return parts.length === 3 ? parts[0] : "";
}
const LOOPBACK = ["127.0.0.1", "::1", "localhost"];

/** service -> the host addresses of its published ports. */
const publishedBy = (services: Record<string, any>) =>
	Object.fromEntries(Object.entries(services).map(([name, s]) => [name, ((s.ports ?? []) as any[]).map(hostIpOf)]));

/**
 * Runs MongoDB's healthcheck script (mongosh --eval) against a stand-in shell
 * for a member in the given state: what it initiates, and whether it passes
 * (mongosh exits non-zero when the script throws).
 */
function mongoHealthcheck(script: string, member: { initiated: boolean; primary: boolean }): { initiated: unknown[]; passes: boolean } {
	const initiated: unknown[] = [];
	const shell = {
		rs: {
			status: () => {
				if (!member.initiated) throw new Error("MongoServerError: no replset config has been received");
				return { ok: 1 };
			},
			initiate: (config: unknown) => {
				initiated.push(JSON.parse(JSON.stringify(config)));
				return { ok: 1 };
			},
		},
		db: { hello: () => ({ isWritablePrimary: member.primary }) },
	};
	try {
		vm.runInNewContext(script, shell);
		return { initiated, passes: true };
	} catch {
		return { initiated, passes: false };
	}
}

describe("docker-compose.yml", () => {
	it("runs every Mint service on some node, each node's environment valid for production", () => {
		const hosted = new Set<string>();
		for (const [name, service] of mintNodes) {
			const config = loadConfig(envOf(service));
			expect([name, config.production, config.http.cookieSecure]).toEqual([name, true, true]);
			expect(config.mongoUri).toBe("mongodb://mongo:27017/?replicaSet=rs0");
			for (const s of config.services) hosted.add(s);
		}
		expect([...hosted].sort()).toEqual([...ALL_SERVICES].sort());
	});

	it("wires the Mint nodes to services the file defines: RabbitMQ, MongoDB, Redis and Mailpit", () => {
		for (const [, service] of mintNodes) {
			const env = envOf(service);
			for (const [variable, host] of [
				["TRANSPORTER", "rabbitmq"],
				["MONGO_URI", "mongo"],
				["REDIS_URL", "redis"],
				["SMTP_URL", "mailpit"],
			]) {
				expect(new URL(env[variable]).hostname).toBe(host);
				expect(compose.services[host]).toBeDefined();
			}
		}
	});

	it("runs two gateway nodes, reachable on the compose network only, and the rest of Mint on nodes without the gateway", () => {
		const gateways = mintNodes.filter(([, service]) => loadConfig(envOf(service)).services.includes("api")).map(([name]) => name);
		expect(gateways).toEqual(["gateway-1", "gateway-2"]);
		for (const name of gateways) {
			const config = loadConfig(envOf(compose.services[name]));
			expect([name, config.services, config.host, config.port]).toEqual([name, ["api"], "0.0.0.0", 3000]);
			expect([name, compose.services[name].ports]).toEqual([name, undefined]);
		}
		expect(loadConfig(envOf(compose.services.core)).services).toEqual(["auth", "wallet", "transactions"]);
		expect(loadConfig(envOf(compose.services.notifications)).services).toEqual(["notifications"]);
	});

	it("runs MongoDB as the replica set rs0, initiated by its healthcheck, kept in a volume, and the Mint nodes wait for it and name it", () => {
		const mongo = compose.services.mongo;
		expect(mongo.image).toBe("mongo:7");
		expect(mongo.command).toEqual(["--replSet", "rs0", "--bind_ip_all"]);
		expect(mongo.volumes).toEqual(["mongo-data:/data/db"]);
		expect(Object.keys(compose.volumes)).toContain("mongo-data");
		const [kind, shell, ...args] = mongo.healthcheck.test as string[];
		expect([kind, shell]).toEqual(["CMD", "mongosh"]);
		const script = args[args.indexOf("--eval") + 1];
		const member = { _id: 0, host: "mongo:27017" };
		// First start: it initiates the set, and fails until the member has become the primary.
		expect(mongoHealthcheck(script, { initiated: false, primary: false })).toEqual({ initiated: [{ _id: "rs0", members: [member] }], passes: false });
		expect(mongoHealthcheck(script, { initiated: true, primary: false })).toEqual({ initiated: [], passes: false });
		expect(mongoHealthcheck(script, { initiated: true, primary: true })).toEqual({ initiated: [], passes: true });
		for (const [name, service] of mintNodes) {
			expect([name, service.depends_on.mongo]).toEqual([name, { condition: "service_healthy" }]);
			// The driver reaches the members by the names in the set's configuration: the nodes name the same.
			const uri = new URL(envOf(service).MONGO_URI);
			expect([name, `${uri.hostname}:${uri.port}`, uri.searchParams.get("replicaSet")]).toEqual([name, member.host, "rs0"]);
		}
	});

	it("opens only nginx to the network: the operator UIs on 127.0.0.1, MongoDB, Redis, Loki, promtail and the Mint nodes on no port", () => {
		const published = publishedBy(compose.services);
		expect(compose.services.nginx.ports).toEqual(["8080:8080"]);
		expect(published.nginx).toEqual([""]);
		expect(compose.services.rabbitmq.ports).toEqual(["127.0.0.1:15672:15672"]);
		expect(compose.services.mailpit.ports).toEqual(["127.0.0.1:8025:8025"]);
		expect(compose.services.prometheus.ports).toEqual(["127.0.0.1:9090:9090"]);
		expect(compose.services.grafana.ports).toEqual(["127.0.0.1:3000:3000"]);
		expect(compose.services.jaeger.ports).toEqual(["127.0.0.1:16686:16686"]);
		for (const name of ["mongo", "redis", "loki", "promtail", ...mintNodes.map(([node]) => node)]) expect([name, published[name]]).toEqual([name, []]);
		for (const [name, hosts] of Object.entries(published)) {
			if (name === "nginx") continue;
			for (const host of hosts) expect([name, LOOPBACK.includes(host)]).toEqual([name, true]);
		}
		for (const [name, service] of Object.entries<any>(compose.services)) expect([name, service.network_mode]).toEqual([name, undefined]);
	});

	it("takes Grafana's admin password from the environment, with no default", () => {
		const grafana = compose.services.grafana.environment;
		expect(grafana.GF_SECURITY_ADMIN_PASSWORD).toMatch(/^\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]+\}$/);
		expect(interpolate(grafana.GF_SECURITY_ADMIN_PASSWORD, VARIABLES)).toBe(grafanaPassword);
		expect(interpolate(grafana.GF_SECURITY_ADMIN_USER, VARIABLES)).toBe("admin");
		expect(() => interpolate(grafana.GF_SECURITY_ADMIN_PASSWORD, { ...VARIABLES, GRAFANA_ADMIN_PASSWORD: "" })).toThrow(/GRAFANA_ADMIN_PASSWORD/);
		expect(grafana.GF_USERS_ALLOW_SIGN_UP).toBe("false");
		expect(grafana.GF_AUTH_ANONYMOUS_ENABLED).toBe("false");
	});

	it("takes RabbitMQ's user and password from the environment, the same for the broker and every Mint node", () => {
		const rabbitmq = compose.services.rabbitmq.environment;
		expect(rabbitmq.RABBITMQ_DEFAULT_USER).toMatch(/^\$\{RABBITMQ_USER(:-\w+)?\}$/);
		// No default password: the file refuses to start without one.
		expect(rabbitmq.RABBITMQ_DEFAULT_PASS).toMatch(/^\$\{RABBITMQ_PASSWORD:\?[^}]+\}$/);
		for (const [name, service] of mintNodes) {
			expect([name, service.environment.TRANSPORTER]).toEqual([
				name,
				expect.stringMatching(/^amqp:\/\/\$\{RABBITMQ_USER(:-\w+)?\}:\$\{RABBITMQ_PASSWORD:\?[^}]+\}@rabbitmq:5672$/),
			]);
			for (const variables of [VARIABLES, { ...VARIABLES, RABBITMQ_USER: "ops" }]) {
				const transporter = new URL(envOf(service, variables).TRANSPORTER);
				expect([transporter.username, transporter.password]).toEqual([
					interpolate(rabbitmq.RABBITMQ_DEFAULT_USER, variables),
					interpolate(rabbitmq.RABBITMQ_DEFAULT_PASS, variables),
				]);
				expect(transporter.password).toBe(brokerPassword);
			}
		}
		expect(() => envOf(mintNodes[0][1], { ...VARIABLES, RABBITMQ_PASSWORD: "" })).toThrow(/RABBITMQ_PASSWORD/);
	});
});

const hasCompose = spawnSync("docker-compose", ["version"], { stdio: "ignore" }).status === 0;

describeWithInfra("docker-compose config", { name: "docker-compose (Debian package docker-compose)", available: hasCompose }, () => {
	// Only what the test sets: a developer's own variables, or a .env file beside the compose file, must not change the outcome.
	const baseEnv = { PATH: process.env.PATH ?? "/usr/bin:/bin" };
	let emptyEnvFile = "";
	beforeAll(() => {
		emptyEnvFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "mint-compose-")), "empty.env");
		fs.writeFileSync(emptyEnvFile, "");
	});
	afterAll(() => fs.rmSync(path.dirname(emptyEnvFile), { recursive: true, force: true }));
	const config = (variables: Record<string, string>, ...args: string[]) =>
		spawnSync("docker-compose", ["--env-file", emptyEnvFile, "config", ...args], { cwd: ROOT, env: { ...baseEnv, ...variables } });

	it("accepts the file with the three secrets set, and refuses it without any one of them, naming the variable", () => {
		const out = execFileSync("docker-compose", ["--env-file", emptyEnvFile, "config", "--services"], {
			cwd: ROOT,
			env: { ...baseEnv, ...VARIABLES },
		}).toString();
		expect(out.split("\n").filter(Boolean).sort()).toEqual(Object.keys(compose.services).sort());
		for (const missing of REQUIRED) {
			for (const others of [Object.fromEntries(Object.entries(VARIABLES).filter(([name]) => name !== missing)), { ...VARIABLES, [missing]: "" }]) {
				const refused = config(others);
				expect([missing, refused.status]).not.toEqual([missing, 0]);
				expect(refused.stderr.toString()).toContain(missing);
			}
		}
	});

	it("resolves to ports on 127.0.0.1 except nginx's, and to the broker credentials given", () => {
		const resolved = config({ ...VARIABLES, RABBITMQ_USER: "ops" });
		expect(resolved.status).toBe(0);
		const services = parse(resolved.stdout.toString()).services;
		const published = publishedBy(services);
		expect(published.nginx).toEqual([""]);
		for (const [name, hosts] of Object.entries(published)) {
			if (name !== "nginx") for (const host of hosts) expect([name, LOOPBACK.includes(host)]).toEqual([name, true]);
		}
		expect([published.rabbitmq, published.mailpit, published.prometheus, published.grafana, published.jaeger]).toEqual([
			["127.0.0.1"],
			["127.0.0.1"],
			["127.0.0.1"],
			["127.0.0.1"],
			["127.0.0.1"],
		]);
		for (const name of ["mongo", "redis", "loki", "promtail", ...mintNodes.map(([node]) => node)]) expect([name, published[name]]).toEqual([name, []]);
		expect(services.rabbitmq.environment).toMatchObject({ RABBITMQ_DEFAULT_USER: "ops", RABBITMQ_DEFAULT_PASS: brokerPassword });
		expect(services.grafana.environment).toMatchObject({ GF_SECURITY_ADMIN_USER: "admin", GF_SECURITY_ADMIN_PASSWORD: grafanaPassword });
		for (const [name] of mintNodes) expect([name, services[name].environment.TRANSPORTER]).toEqual([name, `amqp://ops:${brokerPassword}@rabbitmq:5672`]);
	});

	it("resolves MongoDB to the replica set with its healthcheck, and every Mint node to waiting for it healthy", () => {
		const resolved = config(VARIABLES);
		expect(resolved.status).toBe(0);
		const services = parse(resolved.stdout.toString()).services;
		expect(services.mongo.command).toEqual(["--replSet", "rs0", "--bind_ip_all"]);
		expect(services.mongo.healthcheck.test).toEqual(compose.services.mongo.healthcheck.test);
		for (const [name] of mintNodes) {
			expect([name, services[name].depends_on.mongo.condition, services[name].environment.MONGO_URI]).toEqual([
				name,
				"service_healthy",
				"mongodb://mongo:27017/?replicaSet=rs0",
			]);
		}
	});
});
