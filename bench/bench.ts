/**
 * npm run bench: side by side in one run, on this machine,
 *   - the ceiling: a raw node:http hello-world,
 *   - GET /api/v1/wallet/user, GET /api/v1/transactions (one user's lists,
 *     by type and status, 5,000 of them: mostly cache misses) and POST
 *     /api/v1/transactions/transfer,
 *     on the embedded default (one process) and on a cluster over RabbitMQ
 *     (a gateway node, a core node, a notifications node),
 * printing requests/s, p50/p99 latency and the ratio to the ceiling, then
 * checking that money was conserved under the load. Each Mint node first
 * serves a second of reads unmeasured (BENCH_WARMUP_SECONDS): a node just
 * started runs cold code. Every server runs in its
 * own process; the load comes from this one (autocannon).
 *
 * Transfers run twice: closed loop (as fast as the connections go) and open
 * loop at a fixed rate (BENCH_FIXED_RATE, default 300/s), whose p99 is the
 * latency at a load the node carries.
 *
 * Then a read-heavy mix (GET /wallet/user and GET /transactions for every
 * user, one transfer in TRANSFER_EVERY requests, `BENCH_TRANSFER_EVERY`, default 100) and the cache's hit rate
 * over it. The cluster's cache is Redis (REDIS_URL) when one answers at 127.0.0.1:6379.
 *
 * What each request costs, counted by the nodes themselves: every node serves
 * its Prometheus metrics (METRICS_PORT), read before each row and again once
 * the work the row started has settled (emails after transfers), summed over
 * the nodes and divided by the requests the gateway served (runs of its
 * `api.rest` action, those in flight when the load stopped included):
 *   - store operations (mint_store_operations_total, both store adapters),
 *   - action calls (moleculer_request_total{type="local"}: every action run,
 *     the gateway's own `api.rest` included) and, of them, remote calls
 *     (type="remote": sent to another node over the transporter),
 *   - transporter packets published (moleculer_transit_publish_total:
 *     requests, responses, events; RabbitMQ's durable-event publishes are
 *     not among them).
 * And the servers' CPU per request: their processes' user and system time
 * (/proc/<pid>/stat, every thread; the main threads apart from
 * /proc/<pid>/task/<pid>/stat) over the row and its aftermath, divided the
 * same way; the ceiling's server too, which bounds what a request can cost.
 * Beside them: the data directories' growth per 10,000 completed transfers
 * (mint_transactions_total{type="Transfer",status="Completed"}), and each
 * server's resident memory after its rows (/proc/<pid>/status, Linux).
 *
 * BENCH_SMOKE=1: the same rows, small and short (1 s, 8 connections, 4 users,
 * one transfer in 10 in the mix), for CI (test/process/bench-smoke.test.ts).
 * BENCH_SECONDS, BENCH_CONNECTIONS and BENCH_TRANSFER_EVERY still win.
 * BENCH_WORLD=<transactions>: the embedded rows once more on a large world
 * (bench/world.ts: a tenth as many users, one of them a party to a tenth of
 * the transactions), with its generation, start-up time and RSS;
 * BENCH_WORLD_HEAP_MB gives that node a larger V8 heap (NeDB holds it all).
 * The embedded rows run on both embedded engines: NeDB (the default) and
 * SQLite (EMBEDDED_STORE=sqlite); BENCH_EMBEDDED=nedb or sqlite: that one alone.
 * BENCH_WORLD_STORE=sqlite: the world is generated as an export folder and
 * imported into SQLite files (npm run data -- import), its node started on them.
 * BENCH_ONLY=embedded or BENCH_ONLY=cluster: that scenario alone (beside the ceiling).
 * BENCH_CPU_PROF=<dir>: every Mint node runs with --cpu-prof and writes its
 * profile there when it stops (open it in Chrome DevTools or speedscope).
 * `npm run bench` builds first; `node dist/bench/bench.js` runs what is built.
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
import { loadConfig } from "../lib/config";
import { nodeOptions } from "../lib/node-options";
import { importData } from "../scripts/data";
import { generateWorld, HEAVY_EMAIL, HEAVY_PASSWORD, type World } from "./world";

const ROOT = path.resolve(__dirname, "../..");
const SMOKE = process.env.BENCH_SMOKE === "1";
const SECONDS = Number(process.env.BENCH_SECONDS ?? (SMOKE ? 1 : 5));
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? (SMOKE ? 8 : 32));
const USERS = SMOKE ? 4 : 20;
const AMQP_URL = process.env.AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672";
const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const ONLY = process.env.BENCH_ONLY;
if (ONLY !== undefined && ONLY !== "embedded" && ONLY !== "cluster") throw new Error("BENCH_ONLY is embedded or cluster");
const CPU_PROF = process.env.BENCH_CPU_PROF ? path.resolve(process.env.BENCH_CPU_PROF) : undefined;
/** BENCH_WORLD=<transactions>: the embedded rows again on a world of that many transactions (bench/world.ts); 0: none. */
const WORLD = Number(process.env.BENCH_WORLD ?? 0);
/** The embedded scenarios: the default engine, then SQLite (BENCH_EMBEDDED=nedb or sqlite: that one alone). */
const EMBEDDED_ENGINES = (
	[
		["embedded", "nedb"],
		["embedded, SQLite", "sqlite"],
	] as const
).filter(([, engine]) => (process.env.BENCH_EMBEDDED ?? engine) === engine);
/** BENCH_WORLD_STORE=sqlite: the world is generated as an export and imported into SQLite files (npm run data's import) before its node starts on them. */
const WORLD_STORE = process.env.BENCH_WORLD_STORE === "sqlite" ? "sqlite" : "nedb";
/** How long each node serves reads, unmeasured, before its first row (BENCH_WARMUP_SECONDS). */
const WARMUP_SECONDS = Number(process.env.BENCH_WARMUP_SECONDS ?? (SMOKE ? 0.2 : 1));
/** The open-loop transfer row's fixed rate (autocannon's overallRate, -R), requests/s. */
const FIXED_RATE = Number(process.env.BENCH_FIXED_RATE ?? (SMOKE ? 50 : 300));
/** The read-heavy mix: one transfer in this many requests, the rest reads. */
const TRANSFER_EVERY = Number(process.env.BENCH_TRANSFER_EVERY ?? (SMOKE ? 10 : 100));
/** How long a row's aftermath (emails, outbox) may take to settle before its counters are read anyway. */
const SETTLE_MS = SMOKE ? 3_000 : 30_000;
/** How long nothing must move for a row's aftermath to count as done (see settledCounters). */
const QUIET_MS = SMOKE ? 600 : 1_500;

/** What a request cost, summed over the scenario's nodes, for one row. */
interface Cost {
	/** Requests the gateway served (runs of its `api.rest` action), those still in flight when the load stopped included. */
	requests: number;
	storeOps: number;
	actionCalls: number;
	remoteCalls: number;
	packets: number;
	/** Transfers that reached Completed during the row. */
	transfers: number;
	/** Growth of the data directories: apparent bytes (as `du -b`) and disk usage (as `du`). */
	bytes: number;
	diskBytes: number;
	/** The counters' deltas by key (`mint_store_operations_total auth users findOne`...), and the data's growth by file or kind. */
	delta: Counts;
	growth: Map<string, number>;
	/** How long the row's aftermath (emails...) took once the load stopped. */
	settled: string;
	/** CPU time the scenario's servers used over the row and its aftermath, ms (all threads; and the main threads alone); NaN without /proc. */
	cpuMs: number;
	mainCpuMs: number;
}

interface Row {
	name: string;
	rps: number;
	p50: number;
	p99: number;
	errors: number;
	non2xx: number;
	responses: number;
	cost?: Cost;
	/** The ceiling's CPU over its row, ms (a Mint row's is in its cost). */
	cpuMs?: number;
}

/** A server of a scenario: its process, where its metrics are served, where it keeps its data. */
interface Server {
	name: string;
	child: ChildProcess;
	metricsUrl?: string;
	dataDir?: string;
}

const children: ChildProcess[] = [];
/** The scenarios' data directories, removed at the end whatever happens. */
const dirs: string[] = [];
const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms));

function spawnNode(
	args: string[],
	env: Record<string, string>,
	readyLine: RegExp,
	readyWithinMs = 60_000,
): Promise<{ child: ChildProcess; match: RegExpExecArray }> {
	const child = spawn(process.execPath, args, { cwd: ROOT, env: { PATH: process.env.PATH ?? "", ...env } });
	children.push(child);
	let output = "";
	return new Promise((resolve, reject) => {
		const timer = setTimeout(() => reject(new Error(`not ready in ${readyWithinMs / 1000} s:\n${output.slice(-2000)}`)), readyWithinMs);
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
				responses: result["2xx"] + result.non2xx,
			});
		});
	});
}

// --- Counting: the nodes' own counters, before and after each row ---

/** The counters read, and the labels they are summed by (over the nodes: node_id and the rest dropped). */
const COUNTED: Record<string, string[]> = {
	mint_store_operations_total: ["service", "collection", "operation"],
	moleculer_request_total: ["type", "action"],
	moleculer_transit_publish_total: ["type"],
	mint_transactions_total: ["type", "status"],
	mint_cache_lookups_total: ["action", "result"],
};

/** `<metric> <label values...>` -> value, summed over the nodes. */
type Counts = Map<string, number>;

async function readCounters(servers: Server[]): Promise<Counts> {
	const counts: Counts = new Map();
	for (const server of servers) {
		if (!server.metricsUrl) continue;
		const text = await (await fetch(server.metricsUrl)).text();
		for (const match of text.matchAll(/^(\w+)\{([^}]*)\} (\S+)/gm)) {
			const labelNames = COUNTED[match[1]];
			if (!labelNames) continue;
			const labels = Object.fromEntries([...match[2].matchAll(/(\w+)="([^"]*)"/g)].map(m => [m[1], m[2]]));
			const key = [match[1], ...labelNames.map(name => labels[name] ?? "")].join(" ");
			counts.set(key, (counts.get(key) ?? 0) + Number(match[3]));
		}
	}
	return counts;
}

function deltaOf(before: Counts, after: Counts): Counts {
	const delta: Counts = new Map();
	for (const [key, value] of after) {
		const d = value - (before.get(key) ?? 0);
		if (d !== 0) delta.set(key, d);
	}
	return delta;
}

/** The sum of a delta's entries for one metric, those whose label values start with `prefix`. */
function total(delta: Counts, metric: string, prefix = ""): number {
	let sum = 0;
	for (const [key, value] of delta) if (key.startsWith(`${metric} ${prefix}`)) sum += value;
	return sum;
}

/** What a row's aftermath does: store writes (the mail worker's reads poll even when idle) and action runs. */
const READS = new Set(["find", "findOne", "findById", "findByIds", "count"]);
function activity(counts: Counts): number {
	let writes = 0;
	for (const [key, value] of counts) {
		const [metric, , , operation] = key.split(" ");
		if (metric === "mint_store_operations_total" && !READS.has(operation)) writes += value;
	}
	return writes + total(counts, "moleculer_request_total", "local ");
}

/**
 * The counters once what the row started (emails, the outbox's relay) has
 * stopped: no write nor action for QUIET_MS, longer than the mail worker's
 * poll (MAIL_POLL_MS, 1 s: once the load stops kicking it, it sends a batch
 * per poll); or after SETTLE_MS, whatever is still going on.
 */
async function settledCounters(servers: Server[]): Promise<{ counts: Counts; settled: string }> {
	const start = Date.now();
	let last = await readCounters(servers);
	let quietSince = start;
	while (Date.now() < start + SETTLE_MS) {
		await sleep(300);
		const next = await readCounters(servers);
		if (activity(next) !== activity(last)) quietSince = Date.now();
		else if (Date.now() - quietSince >= QUIET_MS) return { counts: next, settled: `settled ${((quietSince - start) / 1000).toFixed(1)} s after the load` };
		last = next;
	}
	return { counts: last, settled: `still busy ${SETTLE_MS / 1000} s after the load: counted so far` };
}

/** Bytes under the directories, in total and by file (`<service>/<collection>.db`) or kind of file (`mail/*.eml`). */
function dataSize(dirs: string[]): { bytes: number; diskBytes: number; parts: Map<string, number> } {
	let bytes = 0;
	let diskBytes = 0;
	const parts = new Map<string, number>();
	const walk = (root: string, dir: string) => {
		for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
			const file = path.join(dir, entry.name);
			if (entry.isDirectory()) {
				walk(root, file);
				continue;
			}
			const stat = fs.statSync(file, { throwIfNoEntry: false });
			if (!stat) continue; // removed meanwhile
			bytes += stat.size;
			diskBytes += stat.blocks * 512;
			const ext = path.extname(entry.name);
			const part = ext === ".db" ? path.relative(root, file) : `${path.relative(root, dir) || "."}/*${ext}`;
			parts.set(part, (parts.get(part) ?? 0) + stat.size);
		}
	};
	for (const dir of dirs) if (fs.existsSync(dir)) walk(dir, dir);
	return { bytes, diskBytes, parts };
}

/** Runs one row with the scenario's counters and data read before and after it. */
async function measured(servers: Server[], row: () => Promise<Row>): Promise<Row> {
	const dirs = servers.flatMap(s => (s.dataDir ? [s.dataDir] : []));
	const before = await readCounters(servers);
	const sizeBefore = dataSize(dirs);
	const cpuBefore = cpuOf(servers);
	const result = await row();
	const { counts, settled } = await settledCounters(servers);
	const cpuAfter = cpuOf(servers);
	const delta = deltaOf(before, counts);
	const sizeAfter = dataSize(dirs);
	const growth = new Map<string, number>();
	for (const [part, size] of sizeAfter.parts) {
		const grown = size - (sizeBefore.parts.get(part) ?? 0);
		if (grown !== 0) growth.set(part, grown);
	}
	result.cost = {
		requests: delta.get("moleculer_request_total local api.rest") ?? result.responses,
		storeOps: total(delta, "mint_store_operations_total"),
		actionCalls: total(delta, "moleculer_request_total", "local "),
		remoteCalls: total(delta, "moleculer_request_total", "remote "),
		packets: total(delta, "moleculer_transit_publish_total"),
		transfers: delta.get("mint_transactions_total Transfer Completed") ?? 0,
		bytes: sizeAfter.bytes - sizeBefore.bytes,
		diskBytes: sizeAfter.diskBytes - sizeBefore.diskBytes,
		delta,
		growth,
		settled,
		cpuMs: cpuAfter.total - cpuBefore.total,
		mainCpuMs: cpuAfter.main - cpuBefore.main,
	};
	return result;
}

/**
 * CPU time the servers' processes have used, in ms, summed: every thread
 * (V8's compiler and GC helpers, libuv's pool) and the main threads alone,
 * from /proc/<pid>/stat and /proc/<pid>/task/<pid>/stat (utime + stime, in
 * Linux's USER_HZ of 100 a second). NaN where there is no /proc.
 */
function cpuOf(servers: Server[]): { total: number; main: number } {
	const ticks = (file: string) => {
		const fields = fs.readFileSync(file, "utf8").split(") ")[1].split(" ");
		return Number(fields[11]) + Number(fields[12]);
	};
	try {
		let total = 0;
		let main = 0;
		for (const { child } of servers) {
			total += ticks(`/proc/${child.pid}/stat`) * 10;
			main += ticks(`/proc/${child.pid}/task/${child.pid}/stat`) * 10;
		}
		return { total, main };
	} catch {
		return { total: Number.NaN, main: Number.NaN };
	}
}

/** Resident memory now and at its peak, from /proc (Linux), in MB. */
function memoryOf(child: ChildProcess): string {
	try {
		const status = fs.readFileSync(`/proc/${child.pid}/status`, "utf8");
		const kB = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1]);
		return `${Math.round(kB("VmRSS") / 1024)} MB (peak ${Math.round(kB("VmHWM") / 1024)} MB)`;
	} catch {
		return "n/a (no /proc)";
	}
}

// --- The scenarios ---

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

/** The world's heavy user, logged in, first among the bench's users (it reads, sends and receives like them), and its balance. */
async function heavyUser(base: string): Promise<{ user: BenchUser; balanceMinor: number }> {
	const res = await call(base, "POST", "/api/v1/auth/login", { email: HEAVY_EMAIL, password: HEAVY_PASSWORD });
	const token = /access\.token=([^;]+)/.exec(res.cookie)?.[1];
	if (res.status !== 200 || !token) throw new Error(`heavy user login: ${res.status} ${JSON.stringify(res.body)}`);
	const wallet = await call(base, "GET", "/api/v1/wallet/user", undefined, token);
	return { user: { id: res.body.id, token }, balanceMinor: Math.round(wallet.body.balance * 100) };
}

/** The bench's users, each topped up with 1000.00 (in a world, its heavy user first, with the balance it has). */
async function seed(base: string, world: boolean): Promise<{ users: BenchUser[]; toppedUpMinor: number }> {
	const users: BenchUser[] = [];
	let toppedUpMinor = 0;
	if (world) {
		const heavy = await heavyUser(base);
		users.push(heavy.user);
		toppedUpMinor += heavy.balanceMinor;
	}
	while (users.length < USERS) {
		const i = users.length;
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
		toppedUpMinor += 100_000;
	}
	return { users, toppedUpMinor };
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

async function mintScenarios(label: string, base: string, servers: Server[], world = false): Promise<{ rows: Row[]; check: string; hitRate: string }> {
	const { users, toppedUpMinor } = await seed(base, world);
	const reader = users[0];
	const read = { headers: { Authorization: `Bearer ${reader.token}` } };
	// A node just started runs its code cold (V8 compiles the hot paths as they heat up): the reads' first second
	// is not measured. Only reads: transfers here would be data the rows' "per transfer" figures do not count.
	if (WARMUP_SECONDS > 0) await load(`${label}: warm-up`, `${base}/api/v1/wallet/user`, { ...read, duration: WARMUP_SECONDS });
	const rows = [await measured(servers, () => load(`${label}: GET /wallet/user`, `${base}/api/v1/wallet/user`, read))];
	rows.push(await measured(servers, () => load(`${label}: POST /transactions/transfer`, base, { requests: [transfers(users)] })));
	// Open loop: a fixed rate, whatever the latency, for the p99 at a load the node can carry.
	rows.push(
		await measured(servers, () =>
			load(`${label}: POST /transactions/transfer at ${FIXED_RATE}/s`, base, { requests: [transfers(users)], overallRate: FIXED_RATE }),
		),
	);
	// After the transfers: the reader has a history on an empty store too (a few hundred transactions), not one top-up.
	rows.push(await measured(servers, () => load(`${label}: GET /transactions, pages by type and status`, base, { requests: [listPages(reader)] })));
	const mix = await measured(servers, () => readHeavyMix(`${label}: read-heavy mix (1 transfer in ${TRANSFER_EVERY})`, base, users));
	rows.push(mix);
	await sleep(1000); // let any 202s finish
	return { rows, check: await conserved(base, users, toppedUpMinor), hitRate: `${label}: ${hitRateOf(mix.cost!.delta)}` };
}

/**
 * One user's transaction lists (in a world, its heavy user's), filtered by type, status, both or neither, at
 * the first pages and at every page size: 5,000 different lists, so that most requests miss the cache and
 * read the store (its page and its `total`).
 */
function listPages(user: BenchUser): autocannon.Request {
	const filters = ["", "type=Transfer", "type=TopUp", "status=Completed", "type=Transfer&status=Completed"];
	let n = 0;
	return {
		method: "GET",
		setupRequest: (req: any) => {
			const limit = 1 + (n % 100);
			const filter = filters[Math.floor(n / 100) % filters.length];
			const offset = 20 * (Math.floor(n / 500) % 10);
			n++;
			return {
				...req,
				path: `/api/v1/transactions?limit=${limit}&offset=${offset}${filter ? `&${filter}` : ""}`,
				headers: { Authorization: `Bearer ${user.token}` },
			};
		},
	};
}

/** Transfers of 0.01 among the users, every user sending and receiving in turn. */
function transfers(users: BenchUser[]): autocannon.Request {
	let n = 0;
	return {
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
	};
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

/** Hits / lookups over a row (mint_cache_lookups_total), overall and per action; coalesced lookups (a concurrent miss's result shared) apart. */
function hitRateOf(delta: Counts): string {
	const byAction = new Map<string, Record<string, number>>();
	for (const [key, value] of delta) {
		const [metric, action, result] = key.split(" ");
		if (metric !== "mint_cache_lookups_total") continue;
		const row = byAction.get(action) ?? {};
		row[result] = (row[result] ?? 0) + value;
		byAction.set(action, row);
	}
	const rate = (r: Record<string, number>) => {
		const total = (r.hit ?? 0) + (r.miss ?? 0) + (r.coalesced ?? 0) + (r.unavailable ?? 0);
		if (total === 0) return "n/a";
		const pct = (n = 0) => `${((n / total) * 100).toFixed(1)}%`;
		return `${pct(r.hit)} of ${total} (+${pct(r.coalesced)} coalesced)`;
	};
	const all: Record<string, number> = {};
	for (const r of byAction.values()) for (const [k, v] of Object.entries(r)) all[k] = (all[k] ?? 0) + v;
	const parts = [...byAction].filter(([, r]) => Object.values(r).some(v => v > 0)).map(([action, r]) => `${action} ${rate(r)}`);
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

/** A Mint node of a scenario, its metrics on a port of its own. */
async function startServer(
	name: string,
	env: Record<string, string>,
	readyLine: RegExp,
	dataDir: string,
	readyWithinMs?: number,
): Promise<{ server: Server; match: RegExpExecArray }> {
	const metricsPort = await freePort();
	const profile = CPU_PROF ? ["--cpu-prof", `--cpu-prof-dir=${CPU_PROF}`, `--cpu-prof-name=${name}.cpuprofile`] : [];
	const { child, match } = await spawnNode(
		[...profile, ...nodeOptions(), "dist/server.js"],
		{ ...env, DATA_DIR: dataDir, METRICS_PORT: String(metricsPort) },
		readyLine,
		readyWithinMs,
	);
	return { server: { name, child, dataDir, metricsUrl: `http://127.0.0.1:${metricsPort}/metrics` }, match };
}

const MINT_UP = /Mint is up: (http:\/\/\S+)\/api\/v1/;
const NODE_UP = /Mint node is up/;

async function main() {
	const rows: Row[] = [];
	const checks: string[] = [];
	const hitRates: string[] = [];
	const memory: string[] = [];
	const live: string[] = [];
	const worlds: string[] = [];

	// The ceiling.
	const raw = await spawnNode(
		["-e", `require("http").createServer((q,s)=>s.end("hello")).listen(0,"127.0.0.1",function(){console.log("port "+this.address().port)})`],
		{},
		/port (\d+)/,
	);
	const rawServer = [{ name: "ceiling", child: raw.child }];
	const rawCpu = cpuOf(rawServer).total;
	const ceilingRow = await load("ceiling: raw node:http hello-world", `http://127.0.0.1:${raw.match[1]}/`, {});
	ceilingRow.cpuMs = cpuOf(rawServer).total - rawCpu;
	rows.push(ceilingRow);
	memory.push(`ceiling ${memoryOf(raw.child)}`);
	await stop(raw.child);

	const common = {
		JWT_KEY_BITS: "2048",
		LOG_LEVEL: "warn",
		PORT: "0",
		COOKIE_SECURE: "false",
		LOGIN_MAX_FAILURES_PER_IP: "100000",
		SIGNUPS_PER_IP_HOUR: "100000",
	};
	const tmp = () => {
		const d = fs.mkdtempSync(path.join(os.tmpdir(), "mint-bench-"));
		dirs.push(d);
		return d;
	};
	const namespace = `mint-bench-${process.pid}`;
	let clusterStarted = false;
	let withRedis = false;
	try {
		// The embedded default, then the same node on SQLite (EMBEDDED_STORE=sqlite).
		for (const [label, engine] of ONLY === "cluster" ? [] : EMBEDDED_ENGINES) {
			const embedded = await startServer(`embedded-${engine}`, { ...common, EMBEDDED_STORE: engine }, MINT_UP, tmp());
			const e = await mintScenarios(label, embedded.match[1], [embedded.server]);
			rows.push(...e.rows);
			checks.push(`${label}: ${e.check}`);
			hitRates.push(e.hitRate);
			memory.push(`${label} ${memoryOf(embedded.server.child)}`);
			await stop(embedded.server.child);
			live.push(`${label} ${liveDataOf([embedded.server], e.rows)}`);
		}

		// The embedded default again, on a large world generated into its store first.
		if (WORLD > 0 && ONLY !== "cluster") {
			const dir = tmp();
			const label = `embedded${WORLD_STORE === "sqlite" ? ", SQLite" : ""}, world of ${WORLD}`;
			let world: World;
			let moved = "";
			if (WORLD_STORE === "sqlite") {
				// Generated as an export (the same lines NeDB's files hold), then imported as an operator would.
				const exported = tmp();
				world = await generateWorld(exported, WORLD, "export");
				const movedAt = Date.now();
				await importData(loadConfig({ DATA_DIR: dir, EMBEDDED_STORE: "sqlite" }), exported, () => undefined);
				fs.rmSync(exported, { recursive: true, force: true });
				moved = `, imported into SQLite in ${((Date.now() - movedAt) / 1000).toFixed(1)} s`;
			} else {
				world = await generateWorld(dir, WORLD);
			}
			const startedAt = Date.now();
			// A large world loads into memory first: it may take minutes.
			const heap: Record<string, string> = process.env.BENCH_WORLD_HEAP_MB
				? { NODE_OPTIONS: `--max-old-space-size=${Number(process.env.BENCH_WORLD_HEAP_MB)}` }
				: {};
			const node = await startServer("world", { ...common, ...heap, EMBEDDED_STORE: WORLD_STORE }, MINT_UP, dir, 30 * 60_000);
			const startup = Date.now() - startedAt;
			worlds.push(
				`${label}: ${world.users} users, ${world.transactions} transactions (the heavy user in ${world.heavyTransactions}), ` +
					`${megabytes(world.bytes)} generated in ${(world.ms / 1000).toFixed(1)} s${moved}; started in ${(startup / 1000).toFixed(1)} s, ` +
					`RSS at start ${memoryOf(node.server.child)}`,
			);
			const w = await mintScenarios(label, node.match[1], [node.server], true);
			rows.push(...w.rows);
			checks.push(`${label}: ${w.check}`);
			hitRates.push(w.hitRate);
			memory.push(`${label} ${memoryOf(node.server.child)}`);
			await stop(node.server.child);
			live.push(`${label} ${megabytes(dataSize([dir]).bytes)} in all at stop`);
		}

		// A cluster over RabbitMQ, its three nodes started together.
		if (ONLY !== "embedded") {
			withRedis = await redisAnswers();
			const cluster = { ...common, TRANSPORTER: AMQP_URL, NAMESPACE: namespace, ...(withRedis ? { REDIS_URL } : {}) };
			clusterStarted = true;
			const [gateway, core, notifications] = await Promise.all([
				startServer("gateway", { ...cluster, SERVICES: "api" }, MINT_UP, tmp()),
				startServer("core", { ...cluster, SERVICES: "auth,wallet,transactions" }, NODE_UP, tmp()),
				startServer("notifications", { ...cluster, SERVICES: "notifications" }, NODE_UP, tmp()),
			]);
			const servers = [gateway.server, core.server, notifications.server];
			await waitReady(gateway.match[1]);
			const c = await mintScenarios(withRedis ? "cluster+Redis" : "cluster", gateway.match[1], servers);
			rows.push(...c.rows);
			checks.push(`cluster: ${c.check}`);
			hitRates.push(withRedis ? c.hitRate : `${c.hitRate} (no Redis: balances and transactions are not cached on a cluster node)`);
			memory.push(`cluster ${servers.map(s => `${s.name} ${memoryOf(s.child)}`).join(", ")}`);
			await Promise.all(servers.map(s => stop(s.child)));
			live.push(`cluster ${liveDataOf(servers, c.rows)}`);
		}
	} finally {
		for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
		for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
		if (clusterStarted) await removeDurableTopology(namespace).catch(err => console.error(`removing the run's RabbitMQ queues: ${err}`));
		if (withRedis) await removeCacheKeys(namespace).catch(err => console.error(`removing the run's Redis keys: ${err}`));
	}

	report(rows, checks, hitRates, memory, live);
	for (const line of worlds) console.log(line);
	if (checks.some(c => !c.includes("conserved ("))) process.exitCode = 1;
}

const fixed = (n: number, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : "-");
const megabytes = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`;

/** Per 10,000 transfers: the growth of the data; the change itself in kB for a row without transfers or whose data shrank. */
function growthCell(cost: Cost): string {
	// A row may shrink the data (NeDB compacts its files as it goes): a shrink is shown as it is, not per transfer.
	if (cost.transfers > 0 && cost.bytes >= 0) return megabytes((cost.bytes / cost.transfers) * 10_000);
	if (cost.bytes === 0) return "0";
	const change = `${cost.bytes > 0 ? "+" : ""}${(cost.bytes / 1e3).toFixed(1)} kB`;
	return cost.transfers > 0 ? `${change} over ${cost.transfers} transfers (compacted meanwhile)` : `${change}, no transfer`;
}

/** A delta's largest entries for one metric, per request: `auth.users findOne 1.00, ...`. */
function breakdown(cost: Cost, metric: string, describe: (labels: string[]) => string, prefix = ""): string {
	const entries = [...cost.delta]
		.filter(([key]) => key.startsWith(`${metric} ${prefix}`))
		.map(([key, value]) => [describe(key.split(" ").slice(1)), value / cost.requests] as const)
		.sort((a, b) => b[1] - a[1]);
	return entries.map(([what, perRequest]) => `${what} ${perRequest.toFixed(2)}`).join(", ") || "none";
}

/**
 * The data a scenario leaves once its servers stopped (each store compacts its
 * files as it closes: the live documents only), per transfer completed in the
 * scenario, its users' signups and top-ups included.
 */
function liveDataOf(servers: Server[], rows: Row[]): string {
	const { bytes, parts } = dataSize(servers.flatMap(s => (s.dataDir ? [s.dataDir] : [])));
	const transfers = rows.reduce((sum, r) => sum + (r.cost?.transfers ?? 0), 0);
	if (transfers === 0) return `${megabytes(bytes)}, no transfer`;
	const per = (n: number) => Math.round(n / transfers);
	const byKind = [...parts].sort((a, b) => b[1] - a[1]).map(([kind, size]) => `${kind} ${per(size)}`);
	return `${per(bytes)} bytes per transfer over ${transfers} transfers (${byKind.join(", ")})`;
}

function report(rows: Row[], checks: string[], hitRates: string[], memory: string[], live: string[]) {
	const ceiling = rows[0].rps;
	console.log(
		`\nnpm run bench${SMOKE ? " (BENCH_SMOKE=1)" : ""}: ${SECONDS} s per row, ${CONNECTIONS} connections, ${os.cpus().length} cores, Node ${process.version}\n`,
	);
	console.log(
		"| scenario | req/s | p50 ms | p99 ms | vs ceiling | errors | non-2xx | CPU ms/req | store ops/req | action calls/req | remote calls/req | transit packets/req | data per 10k transfers |",
	);
	console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
	for (const r of rows) {
		const c = r.cost;
		const per = (n: number) => (c ? fixed(n / c.requests, 2) : "-");
		const cpu = c ? c.cpuMs / c.requests : (r.cpuMs ?? Number.NaN) / r.responses;
		const counts = c
			? [fixed(cpu, 3), per(c.storeOps), per(c.actionCalls), per(c.remoteCalls), per(c.packets), growthCell(c)]
			: [fixed(cpu, 3), "-", "-", "-", "-", "-"];
		console.log(
			`| ${r.name} | ${Math.round(r.rps)} | ${r.p50} | ${r.p99} | ${((r.rps / ceiling) * 100).toFixed(1)}% | ${r.errors} | ${r.non2xx} | ${counts.join(" | ")} |`,
		);
	}
	console.log("\nper request, by store operation (service.collection operation) and by action (remote calls apart):");
	for (const r of rows) {
		const c = r.cost;
		if (!c || c.requests === 0) continue;
		console.log(`- ${r.name} (${c.requests} requests, ${c.transfers} transfers completed; ${c.settled}):`);
		console.log(
			`  - CPU: ${fixed(c.cpuMs / c.requests, 3)} ms per request over the servers, ${fixed(c.mainCpuMs / c.requests, 3)} of it on their main threads (${fixed((c.cpuMs / 1000 / SECONDS) * 100, 0)}% of a core over the row's ${SECONDS} s, aftermath included)`,
		);
		console.log(`  - store: ${breakdown(c, "mint_store_operations_total", ([service, collection, op]) => `${service}.${collection} ${op}`)}`);
		console.log(`  - actions: ${breakdown(c, "moleculer_request_total", ([, action]) => action, "local ")}`);
		if (c.remoteCalls > 0) console.log(`  - remote: ${breakdown(c, "moleculer_request_total", ([, action]) => action, "remote ")}`);
		if (c.transfers > 0) {
			const parts = [...c.growth].sort((a, b) => b[1] - a[1]).map(([part, bytes]) => `${part} ${Math.round(bytes / c.transfers)}`);
			const growth =
				c.bytes >= 0
					? `${Math.round(c.bytes / c.transfers)} bytes per transfer (${Math.round(c.diskBytes / c.transfers)} on disk, in blocks)`
					: `${growthCell(c)}, per transfer`;
			console.log(`  - data: ${growth}: ${parts.join(", ")}`);
		}
	}
	console.log(`\nmoney after the load: ${checks.join("; ")}`);
	for (const line of hitRates) console.log(`read-heavy mix, ${line}`);
	console.log(`RSS after the load: ${memory.join("; ")}`);
	console.log(`data at stop, compacted: ${live.join("; ")}`);
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
		await sleep(200);
	}
	throw new Error("cluster not ready");
}

/** Stopped from outside (Ctrl-C, a test's timeout): no server nor data directory outlives the run. */
for (const signal of ["SIGINT", "SIGTERM"] as const) {
	process.once(signal, () => {
		for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
		for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
		process.exit(signal === "SIGINT" ? 130 : 143);
	});
}

main().catch(err => {
	console.error(err);
	for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
	process.exit(1);
});
