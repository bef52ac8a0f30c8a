/**
 * Resilience over the real RabbitMQ and Redis. The Mint nodes are child
 * processes running the built server.js, started by the launcher `npm run
 * cluster` uses (scripts/cluster.ts), so a test can kill, cut off and
 * restart them:
 * - the wallet node is gone: the circuit breaker opens; transfers answer 503
 *   with Retry-After within the request timeout, then at once; they work
 *   again when a wallet node returns;
 * - RabbitMQ closes every connection of the nodes: they reconnect, and a
 *   signup, a transfer and their emails (durable events) work again;
 * - one of two gateways is killed under load: the other answers every request;
 * - the core node is killed (SIGKILL) under a load of transfers whose clients
 *   retry with the same Idempotency-Key, and restarts with the same NODE_ID
 *   and DATA_DIR: no cent is lost or created, every transfer is applied
 *   exactly once, nothing stays Pending or Processing, the invariants hold.
 *
 * Each test has its own namespace and its own client address (sent as
 * X-Forwarded-For from loopback, a trusted proxy, so its rate-limit keys in
 * Redis are its own), and removes its queues, exchanges and Redis keys.
 */
import { execFile, spawnSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { ServiceBroker, type BrokerOptions, type ServiceSchema } from "moleculer";
import { ALL_SERVICES, loadConfig, type ServiceName } from "../../lib/config";
import { brokerOptions } from "../../moleculer.config";
import { launchNode, type RunningNode } from "../../scripts/cluster";
import { buildMint, type BuiltMint } from "../helpers/dist";
import { RABBITMQ_URL, describeWithInfra, rabbitmqNeed, removeFromRabbitmq, removeFromRedis, tcpReachable } from "../helpers/infra";
import { waitFor } from "../helpers/mint";
import { mailsTo, startSmtp } from "../helpers/smtp";

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const run = promisify(execFile);
const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms));

const FINAL = new Set(["Completed", "Failed"]);

/** Every test's namespace starts with this file run's prefix, so one listing finds what they all left in RabbitMQ. */
const RUN = `mint-resilience-${crypto.randomUUID().slice(0, 8)}`;

/** Removes the queues and exchanges of every namespace of this run (Moleculer's and the durable events'). */
async function removeRun(): Promise<void> {
	const list = async (what: string) =>
		(await run("rabbitmqctl", [`list_${what}`, "-q", "--no-table-headers", "name"])).stdout
			.split("\n")
			.map(line => line.trim())
			.filter(name => name.startsWith(`MOL-${RUN}-`) || name.startsWith(`${RUN}-`));
	const [queues, exchanges] = await Promise.all([list("queues"), list("exchanges")]);
	await removeFromRabbitmq({ queues, exchanges });
}

/**
 * RabbitMQ closes these connections (by their Erlang pids, as `rabbitmqctl
 * list_connections pid` shows them): what `rabbitmqctl close_connection`
 * does for one, for all of them in one rabbitmqctl run (each run starts an
 * Erlang VM, about a second of CPU). Answers RabbitMQ's reply, `[ok,...]`.
 */
async function closeRabbitmqConnections(pids: string[], reason: string): Promise<string> {
	const list = pids.map(pid => JSON.stringify(pid)).join(",");
	const { stdout } = await run("rabbitmqctl", [
		"eval",
		`[rabbit_networking:close_connection(rabbit_misc:string_to_pid(P), ${JSON.stringify(reason)}) || P <- [${list}]].`,
	]);
	return stdout.trim();
}

function infraNeed(): { name: string; available: boolean } {
	const rabbitmq = rabbitmqNeed();
	const redis = new URL(REDIS_URL);
	const redisUp = tcpReachable(redis.hostname, Number(redis.port || 6379));
	// Closing connections and listing what a namespace left takes the broker's own tool.
	const ctl = rabbitmq.available && spawnSync("rabbitmqctl", ["list_connections", "-q", "name"], { stdio: "ignore", timeout: 15_000 }).status === 0;
	return { name: `${rabbitmq.name}, Redis at ${redis.host} and rabbitmqctl`, available: rabbitmq.available && redisUp && ctl };
}

interface Answer {
	status: number;
	body: any;
	headers: Headers;
	ms: number;
}

interface User {
	id: string;
	email: string;
	token: string;
}

interface MintNode {
	name: string;
	env: Record<string, string>;
	process: RunningNode;
	/** The gateway's API base, or the node's /ready probe. */
	url: string;
}

const hex = () => crypto.randomBytes(2).toString("hex");
const readyUrlOf = (node: MintNode) => (node.url.endsWith("/api/v1") ? `${node.url}/ready` : node.url);

/** One test's Mint: its nodes, an observer node in the test process, and everything they leave behind. */
class World {
	readonly namespace = `${RUN}-${crypto.randomUUID().slice(0, 8)}`;
	readonly clientIp = `2001:db8:${hex()}:${hex()}::${hex()}`;
	readonly nodes = new Map<string, MintNode>();
	readonly userIds: string[] = [];
	private readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), "mint-resilience-"));
	private readonly secret = crypto.randomBytes(36).toString("base64url");
	private readonly log: string[] = [];
	private observer?: ServiceBroker;

	constructor(private readonly serverJs: string) {}

	/** Starts a node (a child process) hosting `services`, and waits until it is up. */
	async start(name: string, services: ServiceName[], env: Record<string, string> = {}): Promise<MintNode> {
		const nodeEnv = {
			PATH: process.env.PATH ?? "",
			NODE_ENV: "test",
			NAMESPACE: this.namespace,
			NODE_ID: `${this.namespace}-${name}`,
			SERVICES: services.join(","),
			TRANSPORTER: RABBITMQ_URL,
			REDIS_URL,
			PORT: "0",
			DATA_DIR: path.join(this.dir, name),
			AUTH_SECRET: this.secret,
			JWT_KEY_BITS: "2048",
			LOG_LEVEL: "warn",
			...env,
		};
		return this.launch(name, nodeEnv);
	}

	/** Starts a node again as it was: the same NODE_ID, DATA_DIR and environment. */
	restart(name: string): Promise<MintNode> {
		return this.launch(name, this.node(name).env);
	}

	async kill(name: string): Promise<void> {
		const node = this.node(name);
		node.process.child.kill("SIGKILL");
		await node.process.exited;
	}

	node(name: string): MintNode {
		const node = this.nodes.get(name);
		if (!node) throw new Error(`no node ${name}`);
		return node;
	}

	/**
	 * Waits until every named node's /ready passes every check but those of
	 * services no node of this test hosts (a gateway asks for all five).
	 */
	async ready(...names: string[]): Promise<void> {
		const hosted = new Set([...this.nodes.values()].flatMap(node => node.env.SERVICES.split(",")));
		const isReady = async (name: string) => {
			const res = await fetch(readyUrlOf(this.node(name))).catch(() => undefined);
			const body = (await res?.json().catch(() => undefined)) as { checks?: Record<string, string> } | undefined;
			const checks = body?.checks ?? {};
			const failing = Object.entries(checks).filter(([check, state]) => state !== "ok" && !(ALL_SERVICES.includes(check as ServiceName) && !hosted.has(check)));
			return (res && Object.keys(checks).length > 0 && failing.length === 0) || undefined;
		};
		await Promise.all(
			names.map(name =>
				waitFor(() => isReady(name), 15_000).catch(() => {
					throw new Error(`${name} not ready within 15 s:\n${this.logTail()}`);
				}),
			),
		);
	}

	/** A plain broker in this process, in the test's namespace: it hears broadcasts and calls operator actions. */
	async observe(services: Partial<ServiceSchema>[] = []): Promise<ServiceBroker> {
		const broker = new ServiceBroker({
			namespace: this.namespace,
			nodeID: `${this.namespace}-observer`,
			transporter: { type: "AMQP", options: { url: RABBITMQ_URL } },
			logger: false,
		});
		for (const service of services) broker.createService(service as ServiceSchema);
		await broker.start();
		this.observer = broker;
		return broker;
	}

	/** One HTTP request to a gateway, from this test's client address. Rejects on a network error or after `timeoutMs`. */
	async send(gateway: string, method: string, route: string, opts: { token?: string; body?: unknown; key?: string; timeoutMs?: number } = {}): Promise<Answer> {
		const headers: Record<string, string> = { "X-Forwarded-For": this.clientIp };
		if (opts.body !== undefined) headers["Content-Type"] = "application/json";
		if (opts.token) headers.Authorization = `Bearer ${opts.token}`;
		if (opts.key) headers["Idempotency-Key"] = opts.key;
		const started = performance.now();
		const res = await fetch(`${this.node(gateway).url}${route}`, {
			method,
			headers,
			body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
			signal: AbortSignal.timeout(opts.timeoutMs ?? 10_000),
		});
		const text = await res.text();
		return { status: res.status, body: text ? JSON.parse(text) : undefined, headers: res.headers, ms: performance.now() - started };
	}

	async signup(gateway: string, name: string): Promise<User> {
		const email = `${name}.${this.namespace}@example.com`;
		const password = "correct horse battery";
		const res = await this.send(gateway, "POST", "/auth/signup", { body: { firstName: name, lastName: "Tester", email, password, passwordConfirm: password } });
		if (res.status !== 201) throw new Error(`signup: ${res.status} ${JSON.stringify(res.body)}`);
		const token = /access\.token=([^;]+)/.exec(res.headers.getSetCookie().join("\n"))?.[1];
		if (!token) throw new Error("signup: no access token");
		this.userIds.push(res.body.id);
		return { id: res.body.id, email, token };
	}

	balance = async (gateway: string, user: User): Promise<number> => (await this.send(gateway, "GET", "/wallet/user", { token: user.token })).body.balance;

	transfer = (gateway: string, from: User, to: User, amount: number, opts: { key?: string; timeoutMs?: number } = {}) =>
		this.send(gateway, "POST", "/transactions/transfer", { token: from.token, body: { amount, toUserId: to.id }, ...opts });

	invariants = () => this.observerBroker().call<{ ok: boolean; violations: string[]; totals: any }>("wallet.checkInvariants");

	observerBroker(): ServiceBroker {
		if (!this.observer) throw new Error("no observer");
		return this.observer;
	}

	/** Each named node's AMQP connections, as RabbitMQ knows them: found by the local ports of its process's sockets. */
	async rabbitmqConnections(names: string[]): Promise<Map<string, { pid: string; name: string }[]>> {
		const ports = new Map(names.map(name => [name, amqpPortsOf(this.node(name).process.child.pid ?? -1)]));
		const { stdout } = await run("rabbitmqctl", ["list_connections", "-q", "--no-table-headers", "pid", "peer_port", "name"]);
		const rows = stdout.split("\n").map(line => line.split("\t"));
		return new Map(
			names.map(name => [
				name,
				rows.filter(([pid, port]) => pid && ports.get(name)?.has(Number(port))).map(([pid, , connection]) => ({ pid, name: connection })),
			]),
		);
	}

	logTail(lines = 40): string {
		return this.log.slice(-lines).join("\n");
	}

	logOf(name: string): string[] {
		return this.log.filter(line => line.startsWith(`${name} | `));
	}

	/** Stops everything and removes what this test left in Redis and on disk (RabbitMQ: removeRun()). */
	async close(): Promise<void> {
		await Promise.all(
			[...this.nodes.values()].map(async node => {
				node.process.child.kill("SIGTERM");
				const timer = setTimeout(() => node.process.child.kill("SIGKILL"), 10_000);
				await node.process.exited;
				clearTimeout(timer);
			}),
		);
		await this.observer?.stop();
		await removeFromRedis(REDIS_URL, [this.namespace, this.clientIp, ...this.userIds]);
		fs.rmSync(this.dir, { recursive: true, force: true });
	}

	private async launch(name: string, env: Record<string, string>): Promise<MintNode> {
		const running = launchNode(this.serverJs, { name, services: env.SERVICES.split(",") as ServiceName[], port: 0, url: "", env }, (node, line) =>
			this.log.push(`${node} | ${line}`),
		);
		let timer: NodeJS.Timeout | undefined;
		const tooLate = new Promise<never>((_, reject) => {
			timer = setTimeout(() => reject(new Error("not up within 30 s")), 30_000);
		});
		const url = await Promise.race([running.up, tooLate])
			.catch((err: Error) => {
				running.child.kill("SIGKILL");
				throw new Error(`${name}: ${err.message}\n${this.logTail()}`);
			})
			.finally(() => clearTimeout(timer));
		const node = { name, env, process: running, url };
		this.nodes.set(name, node);
		return node;
	}
}

/** Local ports of a process's TCP connections to RabbitMQ's port, from /proc. */
function amqpPortsOf(pid: number): Set<number> {
	const amqpPort = Number(new URL(RABBITMQ_URL).port || 5672);
	const inodes = new Set<string>();
	for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
		// An fd may close between the listing and the read.
		const target = (() => {
			try {
				return fs.readlinkSync(`/proc/${pid}/fd/${fd}`, { encoding: "utf8" });
			} catch {
				return "";
			}
		})();
		const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
		if (inode) inodes.add(inode);
	}
	const ports = new Set<number>();
	for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
		for (const line of fs.readFileSync(table, "utf8").split("\n").slice(1)) {
			const fields = line.trim().split(/\s+/);
			if (fields.length < 10 || !inodes.has(fields[9])) continue;
			const port = (address: string) => Number.parseInt(address.slice(address.lastIndexOf(":") + 1), 16);
			if (port(fields[2]) === amqpPort) ports.add(port(fields[1]));
		}
	}
	return ports;
}

describe("the circuit breaker as Mint configures it", () => {
	it("takes its numbers from CIRCUIT_BREAKER_*, validated", () => {
		const tuned = {
			CIRCUIT_BREAKER_THRESHOLD: "0.25",
			CIRCUIT_BREAKER_MIN_REQUESTS: "5",
			CIRCUIT_BREAKER_WINDOW_SEC: "30",
			CIRCUIT_BREAKER_HALF_OPEN_MS: "1500",
		};
		expect(brokerOptions(loadConfig(tuned)).circuitBreaker).toMatchObject({
			enabled: true,
			threshold: 0.25,
			minRequestCount: 5,
			windowTime: 30,
			halfOpenTime: 1500,
		});
		expect(brokerOptions(loadConfig({})).circuitBreaker).toMatchObject({
			enabled: true,
			threshold: 0.5,
			minRequestCount: 20,
			windowTime: 60,
			halfOpenTime: 10_000,
		});
		for (const [name, value] of [
			["CIRCUIT_BREAKER_THRESHOLD", "0"],
			["CIRCUIT_BREAKER_THRESHOLD", "1.5"],
			["CIRCUIT_BREAKER_MIN_REQUESTS", "0"],
			["CIRCUIT_BREAKER_WINDOW_SEC", "1m"],
			["CIRCUIT_BREAKER_HALF_OPEN_MS", "10"],
		]) {
			expect(() => loadConfig({ [name]: value })).toThrow(`Invalid configuration: ${name}`);
		}
	});

	it("counts the timed-out calls to a node that went silent, and opens", async () => {
		// Two brokers over Moleculer's in-process transporter, with Mint's breaker and timeout; then the callee stops answering without a word.
		const { circuitBreaker, requestTimeout } = brokerOptions(loadConfig({ REQUEST_TIMEOUT_MS: "200", CIRCUIT_BREAKER_MIN_REQUESTS: "3" }));
		const options: BrokerOptions = {
			namespace: `breaker-${crypto.randomUUID().slice(0, 8)}`,
			transporter: "Fake",
			logger: false,
			circuitBreaker,
			requestTimeout,
		};
		const caller = new ServiceBroker({ ...options, nodeID: "caller" });
		const callee = new ServiceBroker({ ...options, nodeID: "callee" });
		callee.createService({ name: "wallet", actions: { balanceOf: () => 0 } });
		await Promise.all([caller.start(), callee.start()]);
		try {
			await caller.waitForServices("wallet", 2000);
			expect(await caller.call("wallet.balanceOf")).toBe(0);
			(callee.transit as any).tx.receive = () => undefined;
			const outcomes: string[] = [];
			for (let i = 0; i < 5; i++) outcomes.push(await caller.call("wallet.balanceOf").then(String, (err: { type: string }) => err.type));
			// 2 failures of 3 calls: over the 0.5 threshold, the breaker opens and the next calls are refused at once.
			expect(outcomes).toEqual(["REQUEST_TIMEOUT", "REQUEST_TIMEOUT", "SERVICE_NOT_AVAILABLE", "SERVICE_NOT_AVAILABLE", "SERVICE_NOT_AVAILABLE"]);
		} finally {
			await Promise.all([caller.stop(), callee.stop()]);
		}
	});
});

describeWithInfra("resilience of the cluster over RabbitMQ and Redis", infraNeed(), () => {
	let build: BuiltMint;
	let world: World;

	beforeAll(() => {
		build = buildMint("resilience");
	}, 60_000);
	afterAll(async () => {
		build.remove();
		await removeRun();
	});

	beforeEach(() => {
		world = new World(path.join(build.dist, "server.js"));
	});
	afterEach(() => world.close(), 60_000);

	it("opens the circuit breaker when the wallet node is gone: 503 + Retry-After within the request timeout, then at once, and recovers when it returns", async () => {
		// Long enough for a signup (Argon2 and the rest) on a loaded 2-core machine; the bounds below are relative to it.
		const REQUEST_TIMEOUT_MS = 3000;
		const HALF_OPEN_MS = 2500;
		const opened: { nodeID: string; action: string }[] = [];
		const tuning = { REQUEST_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS), CIRCUIT_BREAKER_MIN_REQUESTS: "4", CIRCUIT_BREAKER_HALF_OPEN_MS: String(HALF_OPEN_MS) };
		await Promise.all([
			world.start("front", ["api", "auth", "transactions"], tuning),
			world.start("wallet", ["wallet"], tuning),
			world.observe([{ name: "breaker-watch", events: { "$circuit-breaker.opened": (ctx: any) => void opened.push(ctx.params) } }]),
		]);
		await world.ready("front", "wallet");
		const alice = await world.signup("front", "alice");
		const bob = await world.signup("front", "bob");
		expect((await world.send("front", "POST", "/transactions/topup", { token: alice.token, body: { amount: 100 } })).status).toBe(201);
		expect((await world.transfer("front", alice, bob, 1)).body.status).toBe("Completed");

		await world.kill("wallet");
		// Closed, the breaker lets calls wait on the dead node: each answer comes when the request timeout ends.
		const waited = await Promise.all(Array.from({ length: 6 }, () => world.transfer("front", alice, bob, 1)));
		for (const res of waited) {
			expect([res.status, res.body.error.status, Number(res.headers.get("retry-after")) >= 1]).toEqual([503, 503, true]);
			expect(res.ms).toBeLessThan(REQUEST_TIMEOUT_MS + 1000);
		}
		await waitFor(() => opened.some(e => e.action === "wallet.balanceOf" && e.nodeID === `${world.namespace}-wallet`) || undefined, 2000).catch(() => {
			throw new Error(`no breaker opened on wallet.balanceOf; opened: ${JSON.stringify(opened)}\n${world.logTail()}`);
		});
		// Open: refused at once, nothing waits on the dead node.
		for (let i = 0; i < 5; i++) {
			const res = await world.transfer("front", alice, bob, 1);
			expect([res.status, Number(res.headers.get("retry-after")) >= 1]).toEqual([503, true]);
			expect(res.ms).toBeLessThan(300);
		}

		await world.restart("wallet");
		const back = Date.now();
		// A client retrying one transfer under one key: it goes through once the breaker lets a call try the new node.
		let answer = await world.transfer("front", alice, bob, 1, { key: "after-the-outage" });
		while (answer.status === 503 && Date.now() - back < HALF_OPEN_MS + 5000) {
			await sleep(100);
			answer = await world.transfer("front", alice, bob, 1, { key: "after-the-outage" });
		}
		expect(answer.body.status).toBe("Completed");
		expect([200, 201]).toContain(answer.status);
		expect(Date.now() - back).toBeLessThan(HALF_OPEN_MS + 2500);
		// Only the two transfers that succeeded moved money.
		expect([await world.balance("front", alice), await world.balance("front", bob)]).toEqual([98, 2]);
		expect((await world.invariants()).violations).toEqual([]);
	}, 60_000);

	it("reconnects after RabbitMQ closes every connection of the nodes: a signup, a transfer and their emails work again", async () => {
		const smtp = await startSmtp();
		try {
			// While cut off, the calls the gateway's /ready makes fail and open its breakers: they let a call try again after 1 s, not 10.
			const breaker = { CIRCUIT_BREAKER_HALF_OPEN_MS: "1000" };
			await Promise.all([
				world.start("gateway", ["api"], breaker),
				world.start("core", ["auth", "wallet", "transactions"], breaker),
				world.start("notifications", ["notifications"], { ...breaker, SMTP_URL: smtp.url, MAIL_POLL_MS: "50" }),
			]);
			await world.ready("gateway", "core", "notifications");
			const alice = await world.signup("gateway", "alice");
			await waitFor(() => mailsTo(smtp, alice.email).find(m => m.subject.startsWith("Welcome")), 10_000);
			expect((await world.send("gateway", "POST", "/transactions/topup", { token: alice.token, body: { amount: 20 } })).status).toBe(201);

			// This test's connections only: those whose local port belongs to one of its node processes.
			const names = ["gateway", "core", "notifications"];
			const before = await world.rabbitmqConnections(names);
			const counts = (connections: Map<string, unknown[]>) => Object.fromEntries(names.map(name => [name, connections.get(name)?.length]));
			// Moleculer's transporter on each node, and at least the durable events' (lib/durable-events.ts) on the nodes that publish or consume them.
			expect(counts(before)).toEqual({ gateway: expect.any(Number), core: expect.any(Number), notifications: expect.any(Number) });
			expect([before.get("gateway")!.length >= 1, before.get("core")!.length >= 2, before.get("notifications")!.length >= 2]).toEqual([true, true, true]);
			const pids = [...before.values()].flat().map(connection => connection.pid);
			expect(await closeRabbitmqConnections(pids, "resilience test")).toBe(`[${pids.map(() => "ok").join(",")}]`);

			// Each node notices, connects again (Moleculer retries after 5 s) and is ready, on new connections, as many as before.
			await world.ready("gateway", "core", "notifications");
			const closed = new Set([...before.values()].flat().map(c => c.name));
			const reconnected = (now: Map<string, { name: string }[]>) =>
				JSON.stringify(counts(now)) === JSON.stringify(counts(before)) && ![...now.values()].flat().some(c => closed.has(c.name));
			let after = await world.rabbitmqConnections(names);
			for (let i = 0; i < 20 && !reconnected(after); i++) {
				await sleep(500);
				after = await world.rabbitmqConnections(names);
			}
			expect([counts(after), [...after.values()].flat().filter(c => closed.has(c.name))]).toEqual([counts(before), []]);
			// What they logged: Moleculer's transporter lost its connection on every node, the durable events' on core and notifications.
			const logged = (name: string, text: string) => world.logOf(name).some(line => line.includes(text));
			expect(names.map(name => [name, logged(name, "AMQP connection is closed"), logged(name, "durable events: ")])).toEqual([
				["gateway", true, false],
				["core", true, true],
				["notifications", true, true],
			]);

			const bob = await world.signup("gateway", "bob");
			const sent = await world.transfer("gateway", alice, bob, 5);
			expect([sent.status, sent.body.status]).toEqual([201, "Completed"]);
			expect([await world.balance("gateway", alice), await world.balance("gateway", bob)]).toEqual([15, 5]);
			// The durable events still reach the notifications node: the welcome and both receipts arrive.
			await waitFor(() => mailsTo(smtp, bob.email).find(m => m.subject.startsWith("Welcome")), 10_000);
			await waitFor(() => mailsTo(smtp, bob.email).find(m => m.subject.startsWith("You received 5.00 USD")), 10_000);
			await waitFor(() => mailsTo(smtp, alice.email).find(m => m.subject.startsWith("You sent 5.00 USD")), 10_000);
		} finally {
			await smtp.close();
		}
	}, 60_000);

	it("keeps serving through the other gateway when one of two is killed under load", async () => {
		await Promise.all([
			world.start("gateway-1", ["api"]),
			world.start("gateway-2", ["api"]),
			world.start("core", ["auth", "wallet", "transactions"]),
			world.observe(),
		]);
		await world.ready("gateway-1", "gateway-2", "core");
		const alice = await world.signup("gateway-1", "alice");
		const bob = await world.signup("gateway-2", "bob");
		expect((await world.send("gateway-2", "POST", "/transactions/topup", { token: alice.token, body: { amount: 100 } })).status).toBe(201);

		const TOTAL = 240;
		const KILL_AFTER = 60;
		const results: { gateway: string; afterKill: boolean; ok: boolean; outcome: string }[] = [];
		let next = 0;
		let killed: Promise<void> | undefined;
		let killedAt = Number.POSITIVE_INFINITY;
		const worker = async () => {
			while (next < TOTAL) {
				const i = next++;
				// Alternate between the gateways, and between a read and a transfer.
				const gateway = i % 2 === 0 ? "gateway-1" : "gateway-2";
				const startedAt = Date.now();
				const request =
					Math.floor(i / 2) % 2 === 0
						? world.send(gateway, "GET", "/wallet/user", { token: bob.token, timeoutMs: 5000 })
						: world.transfer(gateway, alice, bob, 0.01, { timeoutMs: 5000 });
				const outcome = await request.then(
					res => ({ ok: res.status === 200 || res.status === 201, outcome: String(res.status) }),
					(err: Error) => ({ ok: false, outcome: (err.cause as { code?: string })?.code ?? err.name }),
				);
				results.push({ gateway, afterKill: startedAt > killedAt, ...outcome });
				if (results.length === KILL_AFTER) {
					killedAt = Date.now();
					killed = world.kill("gateway-1");
				}
			}
		};
		await Promise.all(Array.from({ length: 4 }, worker));
		await killed;

		const survivor = results.filter(r => r.gateway === "gateway-2");
		expect(survivor.filter(r => !r.ok)).toEqual([]);
		expect(survivor.filter(r => r.afterKill).length).toBeGreaterThanOrEqual(60);
		// The kill came in the middle of the load: what was sent to gateway 1 afterwards failed to connect.
		const toKilled = results.filter(r => r.gateway === "gateway-1" && r.afterKill);
		expect(toKilled.length).toBeGreaterThanOrEqual(60);
		expect(toKilled.filter(r => r.ok)).toEqual([]);
		// Transfers caught in the kill moved money or not, but never created or lost any.
		const cents = async (user: User) => Math.round((await world.balance("gateway-2", user)) * 100);
		expect((await cents(alice)) + (await cents(bob))).toBe(100_00);
		expect((await world.invariants()).violations).toEqual([]);
	}, 60_000);

	it("loses and creates no cent when the core node is killed under retried transfers and restarts with the same NODE_ID", async () => {
		const core = { TX_STUCK_AFTER_MS: "1000", TX_SWEEP_INTERVAL_MS: "200", TX_SYNC_WAIT_MS: "1000" };
		const gateway = { REQUEST_TIMEOUT_MS: "2500", CIRCUIT_BREAKER_HALF_OPEN_MS: "500" };
		await Promise.all([world.start("gateway", ["api"], gateway), world.start("core", ["auth", "wallet", "transactions"], core), world.observe()]);
		await world.ready("gateway", "core");
		const users = await Promise.all(["ann", "ben", "cat", "dan"].map(name => world.signup("gateway", name)));
		const TOP_UP = 30;
		for (const user of users)
			expect((await world.send("gateway", "POST", "/transactions/topup", { token: user.token, body: { amount: TOP_UP } })).status).toBe(201);

		/** What a careful client does: the same Idempotency-Key until a final answer, polling a transfer still in flight. */
		const settle = async (from: User, to: User, amount: number, key: string) => {
			const deadline = Date.now() + 20_000;
			for (let attempts = 1; Date.now() < deadline; attempts++) {
				const res = await world.transfer("gateway", from, to, amount, { key, timeoutMs: 5000 }).catch(() => undefined);
				if (res && [200, 201, 202].includes(res.status)) {
					let tx = res.body;
					while (!FINAL.has(tx.status) && Date.now() < deadline) {
						await sleep(100);
						const poll = await world.send("gateway", "GET", `/transactions/${tx.id}`, { token: from.token, timeoutMs: 5000 }).catch(() => undefined);
						if (poll?.status === 200) tx = poll.body;
					}
					return { id: tx.id as string | undefined, status: tx.status as string, amount, from, to, attempts };
				}
				// Refused at request time: no transaction was made.
				if (res?.status === 422 && res.body.error.message === "Insufficient funds") return { id: undefined, status: "Refused", amount, from, to, attempts };
				if (res && res.status < 500) throw new Error(`transfer ${key}: ${res.status} ${JSON.stringify(res.body)}`);
				await sleep(150);
			}
			throw new Error(`transfer ${key} unsettled after 20 s`);
		};

		const PER_CLIENT = 25;
		const KILL_AFTER = 30;
		const settled: Awaited<ReturnType<typeof settle>>[] = [];
		let outage: Promise<unknown> | undefined;
		const client = async (from: User, index: number) => {
			for (let k = 0; k < PER_CLIENT; k++) {
				const to = users[(index + 1 + (k % 3)) % users.length];
				const amount = (1 + ((index * 31 + k * 17) % 250)) / 100;
				settled.push(await settle(from, to, amount, `${world.namespace}-${index}-${k}`));
				if (settled.length === KILL_AFTER) outage = world.kill("core").then(() => world.restart("core"));
			}
		};
		await Promise.all(users.map(client));
		await outage;
		// The kill came in the middle of the load: some transfers took more than one attempt.
		expect(settled.filter(s => s.attempts > 1).length).toBeGreaterThan(0);

		// The sweeper finishes what the kill left in flight: nothing stays Pending or Processing.
		const facts = await waitFor(async () => {
			const now = await world.observerBroker().call<{ transactions: any[] }>("transactions.ledgerFacts");
			return now.transactions.every(tx => FINAL.has(tx.status)) ? now : undefined;
		}, 15_000);
		const report = await world.invariants();
		expect(report.violations).toEqual([]);
		expect([report.totals.balancesMinor, report.totals.completedTopUpsMinor]).toEqual([users.length * TOP_UP * 100, users.length * TOP_UP * 100]);

		// One transaction per transfer the clients made, in the state they saw; no more.
		const made = settled.filter(s => s.id);
		const transfers = facts.transactions.filter(tx => tx.type === "Transfer");
		expect(transfers.length).toBe(made.length);
		const stored = new Map(transfers.map(tx => [tx.id, tx.status]));
		expect(made.filter(s => stored.get(s.id!) !== s.status)).toEqual([]);
		// Each balance is the top-up plus exactly what the transfers the clients saw complete moved.
		const expected = new Map(users.map(u => [u.id, TOP_UP * 100]));
		for (const s of made.filter(s => s.status === "Completed")) {
			const cents = Math.round(s.amount * 100);
			expected.set(s.from.id, expected.get(s.from.id)! - cents);
			expected.set(s.to.id, expected.get(s.to.id)! + cents);
		}
		const balances = await Promise.all(users.map(async u => Math.round((await world.balance("gateway", u)) * 100)));
		expect(balances).toEqual(users.map(u => expected.get(u.id)));
	}, 90_000);
});
