/**
 * `npm run cluster` (scripts/cluster.ts, built): a local cluster of four
 * nodes over the real RabbitMQ and Redis, served through either gateway,
 * a node that dies started again, and Ctrl-C (SIGINT) stopping them all.
 */
import { execFile, spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { ConfigError } from "../../lib/config";
import { DEFAULT_REDIS_URL, DEFAULT_TRANSPORTER, clusterPlan } from "../../scripts/cluster";
import { buildMint, type BuiltMint } from "../helpers/dist";
import { RABBITMQ_URL, describeWithInfra, rabbitmqNeed, removeFromRabbitmq, removeFromRedis, tcpReachable } from "../helpers/infra";
import { waitFor } from "../helpers/mint";

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const run = promisify(execFile);

describe("the cluster's plan", () => {
	let dataDir: string;
	beforeEach(() => {
		dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "mint-cluster-plan-"));
	});
	afterEach(() => fs.rmSync(dataDir, { recursive: true, force: true }));

	it("gives each node its port, NODE_ID and DATA_DIR, the same AUTH_SECRET, and the local RabbitMQ and Redis by default", () => {
		const plan = clusterPlan({ PORT: "4100", DATA_DIR: dataDir, NAMESPACE: "dev" });
		expect(plan.nodes.map(n => [n.name, n.services.join(","), n.url, n.env.PORT, n.env.DATA_DIR, n.env.NODE_ID])).toEqual([
			["gateway-1", "api", "http://127.0.0.1:4100/api/v1", "4100", path.join(dataDir, "gateway-1"), `${os.hostname()}-gateway-1`],
			["gateway-2", "api", "http://127.0.0.1:4101/api/v1", "4101", path.join(dataDir, "gateway-2"), `${os.hostname()}-gateway-2`],
			["core", "auth,wallet,transactions", "http://127.0.0.1:4102/ready", "4102", path.join(dataDir, "core"), `${os.hostname()}-core`],
			["notifications", "notifications", "http://127.0.0.1:4103/ready", "4103", path.join(dataDir, "notifications"), `${os.hostname()}-notifications`],
		]);
		for (const node of plan.nodes) {
			expect([node.env.TRANSPORTER, node.env.REDIS_URL, node.env.NAMESPACE, node.env.PUBLIC_URL]).toEqual([
				DEFAULT_TRANSPORTER,
				DEFAULT_REDIS_URL,
				"dev",
				"http://127.0.0.1:4100",
			]);
		}
		// One secret for all, generated once and kept for the next start.
		const secret = fs.readFileSync(path.join(dataDir, "auth-secret"), "utf8").trim();
		expect(new Set(plan.nodes.map(n => n.env.AUTH_SECRET))).toEqual(new Set([secret]));
		expect(clusterPlan({ PORT: "4100", DATA_DIR: dataDir }).nodes[0].env.AUTH_SECRET).toBe(secret);
		// What it prints names the brokers without their credentials.
		expect([plan.rabbitmq, plan.redis]).toEqual(["127.0.0.1:5672", "127.0.0.1:6379"]);
	});

	it("refuses a PORT without room for four, a bad variable, or no RabbitMQ, naming the variable", () => {
		const problem = (env: Record<string, string>) => {
			try {
				clusterPlan({ DATA_DIR: dataDir, ...env });
				return "accepted";
			} catch (err) {
				return err instanceof ConfigError ? err.variable : String(err);
			}
		};
		expect([problem({ PORT: "65534" }), problem({ PORT: "0" }), problem({ CIRCUIT_BREAKER_THRESHOLD: "2" }), problem({ TRANSPORTER: "nats://x" })]).toEqual([
			"PORT",
			"PORT",
			"CIRCUIT_BREAKER_THRESHOLD",
			"TRANSPORTER",
		]);
		// Set empty, REDIS_URL means no Redis.
		expect(clusterPlan({ DATA_DIR: dataDir, REDIS_URL: "" }).redis).toBeUndefined();
	});
});

function infraNeed(): { name: string; available: boolean } {
	const rabbitmq = rabbitmqNeed();
	const redis = new URL(REDIS_URL);
	return { name: `${rabbitmq.name} and Redis at ${redis.host}`, available: rabbitmq.available && tcpReachable(redis.hostname, Number(redis.port || 6379)) };
}

const portFree = (port: number) =>
	new Promise<boolean>(resolve => {
		const server = net.createServer();
		server.once("error", () => resolve(false));
		server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
	});

/** The first of `count` consecutive free ports. */
async function freePorts(count: number): Promise<number> {
	for (let attempt = 0; attempt < 50; attempt++) {
		// Below Linux's ephemeral range (32768-60999): there any outgoing connection (this very cluster's, to
		// RabbitMQ and Redis, or another test's) may take one of the four as its local port before its node
		// listens on it (EADDRINUSE seen once in CI at 43388).
		const base = 10_000 + crypto.randomInt(22_000 - count);
		const free = await Promise.all(Array.from({ length: count }, (_, i) => portFree(base + i)));
		if (free.every(Boolean)) return base;
	}
	throw new Error(`no ${count} consecutive free ports`);
}

const alive = (pid: number) => {
	try {
		process.kill(pid, 0);
		return true;
	} catch {
		return false;
	}
};

describeWithInfra("npm run cluster", infraNeed(), () => {
	let build: BuiltMint;
	const namespace = `mint-cluster-${crypto.randomUUID().slice(0, 8)}`;
	const clientIp = `2001:db8:${crypto.randomBytes(2).toString("hex")}::${crypto.randomBytes(2).toString("hex")}`;
	const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "mint-cluster-"));
	const userIds: string[] = [];

	beforeAll(() => {
		build = buildMint("cluster");
	}, 60_000);

	afterAll(async () => {
		build.remove();
		fs.rmSync(dataDir, { recursive: true, force: true });
		// Leave nothing of this namespace in RabbitMQ, nor of this test's client and users in Redis.
		const list = async (what: string) =>
			(await run("rabbitmqctl", [`list_${what}`, "-q", "--no-table-headers", "name"])).stdout
				.split("\n")
				.map(line => line.trim())
				.filter(name => name.startsWith(`MOL-${namespace}.`) || name.startsWith(`${namespace}.`));
		const [queues, exchanges] = await Promise.all([list("queues"), list("exchanges")]);
		await removeFromRabbitmq({ queues, exchanges });
		await removeFromRedis(REDIS_URL, [namespace, clientIp, ...userIds]);
	});

	it("serves through both gateways, starts a killed node again, and stops every node on SIGINT with exit code 0", async () => {
		const port = await freePorts(4);
		const cluster = spawn(process.execPath, [path.join(build.dist, "scripts/cluster.js")], {
			cwd: path.dirname(build.dist),
			env: {
				PATH: process.env.PATH ?? "",
				PORT: String(port),
				NAMESPACE: namespace,
				DATA_DIR: dataDir,
				TRANSPORTER: RABBITMQ_URL,
				REDIS_URL,
				LOG_LEVEL: "warn",
				JWT_KEY_BITS: "2048",
			},
		});
		let output = "";
		cluster.stdout.on("data", (chunk: Buffer) => {
			output += chunk.toString();
		});
		cluster.stderr.on("data", (chunk: Buffer) => {
			output += chunk.toString();
		});
		const exit = new Promise<number | null>(resolve => cluster.on("exit", code => resolve(code)));
		const pids = () => [...output.matchAll(/^cluster +\| (\S+) started \(pid (\d+)\)/gm)].map(m => ({ node: m[1], pid: Number(m[2]) }));
		try {
			await waitFor(() => output.includes("Mint cluster is up"), 40_000).catch(() => {
				throw new Error(`the cluster did not come up:\n${output}`);
			});
			// Where each node listens, printed before the logs.
			for (const url of [
				`http://127.0.0.1:${port}/api/v1`,
				`http://127.0.0.1:${port + 1}/api/v1`,
				`http://127.0.0.1:${port + 2}/ready`,
				`http://127.0.0.1:${port + 3}/ready`,
			]) {
				expect(output).toContain(url);
			}
			const ready = (url: string) => waitFor(async () => (await fetch(url).catch(() => undefined))?.status === 200 || undefined, 20_000);
			await Promise.all(
				[`${port}/api/v1/ready`, `${port + 1}/api/v1/ready`, `${port + 2}/ready`, `${port + 3}/ready`].map(p => ready(`http://127.0.0.1:${p}`)),
			);

			const person = { firstName: "Ada", lastName: "Lovelace", email: `ada.${namespace}@example.com`, password: "correct horse battery" };
			const post = (gateway: number, route: string, body: unknown) =>
				fetch(`http://127.0.0.1:${gateway}/api/v1${route}`, {
					method: "POST",
					headers: { "Content-Type": "application/json", "X-Forwarded-For": clientIp },
					body: JSON.stringify(body),
				});
			const signup = await post(port, "/auth/signup", { ...person, passwordConfirm: person.password });
			expect(signup.status).toBe(201);
			const user = (await signup.json()) as { id: string; email: string };
			userIds.push(user.id);
			const login = async () => {
				const res = await post(port + 1, "/auth/login", { email: person.email, password: person.password });
				return { status: res.status, body: (await res.json()) as { id: string } };
			};
			expect(await login()).toEqual({ status: 200, body: expect.objectContaining({ id: user.id, email: person.email }) });

			// A node that dies is started again with the same NODE_ID and DATA_DIR: the user is still there.
			const core = pids().find(p => p.node === "core")!;
			process.kill(core.pid, "SIGKILL");
			await waitFor(() => pids().filter(p => p.node === "core").length === 2 || undefined, 10_000);
			await ready(`http://127.0.0.1:${port + 2}/ready`);
			expect(output).toMatch(/core exited \(signal SIGKILL\); starting it again/);
			await waitFor(async () => ((await login()).status === 200 ? true : undefined), 15_000);

			const running = pids().filter(p => p.node !== "core" || p.pid !== core.pid);
			expect(running.map(p => p.node).sort()).toEqual(["core", "gateway-1", "gateway-2", "notifications"]);
			expect(running.every(p => alive(p.pid))).toBe(true);
			cluster.kill("SIGINT");
			expect(await exit).toBe(0);
			expect(running.filter(p => alive(p.pid))).toEqual([]);
			expect(output).toMatch(/SIGINT: stopping 4 node\(s\)/);
			for (const node of ["gateway-1", "gateway-2", "core", "notifications"]) expect(output).toContain(`${node} stopped (code 0)`);
			// Each node kept its own data under DATA_DIR.
			expect(fs.readdirSync(dataDir).sort()).toEqual(["auth-secret", "core", "gateway-1", "gateway-2", "notifications"]);
			expect(fs.readFileSync(path.join(dataDir, "core/auth/users.db"), "utf8")).toContain(person.email);
		} finally {
			if (cluster.exitCode === null) {
				cluster.kill("SIGKILL");
				for (const { pid } of pids()) if (alive(pid)) process.kill(pid, "SIGKILL");
			}
		}
	}, 120_000);
});
