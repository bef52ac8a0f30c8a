/** Login-failure counts in the real Redis: shared by every auth node, expiring with the window. */
import crypto from "node:crypto";
import Redis from "ioredis";
import { RedisFailureThrottle } from "../../services/auth/passwords";
import { describeWithInfra, tcpReachable } from "../helpers/infra";
import { startTestMint } from "../helpers/mint";
import { signup } from "../helpers/http";

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const redisHost = new URL(REDIS_URL);

describeWithInfra("login throttling in Redis", { name: `Redis at ${redisHost.host}`, available: tcpReachable(redisHost.hostname, Number(redisHost.port || 6379)) }, () => {
	let redis: Redis;
	const prefix = `mint-test:${crypto.randomUUID()}:`;
	beforeAll(() => {
		redis = new Redis(REDIS_URL);
	});
	afterAll(async () => {
		const keys = await redis.keys(`${prefix}*`);
		if (keys.length) await redis.del(...keys);
		await redis.quit();
	});

	it("blocks at the maximum for the rest of the window, counted across two nodes' throttles", async () => {
		const nodeA = new RedisFailureThrottle(redis, 60, prefix);
		const nodeB = new RedisFailureThrottle(redis, 60, prefix);
		await nodeA.fail("account:a@example.com");
		await nodeB.fail("account:a@example.com");
		expect(await nodeA.check("account:a@example.com", 3)).toEqual({ blocked: false, retryAfterSec: 0 });
		await nodeA.fail("account:a@example.com");
		const decision = await nodeB.check("account:a@example.com", 3);
		expect(decision.blocked).toBe(true);
		expect(decision.retryAfterSec).toBeGreaterThan(55);
		expect(decision.retryAfterSec).toBeLessThanOrEqual(60);
		expect((await nodeB.check("account:other@example.com", 3)).blocked).toBe(false);
	});

	it("clear() resets one key, and the window expires by itself", async () => {
		const throttle = new RedisFailureThrottle(redis, 1, prefix);
		for (let i = 0; i < 2; i++) await throttle.fail("ip:10.0.0.1");
		for (let i = 0; i < 2; i++) await throttle.fail("ip:10.0.0.2");
		await throttle.clear("ip:10.0.0.1");
		expect((await throttle.check("ip:10.0.0.1", 2)).blocked).toBe(false);
		expect((await throttle.check("ip:10.0.0.2", 2)).blocked).toBe(true);
		await new Promise(r => setTimeout(r, 1100));
		expect(await throttle.check("ip:10.0.0.2", 2)).toEqual({ blocked: false, retryAfterSec: 0 });
	});

	it("is what auth uses when REDIS_URL is set (failures survive an auth restart)", async () => {
		const env = { REDIS_URL, LOGIN_MAX_FAILURES_PER_ACCOUNT: "2" };
		const first = await startTestMint(env);
		const { person } = await signup(first);
		for (let i = 0; i < 2; i++) await first.http.post("/api/v1/auth/login").send({ email: person.email, password: "wrong password" });
		await first.stop({ keepData: true });
		const second = await startTestMint({ ...env, DATA_DIR: first.dataDir });
		try {
			const res = await second.http.post("/api/v1/auth/login").send({ email: person.email, password: person.password });
			expect(res.status).toBe(429);
			expect(Number(res.headers["retry-after"])).toBeGreaterThan(0);
		} finally {
			// Leave no counts behind for later runs against the same Redis.
			const keys = await redis.keys("mint:login-failures:*");
			if (keys.length) await redis.del(...keys);
			await second.stop();
		}
	});
});
