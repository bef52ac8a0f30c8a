/** Login attempts counted in the real Redis: shared by every auth node, surviving an auth restart. */
import crypto from "node:crypto";
import Redis from "ioredis";
import { LoginGuard } from "../../services/auth/login-guard";
import { describeWithInfra, tcpReachable } from "../helpers/infra";
import { startTestMint } from "../helpers/mint";
import { signup } from "../helpers/http";

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const redisHost = new URL(REDIS_URL);

describeWithInfra(
	"login throttling in Redis",
	{ name: `Redis at ${redisHost.host}`, available: tcpReachable(redisHost.hostname, Number(redisHost.port || 6379)) },
	() => {
		let redis: Redis;
		beforeAll(() => {
			redis = new Redis(REDIS_URL);
		});
		afterAll(async () => {
			// Leave no counts behind for later runs against the same Redis.
			const keys = await redis.keys("mint:login-*");
			if (keys.length) await redis.del(...keys);
			await redis.quit();
		});

		it("two nodes' guards share one count: parallel attempts over both get only the allowance", async () => {
			const opts = { maxPerPair: 3, maxPerIp: 100, windowSec: 60 };
			const nodeA = new LoginGuard(opts, redis);
			const nodeB = new LoginGuard(opts, redis);
			const email = `${crypto.randomUUID()}@example.com`;
			const results = await Promise.allSettled(Array.from({ length: 12 }, (_, i) => (i % 2 ? nodeA : nodeB).admit(email, "203.0.113.9")));
			expect(results.filter(r => r.status === "fulfilled")).toHaveLength(3);
			const refusals = results.flatMap(r => (r.status === "rejected" ? [r.reason as { code: number; data: { retryAfter: number } }] : []));
			expect(refusals.map(r => r.code)).toEqual(Array(9).fill(429));
			// After the burst the pair waits out its first delay, whichever node it asks.
			const next = await nodeB.admit(email, "203.0.113.9").catch((err: { code: number; data: { retryAfter: number } }) => err);
			expect([(next as { code: number }).code, (next as { data: { retryAfter: number } }).data.retryAfter <= 30]).toEqual([429, true]);
			// The owner, from another address, is not locked out.
			await expect(nodeA.admit(email, "198.51.100.1")).resolves.toBeUndefined();
		});

		it("is what auth uses when REDIS_URL is set (attempts survive an auth restart)", async () => {
			const env = { REDIS_URL, LOGIN_MAX_FAILURES_PER_ACCOUNT: "2" };
			const first = await startTestMint(env);
			const { person } = await signup(first);
			for (let i = 0; i < 2; i++)
				expect((await first.http.post("/api/v1/auth/login").send({ email: person.email, password: "wrong password" })).status).toBe(401);
			await first.stop({ keepData: true });
			const second = await startTestMint({ ...env, DATA_DIR: first.dataDir });
			try {
				const res = await second.http.post("/api/v1/auth/login").send({ email: person.email, password: person.password });
				expect(res.status).toBe(429);
				expect(Number(res.headers["retry-after"])).toBe(30);
			} finally {
				await second.stop();
			}
		});
	},
);
