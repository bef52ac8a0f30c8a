/**
 * The cache protocol itself (lib/cacher.ts), on a small cached service: a
 * read that began before a write and stores its result after the write's
 * invalidation is never served; strict reads are not cached where the cache
 * is per node; invalidation is per subject. In memory, and in the real Redis
 * shared by two nodes.
 */
import crypto from "node:crypto";
import type { Socket } from "node:net";
import Redis from "ioredis";
import { Cachers, ServiceBroker, type Context } from "moleculer";
import { CACHE_LOOKUPS_METRIC, callCached, cacheScope, MintMemoryCacher, MintRedisCacher, type ExactCacher } from "../../lib/cacher";
import { describeWithInfra, tcpReachable } from "../helpers/infra";
import { actionRuns } from "../helpers/mint";
import { countSocketWrites } from "../helpers/socket-writes";
import { redisOptionsOf } from "../../moleculer.config";

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const redisHost = new URL(REDIS_URL);

/** A balance "database" shared by every node of a test, and a read that can be held between its read and its answer. */
class Ledger {
	balances = new Map<string, number>();
	reads = 0;
	private gate?: Promise<void>;
	private open?: () => void;

	hold(): void {
		this.gate = new Promise(resolve => (this.open = resolve));
	}

	release(): void {
		this.open?.();
		this.gate = undefined;
	}

	async read(id: string): Promise<{ id: string; balance: number }> {
		this.reads++;
		const balance = this.balances.get(id) ?? 0;
		await this.gate;
		return { id, balance };
	}
}

const MINE_CACHE = { scope: "#user.id", ttl: 60 };

function probeService(ledger: Ledger, cache: Record<string, unknown>) {
	return {
		name: "probe",
		actions: {
			view: { cache, params: { id: "string" }, handler: (ctx: Context<{ id: string }>) => ledger.read(ctx.params.id) },
			strictView: { cache: { ...cache, strict: true }, params: { id: "string" }, handler: (ctx: Context<{ id: string }>) => ledger.read(ctx.params.id) },
			/** The caller's own, without params (as wallet.mine): what a gateway may peek at. */
			mine: { cache: MINE_CACHE, handler: (ctx: Context<unknown, { user: { id: string } }>) => ledger.read(ctx.meta.user.id) },
		},
	};
}

const VIEW_CACHE = { scope: "id", ttl: 60 };

/** Another service reading probe.view through callCached, as notifications reads auth.contactOf. */
const readerService = {
	name: "reader",
	actions: {
		view: { handler: (ctx: Context<{ id: string }>) => callCached(ctx, "probe.view", VIEW_CACHE, { id: ctx.params.id }) },
	},
};

async function startNode(
	cacher: ExactCacher | InstanceType<typeof Cachers.Memory>,
	ledger: Ledger,
	cache: Record<string, unknown> = VIEW_CACHE,
	options: { tracing?: boolean } = {},
) {
	const broker = new ServiceBroker({
		logger: false,
		cacher: cacher as InstanceType<typeof Cachers.Memory>,
		metrics: { enabled: true },
		tracing: { enabled: options.tracing ?? false, exporter: [] },
	});
	// Moleculer types `cache` as its own options; ours (scope, strict) are Mint's.
	broker.createService(probeService(ledger, cache) as any);
	broker.createService(readerService);
	await broker.start();
	return broker;
}

const lookups = (broker: ServiceBroker, action: string, result: string) =>
	(broker.metrics.getMetric(CACHE_LOOKUPS_METRIC)?.get({ action, result }) as { value?: number } | null)?.value ?? 0;

/** The race: a read starts, a write and its invalidation happen, the read answers and stores its (old) result; then someone reads. */
async function raceAWrite(reader: ServiceBroker, writer: () => Promise<void>, ledger: Ledger, id: string): Promise<number> {
	ledger.balances.set(id, 10);
	ledger.hold();
	const slowRead = reader.call<{ balance: number }, { id: string }>("probe.view", { id });
	await new Promise(resolve => setTimeout(resolve, 20)); // it has read 10 and waits
	ledger.balances.set(id, 25);
	await writer();
	ledger.release();
	expect((await slowRead).balance).toBe(10);
	await new Promise(resolve => setTimeout(resolve, 20)); // its store has landed
	return (await reader.call<{ balance: number }, { id: string }>("probe.view", { id })).balance;
}

describe("in memory", () => {
	const brokers: ServiceBroker[] = [];
	afterAll(() => Promise.all(brokers.map(b => b.stop())));

	it("a read that began before a write is never served after the write's invalidation (a plain delete-then-set would be)", async () => {
		const ledger = new Ledger();
		const cacher = new MintMemoryCacher({ singleProcess: true, prefix: "t" });
		const node = await startNode(cacher, ledger);
		brokers.push(node);
		expect(await raceAWrite(node, () => cacher.invalidate([cacheScope("probe", "a")]), ledger, "a")).toBe(25);

		// The same race against Moleculer's stock cacher and its cleaning: the old balance comes back.
		const stockLedger = new Ledger();
		const stock = new Cachers.Memory();
		const stockNode = await startNode(stock, stockLedger, { keys: ["id"], ttl: 60 });
		brokers.push(stockNode);
		expect(await raceAWrite(stockNode, () => stock.clean("probe.**"), stockLedger, "a")).toBe(10);
	});

	it("invalidates one subject's entries only, and counts hits and misses", async () => {
		const ledger = new Ledger();
		const cacher = new MintMemoryCacher({ singleProcess: true, prefix: "t" });
		const node = await startNode(cacher, ledger);
		brokers.push(node);
		for (const id of ["x", "y", "x", "y"]) await node.call("probe.view", { id });
		expect([lookups(node, "probe.view", "miss"), lookups(node, "probe.view", "hit"), ledger.reads]).toEqual([2, 2, 2]);
		await cacher.invalidate([cacheScope("probe", "x")]);
		for (const id of ["x", "y"]) await node.call("probe.view", { id });
		expect([lookups(node, "probe.view", "miss"), lookups(node, "probe.view", "hit"), ledger.reads]).toEqual([3, 3, 3]);
	});

	it("concurrent misses of one entry run the action once; a read after a write's invalidation does not join the old run", async () => {
		const ledger = new Ledger();
		const cacher = new MintMemoryCacher({ singleProcess: true, prefix: "t" });
		const node = await startNode(cacher, ledger);
		brokers.push(node);
		ledger.balances.set("c", 1);
		ledger.hold();
		const herd = Array.from({ length: 5 }, () => node.call<{ balance: number }, { id: string }>("probe.view", { id: "c" }));
		await new Promise(resolve => setTimeout(resolve, 20));
		// A write and its invalidation while the herd waits: a read starting now must see it.
		ledger.balances.set("c", 2);
		await cacher.invalidate([cacheScope("probe", "c")]);
		const late = node.call<{ balance: number }, { id: string }>("probe.view", { id: "c" });
		ledger.release();
		expect((await Promise.all(herd)).map(r => r.balance)).toEqual([1, 1, 1, 1, 1]);
		expect((await late).balance).toBe(2);
		expect([ledger.reads, lookups(node, "probe.view", "miss"), lookups(node, "probe.view", "coalesced")]).toEqual([2, 2, 4]);
	});

	it("in a cluster without Redis (a cache per node), strict reads are not cached; others are", async () => {
		const ledger = new Ledger();
		const node = await startNode(new MintMemoryCacher({ singleProcess: false, prefix: "t" }), ledger);
		brokers.push(node);
		for (let i = 0; i < 3; i++) await node.call("probe.strictView", { id: "s" });
		for (let i = 0; i < 3; i++) await node.call("probe.view", { id: "s" });
		expect(ledger.reads).toBe(4);
		expect([lookups(node, "probe.strictView", "miss"), lookups(node, "probe.strictView", "hit"), lookups(node, "probe.view", "hit")]).toEqual([0, 0, 2]);
	});

	it("peek: the entry a call without params would be answered from, counted as a hit, the action not run; nothing once invalidated", async () => {
		const ledger = new Ledger();
		const cacher = new MintMemoryCacher({ singleProcess: true, prefix: "t" });
		const node = await startNode(cacher, ledger);
		brokers.push(node);
		const call = { meta: { user: { id: "p" } }, params: {} };
		ledger.balances.set("p", 7);
		expect(await cacher.peek("probe.mine", MINE_CACHE, call)).toBeUndefined();
		expect(await node.call("probe.mine", {}, { meta: { user: { id: "p" } } })).toEqual({ id: "p", balance: 7 });
		expect(await cacher.peek("probe.mine", MINE_CACHE, call)).toEqual({ value: { id: "p", balance: 7 } });
		expect(await cacher.peek("probe.mine", MINE_CACHE, { meta: { user: { id: "q" } }, params: {} })).toBeUndefined();
		expect(await cacher.peek("probe.mine", MINE_CACHE, { meta: {}, params: {} })).toBeUndefined();
		expect([ledger.reads, lookups(node, "probe.mine", "miss"), lookups(node, "probe.mine", "hit")]).toEqual([1, 1, 1]);
		await cacher.invalidate([cacheScope("probe", "p")]);
		expect(await cacher.peek("probe.mine", MINE_CACHE, call)).toBeUndefined();
		expect(lookups(node, "probe.mine", "hit")).toBe(1);
	});

	it("peek: a strict read is never answered from a cache per node, though an entry is there", async () => {
		const ledger = new Ledger();
		const cacher = new MintMemoryCacher({ singleProcess: false, prefix: "t" });
		const node = await startNode(cacher, ledger);
		brokers.push(node);
		const call = { meta: { user: { id: "r" } }, params: {} };
		await node.call("probe.mine", {}, { meta: { user: { id: "r" } } });
		expect(await cacher.peek("probe.mine", MINE_CACHE, call)).toEqual({ value: { id: "r", balance: 0 } });
		expect(await cacher.peek("probe.mine", { ...MINE_CACHE, strict: true }, call)).toBeUndefined();
	});

	it("callCached: an action with params answered from its entry (a hit, no call); a miss, another subject or an invalidated entry calls it", async () => {
		const ledger = new Ledger();
		const node = await startNode(new MintMemoryCacher({ singleProcess: true, prefix: "t" }), ledger);
		brokers.push(node);
		ledger.balances.set("c", 3);
		const viaReader = (id: string) => node.call<{ balance: number }, { id: string }>("reader.view", { id });
		expect(await viaReader("c")).toEqual({ id: "c", balance: 3 });
		expect([actionRuns(node, "probe.view"), ledger.reads, lookups(node, "probe.view", "miss")]).toEqual([1, 1, 1]);
		// The entry the action stored (its key holds the params): no call at all, counted as a hit.
		expect(await viaReader("c")).toEqual({ id: "c", balance: 3 });
		expect([actionRuns(node, "probe.view"), ledger.reads, lookups(node, "probe.view", "hit")]).toEqual([1, 1, 1]);
		// A direct call is answered from the same entry by the action's own lookup.
		expect(await node.call("probe.view", { id: "c" })).toEqual({ id: "c", balance: 3 });
		expect([actionRuns(node, "probe.view"), ledger.reads, lookups(node, "probe.view", "hit")]).toEqual([2, 1, 2]);
		expect(await viaReader("d")).toEqual({ id: "d", balance: 0 });
		expect([actionRuns(node, "probe.view"), ledger.reads]).toEqual([3, 2]);
		ledger.balances.set("c", 4);
		await (node.cacher as unknown as ExactCacher).invalidate([cacheScope("probe", "c")]);
		expect(await viaReader("c")).toEqual({ id: "c", balance: 4 });
		expect([actionRuns(node, "probe.view"), ledger.reads]).toEqual([4, 3]);
	});

	it("callCached: with tracing on it always calls, so that the trace has the call's span", async () => {
		const ledger = new Ledger();
		const node = await startNode(new MintMemoryCacher({ singleProcess: true, prefix: "t" }), ledger, VIEW_CACHE, { tracing: true });
		brokers.push(node);
		for (let i = 0; i < 2; i++) expect(await node.call("reader.view", { id: "t" })).toEqual({ id: "t", balance: 0 });
		expect([actionRuns(node, "probe.view"), ledger.reads, lookups(node, "probe.view", "hit")]).toEqual([2, 1, 1]);
	});

	it("refuses cache settings it cannot invalidate exactly", async () => {
		const broker = new ServiceBroker({ logger: false, cacher: new MintMemoryCacher({ singleProcess: true, prefix: "t" }) });
		expect(() => broker.createService({ name: "bad", actions: { read: { cache: { keys: ["id"] }, handler: () => 1 } } })).toThrow(/scope, ttl/);
		await broker.stop();
	});
});

describeWithInfra(
	"in Redis, shared by two nodes",
	{ name: `Redis at ${redisHost.host}`, available: tcpReachable(redisHost.hostname, Number(redisHost.port || 6379)) },
	() => {
		const prefix = `mint-test-${crypto.randomUUID().slice(0, 8)}:cache`;
		const ledger = new Ledger();
		let nodeA: ServiceBroker;
		let nodeB: ServiceBroker;
		let cacherB: MintRedisCacher;
		beforeAll(async () => {
			nodeA = await startNode(new MintRedisCacher({ redis: redisOptionsOf(REDIS_URL), prefix }), ledger);
			cacherB = new MintRedisCacher({ redis: redisOptionsOf(REDIS_URL), prefix });
			nodeB = await startNode(cacherB, ledger);
			for (const node of [nodeA, nodeB]) await waitConnected(node);
		});
		afterAll(async () => {
			await nodeA?.stop();
			await nodeB?.stop();
			const redis = new Redis(REDIS_URL);
			const keys = await redis.keys(`${prefix}-*`);
			if (keys.length) await redis.del(...keys);
			expect(await redis.keys(`${prefix}-*`)).toEqual([]);
			await redis.quit();
		});

		it("one node's entry is the other's hit; a write invalidated on one node is never served stale by either", async () => {
			ledger.balances.set("r", 5);
			expect((await nodeA.call<{ balance: number }, { id: string }>("probe.view", { id: "r" })).balance).toBe(5);
			await new Promise(resolve => setTimeout(resolve, 20));
			expect((await nodeB.call<{ balance: number }, { id: string }>("probe.view", { id: "r" })).balance).toBe(5);
			expect(lookups(nodeB, "probe.view", "hit")).toBe(1);

			// Node A reads before the write, node B writes and invalidates, A stores its old result afterwards.
			expect(await raceAWrite(nodeA, () => cacherB.invalidate([cacheScope("probe", "race")]), ledger, "race")).toBe(25);
			expect((await nodeB.call<{ balance: number }, { id: string }>("probe.view", { id: "race" })).balance).toBe(25);

			// An invalidation of one subject leaves the other's entry: still a hit on both nodes.
			const hits = lookups(nodeA, "probe.view", "hit") + lookups(nodeB, "probe.view", "hit");
			for (const node of [nodeA, nodeB]) expect((await node.call<{ balance: number }, { id: string }>("probe.view", { id: "r" })).balance).toBe(5);
			expect(lookups(nodeA, "probe.view", "hit") + lookups(nodeB, "probe.view", "hit")).toBe(hits + 2);
		});

		it("sends a turn's cache commands in one socket write (ioredis's auto-pipelining), each answered as its own", async () => {
			const ids = Array.from({ length: 20 }, (_, i) => `p${i}`);
			for (const [i, id] of ids.entries()) ledger.balances.set(id, i);
			// (ioredis's typings leave its socket out.)
			const writes = countSocketWrites((cacherB.client as unknown as { stream: Socket }).stream);
			try {
				// 20 lookups (a scope's token and the entry each: 40 GETs), all misses, in one turn.
				const views = await Promise.all(ids.map(id => nodeB.call<{ balance: number }, { id: string }>("probe.view", { id })));
				expect(views.map(view => view.balance)).toEqual(ids.map((_, i) => i));
				const lookupWrites = writes.count();
				expect(lookupWrites).toBeGreaterThan(0);
				expect(lookupWrites).toBeLessThan(10);
				// 20 invalidations in one turn: one write, each one done (the next reads are misses).
				writes.reset();
				await Promise.all(ids.map(id => cacherB.invalidate([cacheScope("probe", id)])));
				expect(writes.count()).toBe(1);
			} finally {
				writes.stop();
			}
			const misses = lookups(nodeB, "probe.view", "miss");
			for (const id of ids.slice(0, 3))
				expect((await nodeB.call<{ balance: number }, { id: string }>("probe.view", { id })).balance).toBe(ledger.balances.get(id));
			expect(lookups(nodeB, "probe.view", "miss")).toBe(misses + 3);
		});

		it("callCached on one node is answered from the entry the other node's action stored, without running it", async () => {
			ledger.balances.set("shared", 9);
			expect(await nodeA.call("probe.view", { id: "shared" })).toEqual({ id: "shared", balance: 9 });
			await new Promise(resolve => setTimeout(resolve, 20)); // its store has landed
			const before = [actionRuns(nodeB, "probe.view"), ledger.reads, lookups(nodeB, "probe.view", "hit")];
			expect(await nodeB.call("reader.view", { id: "shared" })).toEqual({ id: "shared", balance: 9 });
			expect([actionRuns(nodeB, "probe.view"), ledger.reads, lookups(nodeB, "probe.view", "hit")]).toEqual([before[0], before[1], before[2] + 1]);
		});
	},
);

async function waitConnected(broker: ServiceBroker): Promise<void> {
	for (let i = 0; i < 100 && broker.cacher?.connected !== true; i++) await new Promise(resolve => setTimeout(resolve, 20));
	expect(broker.cacher?.connected).toBe(true);
}
