/**
 * npm run bench: side by side in one run, on this machine,
 *   - the ceiling: a raw node:http hello-world,
 *   - GET /api/v1/wallet/user and POST /api/v1/transactions/transfer,
 *     on the embedded default (one process) and on a cluster over RabbitMQ
 *     (a gateway node, a core node, a notifications node),
 * printing requests/s, p50/p99 latency and the ratio to the ceiling, then
 * checking that money was conserved under the load. Every server runs in its
 * own process; the load comes from this one (autocannon).
 *
 * Then a read-heavy mix (GET /wallet/user and GET /transactions for every
 * user, one transfer in TRANSFER_EVERY requests, `BENCH_TRANSFER_EVERY`, default 100) and the cache's hit rate
 * over it, from the node's own counters (mint_cache_lookups_total on its
 * Prometheus endpoint) before and after. The cluster's cache is Redis
 * (REDIS_URL) when one answers at 127.0.0.1:6379.
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import amqp from "amqplib";
import autocannon from "autocannon";
import Redis from "ioredis";
import { DURABLE_SUBSCRIPTIONS } from "../contracts/events";

const ROOT = path.resolve(__dirname, "../..");
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const USERS = 20;
const AMQP_URL = process.env.AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672";
const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
/** The read-heavy mix: one transfer in this many requests, the rest reads. */
const TRANSFER_EVERY = Number(process.env.BENCH_TRANSFER_EVERY ?? 100);

interface Row {
	name: string;
	rps: number;
	p50: number;
	p99: number;
	errors: number;
	non2xx: number;
}

const children: ChildProcess[] = [];

function spawnNode(args: string[], env: Record<string, string>, readyLine: RegExp): Promise<{ child: ChildProcess; match: RegExpExecArray }> {
	const child = spawn(process.execPath, args, { cwd: ROOT, env: { PATH: process.env.PATH ?? "", ...env } });
	children.push(child);
	let output = "";
	return new Promise((resolve, reject) => {
		const timer = setTimeout(() => reject(new Error(`not ready in 60 s:\n${output.slice(-2000)}`)), 60_000);
		const onData = (chunk: Buffer) => {
			output += chunk.toString();
			const match = readyLine.exec(output);
			if (match) {
				clearTimeout(timer);
				resolve({ child, match });
			}
		};
		child.stdout!.on("data", onData);
		child.stderr!.on("data", onData);
		child.on("exit", code => reject(new Error(`exited ${code}:\n${output.slice(-2000)}`)));
	});
}

async function stop(child: ChildProcess) {
	if (child.exitCode !== null) return;
	const exited = new Promise(resolve => child.once("exit", resolve));
	child.kill("SIGTERM");
	await exited;
}

function load(name: string, url: string, opts: Partial<autocannon.Options>): Promise<Row> {
	return new Promise((resolve, reject) => {
		autocannon({ url, connections: CONNECTIONS, duration: SECONDS, ...opts } as autocannon.Options, (err, result) => {
			if (err) return reject(err);
			resolve({
				name,
				rps: result.requests.average,
				p50: result.latency.p50,
				p99: result.latency.p99,
				errors: result.errors + result.timeouts,
				non2xx: result.non2xx,
			});
		});
	});
}

async function call(base: string, method: string, route: string, body?: object, token?: string) {
	const res = await fetch(`${base}${route}`, {
		method,
		headers: { "Content-Type": "application/json", ...(token ? { Authorization: `Bearer ${token}` } : {}) },
		body: body ? JSON.stringify(body) : undefined,
	});
	const text = await res.text();
	return { status: res.status, body: text ? JSON.parse(text) : null, cookie: res.headers.get("set-cookie") ?? "" };
}

interface BenchUser {
	id: string;
	token: string;
}

async function seed(base: string): Promise<{ users: BenchUser[]; toppedUpMinor: number }> {
	const users: BenchUser[] = [];
	for (let i = 0; i < USERS; i++) {
		const email = `bench-${i}-${Date.now()}@example.com`;
		const res = await call(base, "POST", "/api/v1/auth/signup", {
			firstName: "Bench",
			lastName: "User",
			email,
			password: "bench password",
			passwordConfirm: "bench password",
		});
		if (res.status !== 201) throw new Error(`signup: ${res.status} ${JSON.stringify(res.body)}`);
		const token = /access\.token=([^;]+)/.exec(res.cookie)?.[1];
		if (!token) throw new Error("no access token cookie");
		users.push({ id: res.body.id, token });
		const topUp = await call(base, "POST", "/api/v1/transactions/topup", { amount: 1000 }, token);
		if (topUp.status !== 201) throw new Error(`topup: ${topUp.status}`);
	}
	return { users, toppedUpMinor: USERS * 100_000 };
}

async function conserved(base: string, users: BenchUser[], toppedUpMinor: number): Promise<string> {
	let total = 0;
	for (const user of users) {
		const wallet = await call(base, "GET", "/api/v1/wallet/user", undefined, user.token);
		total += Math.round(wallet.body.balance * 100);
		if (wallet.body.balance < 0) return `NEGATIVE balance for ${user.id}`;
	}
	return total === toppedUpMinor ? `conserved (${total / 100} in ${users.length} wallets)` : `NOT CONSERVED: ${total} != ${toppedUpMinor}`;
}

async function mintScenarios(label: string, base: string, metricsUrl: string): Promise<{ rows: Row[]; check: string; hitRate: string }> {
	const { users, toppedUpMinor } = await seed(base);
	const reader = users[0];
	const rows = [await load(`${label}: GET /wallet/user`, `${base}/api/v1/wallet/user`, { headers: { Authorization: `Bearer ${reader.token}` } })];
	let n = 0;
	rows.push(
		await load(`${label}: POST /transactions/transfer`, base, {
			requests: [
				{
					method: "POST",
					path: "/api/v1/transactions/transfer",
					setupRequest: (req: any) => {
						n++;
						const from = users[n % USERS];
						const to = users[(n + 1 + (n % (USERS - 1))) % USERS];
						return {
							...req,
							headers: { "Content-Type": "application/json", Authorization: `Bearer ${from.token}` },
							body: JSON.stringify({ amount: 0.01, toUserId: to.id }),
						};
					},
				},
			],
		}),
	);
	const before = await cacheLookups(metricsUrl);
	rows.push(await readHeavyMix(`${label}: read-heavy mix (1 transfer in ${TRANSFER_EVERY})`, base, users));
	const hitRate = hitRateOf(before, await cacheLookups(metricsUrl));
	await new Promise(r => setTimeout(r, 1000)); // let any 202s finish
	return { rows, check: await conserved(base, users, toppedUpMinor), hitRate: `${label}: ${hitRate}` };
}

/** GET /wallet/user and GET /transactions for every user in turn, and now and then a transfer between two of them. */
function readHeavyMix(name: string, base: string, users: BenchUser[]): Promise<Row> {
	let n = 0;
	return load(name, base, {
		requests: [
			{
				setupRequest: (req: any) => {
					n++;
					const user = users[n % USERS];
					if (n % TRANSFER_EVERY === 0) {
						// The k-th transfer goes from user k to another: every user sends and receives in turn.
						const k = n / TRANSFER_EVERY;
						const [from, to] = [users[k % USERS], users[(k + 1 + (k % (USERS - 1))) % USERS]];
						return {
							...req,
							method: "POST",
							path: "/api/v1/transactions/transfer",
							headers: { "Content-Type": "application/json", Authorization: `Bearer ${from.token}` },
							body: JSON.stringify({ amount: 0.01, toUserId: to.id }),
						};
					}
					const path = Math.floor(n / USERS) % 2 ? "/api/v1/transactions" : "/api/v1/wallet/user";
					return { ...req, method: "GET", path, headers: { Authorization: `Bearer ${user.token}` }, body: undefined };
				},
			},
		],
	});
}

/** The cache's lookups by action and result, as the node's Prometheus endpoint shows them. */
async function cacheLookups(metricsUrl: string): Promise<Map<string, number>> {
	const text = await (await fetch(metricsUrl)).text();
	const counts = new Map<string, number>();
	for (const match of text.matchAll(/^mint_cache_lookups_total\{([^}]*)\} (\d+)/gm)) {
		const labels = Object.fromEntries([...match[1].matchAll(/(\w+)="([^"]*)"/g)].map(m => [m[1], m[2]]));
		counts.set(`${labels.action} ${labels.result}`, Number(match[2]));
	}
	return counts;
}

/** Hits / lookups between two readings, overall and per action; coalesced lookups (a concurrent miss's result shared) apart. */
function hitRateOf(before: Map<string, number>, after: Map<string, number>): string {
	const delta = new Map<string, Record<string, number>>();
	for (const [key, value] of after) {
		const [action, result] = key.split(" ");
		const row = delta.get(action) ?? {};
		row[result] = (row[result] ?? 0) + value - (before.get(key) ?? 0);
		delta.set(action, row);
	}
	const rate = (r: Record<string, number>) => {
		const total = (r.hit ?? 0) + (r.miss ?? 0) + (r.coalesced ?? 0) + (r.unavailable ?? 0);
		if (total === 0) return "n/a";
		const pct = (n = 0) => `${((n / total) * 100).toFixed(1)}%`;
		return `${pct(r.hit)} of ${total} (+${pct(r.coalesced)} coalesced)`;
	};
	const all: Record<string, number> = {};
	for (const r of delta.values()) for (const [k, v] of Object.entries(r)) all[k] = (all[k] ?? 0) + v;
	const parts = [...delta].filter(([, r]) => Object.values(r).some(v => v > 0)).map(([action, r]) => `${action} ${rate(r)}`);
	return `cache hit rate ${rate(all)} lookups (${parts.join(", ")})`;
}

async function freePort(): Promise<number> {
	const server = net.createServer();
	await new Promise<void>(resolve => server.listen(0, "127.0.0.1", resolve));
	const { port } = server.address() as net.AddressInfo;
	await new Promise(resolve => server.close(resolve));
	return port;
}

async function redisAnswers(): Promise<boolean> {
	const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
	try {
		await redis.connect();
		return (await redis.ping()) === "PONG";
	} catch {
		return false;
	} finally {
		redis.disconnect();
	}
}

/** The run's cache entries and its users' signup counts: leave nothing in the Redis. */
async function removeCacheKeys(namespace: string) {
	const redis = new Redis(REDIS_URL);
	const keys = [...(await redis.keys(`${namespace}:cache-*`)), ...(await redis.keys("mint:signupsPerEmail:bench-*@example.com"))];
	if (keys.length) await redis.del(...keys);
	await redis.quit();
}

async function main() {
	const build = spawn(process.execPath, [path.join(ROOT, "node_modules/typescript/bin/tsc"), "-p", ROOT], { stdio: "inherit" });
	await new Promise(resolve => build.on("exit", resolve));
	const rows: Row[] = [];
	const checks: string[] = [];
	const hitRates: string[] = [];

	// The ceiling.
	const raw = await spawnNode(
		["-e", `require("http").createServer((q,s)=>s.end("hello")).listen(0,"127.0.0.1",function(){console.log("port "+this.address().port)})`],
		{},
		/port (\d+)/,
	);
	rows.push(await load("ceiling: raw node:http hello-world", `http://127.0.0.1:${raw.match[1]}/`, {}));
	await stop(raw.child);

	const common = {
		JWT_KEY_BITS: "2048",
		LOG_LEVEL: "warn",
		PORT: "0",
		COOKIE_SECURE: "false",
		LOGIN_MAX_FAILURES_PER_IP: "100000",
		SIGNUPS_PER_IP_HOUR: "100000",
	};
	const dirs: string[] = [];
	const tmp = () => {
		const d = fs.mkdtempSync(path.join(os.tmpdir(), "mint-bench-"));
		dirs.push(d);
		return d;
	};
	try {
		// The embedded default.
		const embeddedMetrics = await freePort();
		const embedded = await spawnNode(
			["dist/server.js"],
			{ ...common, DATA_DIR: tmp(), METRICS_PORT: String(embeddedMetrics) },
			/Mint is up: (http:\/\/\S+)\/api\/v1/,
		);
		const e = await mintScenarios("embedded", embedded.match[1], `http://127.0.0.1:${embeddedMetrics}/metrics`);
		rows.push(...e.rows);
		checks.push(`embedded: ${e.check}`);
		hitRates.push(e.hitRate);
		await stop(embedded.child);

		// A cluster over RabbitMQ.
		const namespace = `mint-bench-${process.pid}`;
		const withRedis = await redisAnswers();
		const cluster = { ...common, TRANSPORTER: AMQP_URL, NAMESPACE: namespace, ...(withRedis ? { REDIS_URL } : {}) };
		// The cached actions run on the core node: its counters are the cache's.
		const coreMetrics = await freePort();
		const core = await spawnNode(
			["dist/server.js"],
			{ ...cluster, SERVICES: "auth,wallet,transactions", DATA_DIR: tmp(), METRICS_PORT: String(coreMetrics) },
			/Mint node is up/,
		);
		const notifications = await spawnNode(["dist/server.js"], { ...cluster, SERVICES: "notifications", DATA_DIR: tmp() }, /Mint node is up/);
		const gateway = await spawnNode(["dist/server.js"], { ...cluster, SERVICES: "api", DATA_DIR: tmp() }, /Mint is up: (http:\/\/\S+)\/api\/v1/);
		await waitReady(gateway.match[1]);
		const c = await mintScenarios(withRedis ? "cluster+Redis" : "cluster", gateway.match[1], `http://127.0.0.1:${coreMetrics}/metrics`);
		rows.push(...c.rows);
		checks.push(`cluster: ${c.check}`);
		hitRates.push(withRedis ? c.hitRate : `${c.hitRate} (no Redis: balances and transactions are not cached on a cluster node)`);
		for (const p of [gateway, notifications, core]) await stop(p.child);
		await removeDurableTopology(namespace);
		if (withRedis) await removeCacheKeys(namespace);
	} finally {
		for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
		for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
	}

	const ceiling = rows[0].rps;
	console.log(`\nnpm run bench: ${SECONDS} s per row, ${CONNECTIONS} connections, ${os.cpus().length} cores, Node ${process.version}\n`);
	console.log("| scenario | req/s | p50 ms | p99 ms | vs ceiling | errors | non-2xx |");
	console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
	for (const r of rows) {
		console.log(`| ${r.name} | ${Math.round(r.rps)} | ${r.p50} | ${r.p99} | ${((r.rps / ceiling) * 100).toFixed(1)}% | ${r.errors} | ${r.non2xx} |`);
	}
	console.log(`\nmoney after the load: ${checks.join("; ")}`);
	for (const line of hitRates) console.log(`read-heavy mix, ${line}`);
	if (checks.some(c => !c.includes("conserved ("))) process.exitCode = 1;
}

/** The run's durable queues and exchange outlive its nodes: leave nothing in the RabbitMQ. */
async function removeDurableTopology(namespace: string) {
	const connection = await amqp.connect(AMQP_URL);
	const channel = await connection.createChannel();
	for (const group of Object.keys(DURABLE_SUBSCRIPTIONS)) {
		for (const suffix of ["", ".retry", ".dead"]) await channel.deleteQueue(`${namespace}.${group}${suffix}`);
	}
	await channel.deleteExchange(`${namespace}.events`);
	await connection.close();
}

/** The gateway is up before the other nodes are discovered: wait until /ready says so. */
async function waitReady(base: string) {
	for (let i = 0; i < 100; i++) {
		const res = await fetch(`${base}/ready`).catch(() => undefined);
		if (res?.status === 200) return;
		await new Promise(r => setTimeout(r, 200));
	}
	throw new Error("cluster not ready");
}

main().catch(err => {
	console.error(err);
	for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
	process.exit(1);
});
