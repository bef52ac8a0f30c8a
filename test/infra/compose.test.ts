/** docker-compose.yml: every Mint node's environment passes Mint's own config check, and docker-compose accepts the file. */
import { execFileSync, spawnSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { parse } from "yaml";
import { ALL_SERVICES, loadConfig } from "../../lib/config";
import { describeWithInfra } from "../helpers/infra";

const ROOT = path.resolve(__dirname, "../..");
const compose = parse(fs.readFileSync(path.join(ROOT, "docker-compose.yml"), "utf8"), { merge: true });
const secret = crypto.randomBytes(36).toString("base64url");
const mintNodes = Object.entries<any>(compose.services).filter(([, s]) => s.image === "mint:local");
const envOf = (service: any) =>
	Object.fromEntries(Object.entries<string>(service.environment).map(([k, v]) => [k, String(v).replace(/\$\{AUTH_SECRET:\?[^}]*\}/, secret)]));

describe("docker-compose.yml", () => {
	it("runs every Mint service on some node, each node's environment valid for production", () => {
		const hosted = new Set<string>();
		for (const [name, service] of mintNodes) {
			const config = loadConfig(envOf(service));
			expect([name, config.production, config.http.cookieSecure]).toEqual([name, true, true]);
			expect(config.mongoUri).toBe("mongodb://mongo:27017");
			config.services.forEach(s => hosted.add(s));
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
		expect(compose.services.mailpit.ports).toContain("8025:8025");
		expect(compose.services.gateway.ports).toContain("3000:3000");
		expect(compose.services.gateway.environment.HOST).toBe("0.0.0.0");
	});
});

const hasCompose = spawnSync("docker-compose", ["version"], { stdio: "ignore" }).status === 0;

describeWithInfra("docker-compose config", { name: "docker-compose (Debian package docker-compose)", available: hasCompose }, () => {
	it("accepts the file with AUTH_SECRET set, and refuses it without, naming the variable", () => {
		const out = execFileSync("docker-compose", ["config", "--services"], { cwd: ROOT, env: { ...process.env, AUTH_SECRET: secret } }).toString();
		expect(out.split("\n").filter(Boolean).sort()).toEqual(Object.keys(compose.services).sort());
		const { AUTH_SECRET: _drop, ...withoutSecret } = process.env;
		const refused = spawnSync("docker-compose", ["config"], { cwd: ROOT, env: withoutSecret });
		expect(refused.status).not.toBe(0);
		expect(refused.stderr.toString()).toContain("AUTH_SECRET");
	});
});
