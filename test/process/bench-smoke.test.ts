/**
 * `npm run bench` at its smoke size (BENCH_SMOKE=1: 1 s rows, 8 connections,
 * 4 users), built, as a child process, so the bench never rots: every row
 * runs and serves, money is conserved on both scenarios, and the cost columns
 * (server CPU, store operations, action and remote calls per request, data
 * per transfer, RSS) are printed with plausible values. The embedded rows run on NeDB and
 * on SQLite; with a small generated world (BENCH_WORLD=400), imported into SQLite
 * (BENCH_WORLD_STORE=sqlite), they run again on it. It needs RabbitMQ for
 * the cluster rows, and uses Redis when there is one, as the bench does.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import amqp from "amqplib";
import { buildMint, type BuiltMint } from "../helpers/dist";
import { RABBITMQ_URL, describeWithInfra, rabbitmqNeed } from "../helpers/infra";

/** A row of the bench's table, its cells as printed. */
interface TableRow {
	scenario: string;
	rps: number;
	errors: number;
	non2xx: number;
	/** Server CPU ms per request (all threads, the aftermath included). */
	cpuMs: string;
	storeOps: string;
	actionCalls: string;
	remoteCalls: string;
	packets: string;
	dataPer10k: string;
}

function tableRows(stdout: string): TableRow[] {
	return stdout
		.split("\n")
		.filter(line => /^\| (ceiling|embedded|cluster)/.test(line))
		.map(line => {
			const cells = line
				.slice(2, -2)
				.split(" | ")
				.map(cell => cell.trim());
			const [scenario, rps, , , , errors, non2xx, cpuMs, storeOps, actionCalls, remoteCalls, packets, dataPer10k] = cells;
			return { scenario, rps: Number(rps), errors: Number(errors), non2xx: Number(non2xx), cpuMs, storeOps, actionCalls, remoteCalls, packets, dataPer10k };
		});
}

/** The processes whose working directory is `dir` (Linux /proc), e.g. servers the bench left running. */
function processesIn(dir: string): number[] {
	if (!fs.existsSync("/proc")) return [];
	return fs
		.readdirSync("/proc")
		.filter(entry => /^\d+$/.test(entry))
		.filter(pid => {
			try {
				return fs.realpathSync(`/proc/${pid}/cwd`) === fs.realpathSync(dir);
			} catch {
				return false;
			}
		})
		.map(Number);
}

const benchDirs = () => new Set(fs.readdirSync(os.tmpdir()).filter(name => name.startsWith("mint-bench-")));

describeWithInfra("npm run bench at its smoke size (BENCH_SMOKE=1)", rabbitmqNeed(), () => {
	let build: BuiltMint;
	let run: { code: number | null; stdout: string; stderr: string; pid: number };
	let rows: TableRow[];
	let dirsBefore: Set<string>;

	beforeAll(async () => {
		build = buildMint("bench");
		dirsBefore = benchDirs();
		const child = spawn(process.execPath, [path.join(build.dist, "bench/bench.js")], {
			cwd: path.dirname(build.dist),
			env: {
				PATH: process.env.PATH ?? "",
				BENCH_SMOKE: "1",
				BENCH_WORLD: "400",
				BENCH_WORLD_STORE: "sqlite",
				AMQP_URL: RABBITMQ_URL,
				...(process.env.REDIS_URL ? { REDIS_URL: process.env.REDIS_URL } : {}),
			},
		});
		const stdout: Buffer[] = [];
		const stderr: Buffer[] = [];
		child.stdout.on("data", (chunk: Buffer) => stdout.push(chunk));
		child.stderr.on("data", (chunk: Buffer) => stderr.push(chunk));
		// SIGTERM past 110 s: the bench stops its servers and removes its data on the way out.
		const timer = setTimeout(() => child.kill("SIGTERM"), 110_000);
		const code = await new Promise<number | null>(resolve => child.on("exit", resolve));
		clearTimeout(timer);
		run = { code, stdout: Buffer.concat(stdout).toString(), stderr: Buffer.concat(stderr).toString(), pid: child.pid ?? 0 };
		rows = tableRows(run.stdout);
	}, 130_000);

	afterAll(() => build?.remove());

	const row = (pattern: RegExp) => {
		const found = rows.find(r => pattern.test(r.scenario));
		if (!found) throw new Error(`no row ${pattern} in:\n${run.stdout}`);
		return found;
	};

	it("exits 0 after printing every row, each served without errors at a non-zero rate", () => {
		expect({ code: run.code, stderr: run.stderr.slice(-2000) }).toEqual({ code: 0, stderr: expect.any(String) });
		expect(rows.map(r => r.scenario.replace(/^cluster\+Redis:/, "cluster:"))).toEqual([
			"ceiling: raw node:http hello-world",
			"embedded: GET /wallet/user",
			"embedded: POST /transactions/transfer",
			"embedded: POST /transactions/transfer at 50/s",
			"embedded: GET /transactions, pages by type and status",
			"embedded: read-heavy mix (1 transfer in 10)",
			"embedded, SQLite: GET /wallet/user",
			"embedded, SQLite: POST /transactions/transfer",
			"embedded, SQLite: POST /transactions/transfer at 50/s",
			"embedded, SQLite: GET /transactions, pages by type and status",
			"embedded, SQLite: read-heavy mix (1 transfer in 10)",
			"embedded, SQLite, world of 400: GET /wallet/user",
			"embedded, SQLite, world of 400: POST /transactions/transfer",
			"embedded, SQLite, world of 400: POST /transactions/transfer at 50/s",
			"embedded, SQLite, world of 400: GET /transactions, pages by type and status",
			"embedded, SQLite, world of 400: read-heavy mix (1 transfer in 10)",
			"cluster: GET /wallet/user",
			"cluster: POST /transactions/transfer",
			"cluster: POST /transactions/transfer at 50/s",
			"cluster: GET /transactions, pages by type and status",
			"cluster: read-heavy mix (1 transfer in 10)",
		]);
		for (const r of rows)
			expect({ scenario: r.scenario, rps: r.rps > 0, errors: r.errors, non2xx: r.non2xx }).toEqual({ scenario: r.scenario, rps: true, errors: 0, non2xx: 0 });
		expect(run.stdout).toMatch(/npm run bench \(BENCH_SMOKE=1\): 1 s per row, 8 connections/);
	});

	it("finds money conserved after the load on both scenarios", () => {
		// In the world, the first of the 4 users is its heavy user, with the balance the world gave it.
		expect(run.stdout).toMatch(
			/^money after the load: embedded: conserved \(4000 in 4 wallets\); embedded, SQLite: conserved \(4000 in 4 wallets\); embedded, SQLite, world of 400: conserved \([\d.]+ in 4 wallets\); cluster: conserved \(4000 in 4 wallets\)$/m,
		);
	});

	it("generates the world as an export, imports it into SQLite, starts on it and says so", () => {
		expect(run.stdout).toMatch(
			/^embedded, SQLite, world of 400: 40 users, 400 transactions \(the heavy user in \d+\), [\d.]+ MB generated in [\d.]+ s, imported into SQLite in [\d.]+ s; started in [\d.]+ s, RSS at start \d+ MB/m,
		);
	});

	it("prints store operations, action and remote calls per request, with plausible values", () => {
		const perRequest = (cell: string) => {
			expect(cell).toMatch(/^\d+\.\d\d$/);
			return Number(cell);
		};
		// The ceiling is no Mint: nothing to count.
		expect([rows[0].storeOps, rows[0].actionCalls, rows[0].remoteCalls]).toEqual(["-", "-", "-"]);

		const embeddedTransfer = row(/^embedded: POST.*transfer$/);
		const clusterTransfer = row(/^cluster(\+Redis)?: POST.*transfer$/);
		// The open-loop rows keep to their rate (50/s for 1 s: a few more or less as autocannon paces them).
		for (const fixed of [row(/^embedded: POST.* at 50\/s$/), row(/^cluster(\+Redis)?: POST.* at 50\/s$/)]) expect(fixed.rps).toBeLessThanOrEqual(60);
		for (const transfer of [embeddedTransfer, clusterTransfer]) {
			// A transfer reads and writes the ledger, the transaction and its outbox: several store operations, through several actions.
			expect(perRequest(transfer.storeOps)).toBeGreaterThan(2);
			expect(perRequest(transfer.storeOps)).toBeLessThan(500);
			expect(perRequest(transfer.actionCalls)).toBeGreaterThan(1);
		}
		for (const get of [row(/^embedded: GET/), row(/^cluster(\+Redis)?: GET/)]) {
			// The wallet's action at least; a read costs fewer store operations than a transfer.
			expect(perRequest(get.actionCalls)).toBeGreaterThanOrEqual(0.9);
			expect(perRequest(get.storeOps)).toBeLessThan(perRequest(embeddedTransfer.storeOps));
		}
		// One user's lists, 5,000 different ones: most miss the cache and read a page and its total from the store.
		for (const lists of [row(/^embedded: GET \/transactions/), row(/^embedded, SQLite, world of 400: GET \/transactions/)]) {
			expect(perRequest(lists.storeOps)).toBeGreaterThan(0.5);
			expect(perRequest(lists.actionCalls)).toBeGreaterThanOrEqual(1.9);
		}
		expect(run.stdout).toMatch(
			/GET \/transactions, pages by type and status .*\n.*\n {2}- store: transactions\.transactions (find|count) \d+\.\d\d, transactions\.transactions (find|count) \d+\.\d\d/,
		);
		// One process: nothing goes over a transporter.
		for (const r of rows.filter(r => /^embedded(, SQLite)?:/.test(r.scenario))) expect([r.remoteCalls, r.packets]).toEqual(["0.00", "0.00"]);
		// The gateway node holds no wallet nor transactions: each request goes to the core node, and comes back; but with
		// Redis the gateway answers a GET /wallet/user the cache holds itself (api/cached-reads.ts): only misses go.
		const clusterGet = row(/^cluster(\+Redis)?: GET \/wallet/);
		if (clusterGet.scenario.startsWith("cluster+Redis")) expect(perRequest(clusterGet.remoteCalls)).toBeLessThan(0.5);
		else expect(perRequest(clusterGet.remoteCalls)).toBeGreaterThanOrEqual(0.9);
		expect(perRequest(row(/^cluster(\+Redis)?: GET \/transactions/).remoteCalls)).toBeGreaterThanOrEqual(0.9);
		expect(perRequest(clusterTransfer.remoteCalls)).toBeGreaterThanOrEqual(0.9);
		// A transfer is one call from the gateway to the core node; with Redis the notifications node reads the receipts'
		// contacts from auth's cache entries (callCached), asking the core node only for the few it has not seen.
		if (clusterTransfer.scenario.startsWith("cluster+Redis")) expect(perRequest(clusterTransfer.remoteCalls)).toBeLessThan(1.5);
		expect(perRequest(clusterTransfer.packets)).toBeGreaterThanOrEqual(1.8);
		// And the breakdown by operation and action names them.
		expect(run.stdout).toMatch(/^ {2}- store: .*wallet\.\w+ \w+ \d+\.\d\d/m);
		expect(run.stdout).toMatch(/^ {2}- actions: .*transactions\.transfer \d+\.\d\d/m);
		expect(run.stdout).toMatch(/^ {2}- remote: .*transactions\.transfer \d+\.\d\d/m);
	});

	it("prints the servers' CPU per request: the ceiling's least, a transfer's more than a read's", () => {
		const cpu = (r: TableRow) => {
			expect(r.cpuMs).toMatch(/^\d+\.\d{3}$/);
			return Number(r.cpuMs);
		};
		for (const r of rows) expect(cpu(r)).toBeGreaterThan(0);
		for (const r of rows.slice(1)) expect(cpu(r)).toBeGreaterThan(cpu(rows[0]));
		expect(cpu(row(/^embedded: POST.*transfer$/))).toBeGreaterThan(cpu(row(/^embedded: GET/)));
		expect(run.stdout).toMatch(/^ {2}- CPU: \d+\.\d{3} ms per request over the servers, \d+\.\d{3} of it on their main threads/m);
	});

	it("prints the data's growth per 10,000 transfers and per transfer, and each server's RSS", () => {
		for (const r of rows.filter(r => / (POST|read-heavy)/.test(r.scenario))) {
			expect(r.dataPer10k).toMatch(/^\d+\.\d MB$/);
			expect(Number.parseFloat(r.dataPer10k)).toBeGreaterThan(0);
		}
		const perTransfer = [...run.stdout.matchAll(/^ {2}- data: (\d+) bytes per transfer/gm)].map(m => Number(m[1]));
		expect(perTransfer).toHaveLength(12);
		for (const bytes of perTransfer) expect(bytes).toBeGreaterThan(100);
		// What the stores keep once compacted at stop, per transfer: the scenario's live data, the mail folder included.
		const atStop = /^data at stop, compacted: (.*)$/m.exec(run.stdout)?.[1] ?? "";
		const live = /^embedded (\d+) bytes per transfer over (\d+) transfers \([^)]*transactions\/transactions\.db \d+/.exec(atStop);
		expect(live).not.toBeNull();
		expect(Number(live![1])).toBeGreaterThan(100);
		expect(Number(live![2])).toBeGreaterThan(0);
		expect(Number(/; cluster (\d+) bytes per transfer/.exec(atStop)?.[1])).toBeGreaterThan(100);
		expect(Number(/; embedded, SQLite (\d+) bytes per transfer over \d+ transfers \([^)]*transactions\/\*\.sqlite \d+/.exec(atStop)?.[1])).toBeGreaterThan(100);
		// The world's files: the generated data and what the rows added.
		expect(Number(/; embedded, SQLite, world of 400 ([\d.]+) MB in all at stop/.exec(atStop)?.[1])).toBeGreaterThan(0);
		const rss = /^RSS after the load: (.*)$/m.exec(run.stdout)?.[1] ?? "";
		const megabytes = [...rss.matchAll(/(ceiling|embedded|gateway|core|notifications) (\d+) MB \(peak (\d+) MB\)/g)];
		expect(megabytes.map(m => m[1])).toEqual(["ceiling", "embedded", "gateway", "core", "notifications"]);
		for (const m of megabytes) expect(Number(m[2])).toBeGreaterThan(10);
		expect(rss).toMatch(/embedded, SQLite \d+ MB \(peak \d+ MB\)/);
		expect(rss).toMatch(/embedded, SQLite, world of 400 \d+ MB \(peak \d+ MB\)/);
	});

	it("leaves nothing behind: no server running, no data directory, no durable queue in RabbitMQ", async () => {
		expect(processesIn(path.dirname(build.dist))).toEqual([]);
		expect([...benchDirs()].filter(name => !dirsBefore.has(name))).toEqual([]);
		const connection = await amqp.connect(RABBITMQ_URL);
		try {
			const channel = await connection.createChannel();
			channel.on("error", () => undefined); // the 404 below closes the channel
			await expect(channel.checkQueue(`mint-bench-${run.pid}.notifications`)).rejects.toThrow(/NOT_FOUND/);
		} finally {
			await connection.close();
		}
	});
});
