/**
 * Redis down: cached reads are served uncached (counted, logged), never
 * failed; writes still answer; and when Redis is back, nothing the outage
 * may have left stale is served.
 */
import crypto from "node:crypto";
import net from "node:net";
import Redis from "ioredis";
import type { ServiceBroker } from "moleculer";
import { CACHE_ERRORS_METRIC, CACHE_LOOKUPS_METRIC } from "../../lib/cacher";
import { createLimiter, takePoints } from "../../lib/limits";
import { startMint } from "../../server";
import { newPerson, signup, signupBody, type Session } from "../helpers/http";
import { describeWithInfra, tcpReachable } from "../helpers/infra";
import { startTestMint, testConfig, waitFor, type TestMint } from "../helpers/mint";
import { topUp } from "../helpers/money";

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const redisHost = new URL(REDIS_URL);

const lookups = (broker: ServiceBroker, action: string, result: string) =>
	(broker.metrics.getMetric(CACHE_LOOKUPS_METRIC)?.get({ action, result }) as { value?: number } | null)?.value ?? 0;
const errors = (broker: ServiceBroker, operation: string) =>
	(broker.metrics.getMetric(CACHE_ERRORS_METRIC)?.get({ operation }) as { value?: number } | null)?.value ?? 0;

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
	const server = net.createServer();
	await new Promise<void>(resolve => server.listen(0, "127.0.0.1", resolve));
	const { port } = server.address() as net.AddressInfo;
	await new Promise(resolve => server.close(resolve));
	return port;
}

describe("with REDIS_URL on a closed port", () => {
	let broker: ServiceBroker;
	beforeAll(async () => {
		broker = await startMint(testConfig({ SERVICES: "wallet", REDIS_URL: `redis://127.0.0.1:${await closedPort()}` }));
	});
	afterAll(() => broker?.stop());

	it("cached reads answer uncached and are counted; writes answer; the broker stops", async () => {
		const userId = crypto.randomUUID();
		const meta = { user: { id: userId, sid: "s" } };
		const before = lookups(broker, "wallet.mine", "unavailable");
		for (let i = 0; i < 3; i++) expect(await broker.call("wallet.mine", {}, { meta })).toMatchObject({ userId, balance: 0 });
		expect(lookups(broker, "wallet.mine", "unavailable") - before).toBe(3);
		expect([lookups(broker, "wallet.mine", "hit"), lookups(broker, "wallet.mine", "miss")]).toEqual([0, 0]);
		expect(await broker.call("wallet.credit", { userId, txId: "t1", amountMinor: 700 })).toMatchObject({ outcome: "applied", balanceMinor: 700 });
		expect(errors(broker, "invalidate")).toBeGreaterThan(0);
		expect(await broker.call("wallet.mine", {}, { meta })).toMatchObject({ balance: 7 });
	});
});

describe("rate limits with REDIS_URL on a closed port", () => {
	it("a limiter counts in the process instead: the allowance holds, the next is refused, nothing fails", async () => {
		const redis = new Redis(`redis://127.0.0.1:${await closedPort()}`, { maxRetriesPerRequest: 1, lazyConnect: true, enableOfflineQueue: false });
		try {
			const limiter = createLimiter({ name: `down-${crypto.randomUUID()}`, points: 3, durationSec: 60 }, redis);
			for (let i = 0; i < 3; i++) await takePoints([[limiter, "k"]]);
			await expect(takePoints([[limiter, "k"]])).rejects.toMatchObject({ code: 429 });
			// Another key has its own allowance.
			await takePoints([[limiter, "other"]]);
		} finally {
			redis.disconnect();
		}
	});

	it("through the gateway: signups and logins answer, and the signup limit still refuses the third", async () => {
		const mint = await startTestMint({ REDIS_URL: `redis://127.0.0.1:${await closedPort()}`, SIGNUPS_PER_IP_HOUR: "2" });
		try {
			const alice = await signup(mint);
			expect((await mint.http.post("/api/v1/auth/login").send({ email: alice.person.email, password: alice.person.password })).status).toBe(200);
			expect((await mint.http.post("/api/v1/auth/signup").send(signupBody(newPerson()))).status).toBe(201);
			const third = await mint.http.post("/api/v1/auth/signup").send(signupBody(newPerson()));
			expect([third.status, third.body.error?.status, Number(third.headers["retry-after"]) > 0]).toEqual([429, 429, true]);
		} finally {
			await mint.stop();
		}
	}, 30_000);
});

/** A TCP proxy to the real Redis that can be cut (every connection dropped, new ones refused) and restored. */
class RedisCut {
	private server?: net.Server;
	private readonly sockets = new Set<net.Socket>();
	port = 0;

	async open(): Promise<void> {
		this.server = net.createServer(client => {
			const upstream = net.connect(Number(redisHost.port || 6379), redisHost.hostname);
			for (const s of [client, upstream]) {
				this.sockets.add(s);
				s.on("close", () => this.sockets.delete(s));
				s.on("error", () => undefined);
			}
			client.pipe(upstream).pipe(client);
		});
		await new Promise<void>(resolve => this.server!.listen(this.port, "127.0.0.1", resolve));
		this.port = (this.server.address() as net.AddressInfo).port;
	}

	async cut(): Promise<void> {
		const closed = new Promise(resolve => this.server?.close(resolve));
		for (const s of this.sockets) s.destroy();
		await closed;
	}
}

describeWithInfra(
	"Redis cut under a running Mint, then back",
	{ name: `Redis at ${redisHost.host}`, available: tcpReachable(redisHost.hostname, Number(redisHost.port || 6379)) },
	() => {
		const namespace = `mint-test-${crypto.randomUUID().slice(0, 8)}`;
		const redisCut = new RedisCut();
		let mint: TestMint;
		let alice: Session & { person: { email: string } };
		beforeAll(async () => {
			await redisCut.open();
			mint = await startTestMint({ REDIS_URL: `redis://127.0.0.1:${redisCut.port}`, NAMESPACE: namespace });
			await waitFor(() => mint.broker.cacher?.connected === true);
			alice = await signup(mint);
		});
		afterAll(async () => {
			await mint?.stop();
			await redisCut.cut();
			const redis = new Redis(REDIS_URL);
			const keys = [...(await redis.keys(`${namespace}:cache-*`)), ...(await redis.keys(`mint:*${alice?.person.email}`))];
			if (keys.length) await redis.del(...keys);
			await redis.quit();
		});

		const walletBalance = async () => {
			const res = await mint.http.get("/api/v1/wallet/user").set("Cookie", alice.cookie);
			expect(res.status).toBe(200);
			return res.body.balance as number;
		};

		it("serves GET /wallet/user uncached while Redis is out of reach, and nothing stale when it is back", async () => {
			expect((await topUp(mint, alice, 10)).status).toBe(201);
			expect(await walletBalance()).toBe(10);
			const hits = lookups(mint.broker, "wallet.mine", "hit");
			expect(await walletBalance()).toBe(10);
			expect(lookups(mint.broker, "wallet.mine", "hit")).toBe(hits + 1); // cached in Redis

			await redisCut.cut();
			await waitFor(() => mint.broker.cacher?.connected === false);
			const unavailable = lookups(mint.broker, "wallet.mine", "unavailable");
			expect(await walletBalance()).toBe(10);
			// A write during the outage: its invalidation cannot reach Redis.
			expect((await topUp(mint, alice, 5)).status).toBe(201);
			expect(await walletBalance()).toBe(15);
			expect(lookups(mint.broker, "wallet.mine", "unavailable")).toBe(unavailable + 2);
			expect(errors(mint.broker, "invalidate")).toBeGreaterThan(0);

			// Back: the entry from before the outage (balance 10) is still in Redis, but never served.
			await redisCut.open();
			await waitFor(async () => {
				const served = lookups(mint.broker, "wallet.mine", "unavailable");
				expect(await walletBalance()).toBe(15);
				return lookups(mint.broker, "wallet.mine", "unavailable") === served;
			}, 10_000);
			const hitsAfter = lookups(mint.broker, "wallet.mine", "hit");
			expect(await walletBalance()).toBe(15);
			expect(await walletBalance()).toBe(15);
			expect(lookups(mint.broker, "wallet.mine", "hit")).toBeGreaterThan(hitsAfter);
		}, 20_000);
	},
);
