/**
 * The cache in the cluster (two gateways and a core node over the real
 * RabbitMQ, the cache in the real Redis): after a 201 through one gateway,
 * reads through the other show the new balances, status and history at once,
 * while what the change did not touch stays cached.
 */
import { execFile } from "node:child_process";
import crypto from "node:crypto";
import { promisify } from "node:util";
import Redis from "ioredis";
import type { ServiceBroker } from "moleculer";
import type request from "supertest";
import { CACHE_LOOKUPS_METRIC } from "../../lib/cacher";
import { startMint } from "../../server";
import { browserAgent, newPerson, sessionFrom, signupBody, type Person, type Session } from "../helpers/http";
import { RABBITMQ_URL, describeWithInfra, rabbitmqNeed, removeFromRabbitmq, tcpReachable } from "../helpers/infra";
import { actionRuns, testConfig } from "../helpers/mint";

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const redisHost = new URL(REDIS_URL);
const redisAvailable = tcpReachable(redisHost.hostname, Number(redisHost.port || 6379));
const rabbitmq = rabbitmqNeed();

async function removeNamespaceFromRabbitmq(namespace: string): Promise<void> {
	const ours = (name: string) => name.startsWith(`MOL-${namespace}.`) || name.startsWith(`${namespace}.`);
	const names = async (what: string) => (await promisify(execFile)("rabbitmqctl", [what, "name", "-q", "--no-table-headers"])).stdout.split("\n").filter(ours);
	const [queues, exchanges] = await Promise.all([names("list_queues"), names("list_exchanges")]);
	await removeFromRabbitmq({ queues, exchanges });
}

const lookups = (broker: ServiceBroker, action: string, result: string) =>
	(broker.metrics.getMetric(CACHE_LOOKUPS_METRIC)?.get({ action, result }) as { value?: number } | null)?.value ?? 0;

describeWithInfra(
	"the cache in a cluster with Redis",
	{ name: `${rabbitmq.name} and Redis at ${redisHost.host}`, available: rabbitmq.available && redisAvailable },
	() => {
		const namespace = `mint-test-${crypto.randomUUID().slice(0, 8)}`;
		let core: ServiceBroker;
		const gateways: ServiceBroker[] = [];
		const http: ReturnType<typeof request>[] = [];
		const people: Person[] = [];

		beforeAll(async () => {
			const shared = { TRANSPORTER: RABBITMQ_URL, NAMESPACE: namespace, REDIS_URL };
			core = await startMint(testConfig({ ...shared, SERVICES: "auth,wallet,transactions", NODE_ID: `${namespace}-core` }));
			for (const i of [0, 1]) gateways.push(await startMint(testConfig({ ...shared, SERVICES: "api", NODE_ID: `${namespace}-gw${i}` })));
			for (const gateway of gateways) await gateway.waitForServices(["auth", "wallet", "transactions"], 10_000);
			await core.waitForServices(["api"], 10_000);
			http.push(...gateways.map(g => browserAgent((g.getLocalService("api") as any).server)));
		}, 40_000);

		afterAll(async () => {
			for (const gateway of gateways) await gateway.stop();
			await core?.stop();
			await removeNamespaceFromRabbitmq(namespace);
			const redis = new Redis(REDIS_URL);
			const keys = [...(await redis.keys(`${namespace}:cache-*`)), ...(await Promise.all(people.map(p => redis.keys(`mint:*${p.email}`)))).flat()];
			if (keys.length) await redis.del(...keys);
			expect(await redis.keys(`${namespace}:*`)).toEqual([]);
			await redis.quit();
		});

		const signUp = async (): Promise<Session & { id: string }> => {
			const person = newPerson();
			people.push(person);
			const res = await http[0].post("/api/v1/auth/signup").send(signupBody(person));
			expect(res.status).toBe(201);
			return { ...sessionFrom(res), id: res.body.id };
		};
		/** wallet.mine's hits on any node: a gateway answers them itself (api/cached-reads.ts). */
		const walletHits = () => [core, ...gateways].reduce((sum, broker) => sum + lookups(broker, "wallet.mine", "hit"), 0);
		const balance = async (agent: ReturnType<typeof request>, s: Session) => {
			const res = await agent.get("/api/v1/wallet/user").set("Authorization", `Bearer ${s.access}`);
			expect(res.status).toBe(200);
			return res.body.balance as number;
		};

		it("a transfer answered 201 by one gateway: the other shows both balances, its status and history at once; a bystander's entry stays cached", async () => {
			const [alice, bob, carol] = [await signUp(), await signUp(), await signUp()];
			const bearer = (s: Session) => `Bearer ${s.access}`;
			expect((await http[0].post("/api/v1/transactions/topup").set("Authorization", bearer(alice)).send({ amount: 30 })).status).toBe(201);
			// Every read the transfer must invalidate is cached, in Redis, read through the other gateway.
			for (const s of [alice, bob, carol]) await balance(http[1], s);
			await http[1].get("/api/v1/transactions").set("Authorization", bearer(alice));
			await http[1].get("/api/v1/transactions").set("Authorization", bearer(bob));
			const hits = walletHits();
			const coreRuns = actionRuns(core, "wallet.mine");
			for (const s of [alice, bob, carol]) await balance(http[0], s);
			expect(walletHits()).toBe(hits + 3);
			// Answered by the gateway from Redis: no call reached the wallet's node.
			expect(lookups(gateways[0], "wallet.mine", "hit")).toBeGreaterThanOrEqual(3);
			expect(actionRuns(core, "wallet.mine")).toBe(coreRuns);
			const redis = new Redis(REDIS_URL);
			expect((await redis.keys(`${namespace}:cache-wallet.mine:*`)).length).toBeGreaterThanOrEqual(3);
			await redis.quit();

			const sent = await http[0].post("/api/v1/transactions/transfer").set("Authorization", bearer(alice)).send({ amount: 12.5, toUserId: bob.id });
			expect([sent.status, sent.body.status]).toEqual([201, "Completed"]);

			const bystanderHits = walletHits();
			expect(await balance(http[1], carol)).toBe(0);
			expect(walletHits()).toBe(bystanderHits + 1);
			expect(await balance(http[1], alice)).toBe(17.5);
			expect(await balance(http[1], bob)).toBe(12.5);
			for (const s of [alice, bob]) {
				const got = await http[1].get(`/api/v1/transactions/${sent.body.id}`).set("Authorization", bearer(s));
				expect([got.status, got.body.status]).toEqual([200, "Completed"]);
				const history = await http[1].get(`/api/v1/transactions/${sent.body.id}/history`).set("Authorization", bearer(s));
				expect(history.body.map((h: { status: string }) => h.status)).toEqual(["Pending", "Processing", "Completed"]);
				const list = await http[1].get("/api/v1/transactions").set("Authorization", bearer(s));
				expect(list.body.transactions[0]).toMatchObject({ id: sent.body.id, status: "Completed" });
			}
			// Cached again (the read above filled it), through either gateway.
			const again = walletHits();
			expect(await balance(http[0], alice)).toBe(17.5);
			expect(await balance(http[1], alice)).toBe(17.5);
			expect(walletHits()).toBe(again + 2);
		});

		it("a profile change through one gateway is what the other shows at once", async () => {
			const dave = await signUp();
			const me = () => http[1].get("/api/v1/auth/user").set("Authorization", `Bearer ${dave.access}`);
			await me();
			const hits = lookups(core, "auth.me", "hit");
			expect((await me()).body.firstName).not.toBe("Davide");
			expect(lookups(core, "auth.me", "hit")).toBe(hits + 1);
			expect((await http[0].put("/api/v1/users/me").set("Authorization", `Bearer ${dave.access}`).send({ firstName: "Davide" })).status).toBe(200);
			expect((await me()).body.firstName).toBe("Davide");
		});
	},
);
