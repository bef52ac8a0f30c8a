/**
 * What every node must hear, every node hears (over the real RabbitMQ, two
 * gateways and a core node, no Redis): a logout through one gateway ends the
 * session on the other at once, a key rotation reaches both gateways, and a
 * cache invalidation reaches every node of a service, broadcast or emitted.
 */
import { execFile } from "node:child_process";
import crypto from "node:crypto";
import { promisify } from "node:util";
import type { Context, ServiceBroker } from "moleculer";
import type request from "supertest";
import { BROADCAST_EVENTS, DURABLE_EVENTS } from "../../contracts/events";
import { CACHE_LOOKUPS_METRIC } from "../../lib/cacher";
import { publish } from "../../lib/events";
import { CacheCleaner } from "../../mixins/cache-cleaner.mixin";
import { startMint } from "../../server";
import { browserAgent, newPerson, sessionFrom, signupBody } from "../helpers/http";
import { RABBITMQ_URL, describeWithInfra, rabbitmqNeed, removeFromRabbitmq } from "../helpers/infra";
import { testConfig, waitFor } from "../helpers/mint";

/** Everything a namespace left in RabbitMQ: Moleculer's exchanges and queues, the durable events' ones. */
async function removeNamespaceFromRabbitmq(namespace: string): Promise<void> {
	const ours = (name: string) => name.startsWith(`MOL-${namespace}.`) || name.startsWith(`${namespace}.`);
	const names = async (what: string) => (await promisify(execFile)("rabbitmqctl", [what, "name", "-q", "--no-table-headers"])).stdout.split("\n").filter(ours);
	const [queues, exchanges] = await Promise.all([names("list_queues"), names("list_exchanges")]);
	await removeFromRabbitmq({ queues, exchanges });
}

/** A service with a cached read, cleaned on a broadcast event (wallet.credited) and an emitted one (transaction.processing). */
function probeService(reads: { count: number }) {
	return {
		name: "probe",
		mixins: [CacheCleaner({ "wallet.credited": ["userId"], "transaction.processing": ["userId", "fromUserId", "toUserId"] })],
		actions: {
			view: {
				cache: { scope: "id", ttl: 60 },
				params: { id: "string" },
				handler(ctx: Context<{ id: string }>) {
					reads.count++;
					return { id: ctx.params.id, read: reads.count };
				},
			},
		},
	};
}

describe("publish()", () => {
	it("broadcasts the events every node must hear, emits the others, checks both against their contracts", async () => {
		const sent: [string, string][] = [];
		const broker = { emit: (name: string) => void sent.push(["emit", name]), broadcast: (name: string) => void sent.push(["broadcast", name]) };
		await publish(broker, "auth.sessionsRevoked", { sids: ["s"], expiresAt: Date.now() + 1000 });
		await publish(broker, "user.updated", { userId: crypto.randomUUID(), change: "profile" });
		await publish(broker, "wallet.created", { walletId: "w", userId: "u", currency: "USD" });
		await publish(broker, "transaction.processing", { transactionId: "t", type: "TopUp", status: "Processing", amountMinor: 1, currency: "USD", userId: "u" });
		await expect(publish(broker, "user.updated", { userId: "not-a-uuid", change: "profile" })).rejects.toThrow(/user.updated breaks its contract/);
		expect(sent).toEqual([
			["broadcast", "auth.sessionsRevoked"],
			["broadcast", "user.updated"],
			["broadcast", "wallet.created"],
			["emit", "transaction.processing"],
		]);
		expect(BROADCAST_EVENTS.filter(name => DURABLE_EVENTS.includes(name))).toEqual([]);
	});
});

describeWithInfra("every node hears what it must", rabbitmqNeed(), () => {
	const namespace = `mint-test-${crypto.randomUUID().slice(0, 8)}`;
	let core: ServiceBroker;
	const gateways: ServiceBroker[] = [];
	const http: ReturnType<typeof request>[] = [];
	const reads = [{ count: 0 }, { count: 0 }];

	beforeAll(async () => {
		// The periodic JWKS refresh would hide a missed rotation event: make it as rare as allowed.
		const shared = { TRANSPORTER: RABBITMQ_URL, NAMESPACE: namespace, JWKS_REFRESH_SEC: "300" };
		core = await startMint(testConfig({ ...shared, SERVICES: "auth,wallet,transactions", NODE_ID: `${namespace}-core` }));
		for (const i of [0, 1]) {
			gateways.push(await startMint(testConfig({ ...shared, SERVICES: "api", NODE_ID: `${namespace}-gw${i}` }), [probeService(reads[i])]));
		}
		for (const gateway of gateways) await gateway.waitForServices(["auth", "wallet", "transactions"], 10_000);
		await core.waitForServices([{ name: "api" }, { name: "probe" }], 10_000);
		// Both gateways, and both probes, are known to the core node before anything is published.
		await waitFor(() => core.registry.getServiceList({ onlyAvailable: true }).filter(s => s.name === "api").length === 2, 10_000);
		http.push(...gateways.map(g => browserAgent((g.getLocalService("api") as any).server)));
	}, 40_000);

	afterAll(async () => {
		for (const gateway of gateways) await gateway.stop();
		await core?.stop();
		await removeNamespaceFromRabbitmq(namespace);
	});

	it("a logout through one gateway: the access token replayed at once through the other is refused", async () => {
		const session = sessionFrom(await http[0].post("/api/v1/auth/signup").send(signupBody(newPerson())));
		const bearer = `Bearer ${session.access}`;
		// The second gateway has verified (and cached) the token, and loaded the revocation list: its next resync is 10 s away.
		expect((await http[1].get("/api/v1/wallet/user").set("Authorization", bearer)).status).toBe(200);
		expect((await http[1].get("/api/v1/auth/user").set("Authorization", bearer)).body).toMatchObject({ id: expect.any(String) });

		expect((await http[0].post("/api/v1/auth/logout").set("Cookie", session.cookie)).status).toBe(204);
		// At once: the logout answered only after every gateway acknowledged the revocation, so the very first replay is refused.
		expect((await http[1].get("/api/v1/wallet/user").set("Authorization", bearer)).status).toBe(401);
		expect((await http[1].get("/api/v1/auth/user").set("Authorization", bearer)).body).toBeNull();
		expect((await http[0].get("/api/v1/wallet/user").set("Authorization", bearer)).status).toBe(401);
	});

	it("a key rotation is heard by both gateways: each rereads the JWKS at once", async () => {
		const kidsOf = (gateway: ServiceBroker): Set<string> => (gateway.getLocalService("api") as any).verifier.kids;
		// Both gateways hold a key set (a verification loaded it).
		const session = sessionFrom(await http[0].post("/api/v1/auth/signup").send(signupBody(newPerson())));
		for (const agent of http) expect((await agent.get("/api/v1/wallet/user").set("Authorization", `Bearer ${session.access}`)).status).toBe(200);

		const rotated = await core.call<{ rotated: boolean; published: string[] }>("auth.rotateKeys");
		expect(rotated.rotated).toBe(true);
		for (const gateway of gateways) expect([...kidsOf(gateway)].sort()).not.toEqual([...rotated.published].sort());
		await waitFor(() => gateways.every(gateway => [...kidsOf(gateway)].sort().join() === [...rotated.published].sort().join()), 2000);
	});

	it("a cache invalidation reaches the service's cache on every node, whether broadcast (wallet.*) or emitted (transaction.*)", async () => {
		const nodeIds = gateways.map(g => g.nodeID);
		const view = (i: number, id: string) => core.call<{ read: number }, { id: string }>("probe.view", { id }, { nodeID: nodeIds[i] });
		const userId = crypto.randomUUID();
		const fill = async () => {
			for (const i of [0, 1]) await view(i, userId);
			const before = reads.map(r => r.count);
			for (const i of [0, 1]) await view(i, userId);
			expect(reads.map(r => r.count)).toEqual(before); // both hits
			return before;
		};

		let before = await fill();
		await publish(core, "wallet.credited", { walletId: "w", userId, transactionId: "t", direction: "credit", amountMinor: 1, balanceMinor: 1 });
		await waitFor(async () => {
			for (const i of [0, 1]) await view(i, userId);
			return reads.every((r, i) => r.count > before[i]);
		}, 2000);

		before = await fill();
		const transaction = { transactionId: "t", type: "TopUp", status: "Processing", amountMinor: 1, currency: "USD", userId };
		await publish(core, "transaction.processing", transaction);
		await waitFor(async () => {
			for (const i of [0, 1]) await view(i, userId);
			return reads.every((r, i) => r.count > before[i]);
		}, 2000);
	});

	it("without Redis, a balance is not cached on a cluster node (each node's cache is its own)", async () => {
		const session = sessionFrom(await http[0].post("/api/v1/auth/signup").send(signupBody(newPerson())));
		for (const agent of [...http, ...http]) expect((await agent.get("/api/v1/wallet/user").set("Cookie", session.cookie)).status).toBe(200);
		const walletLookups = core.metrics
			.getMetric(CACHE_LOOKUPS_METRIC)
			?.snapshot()
			.filter((item: any) => item.labels.action === "wallet.mine");
		expect(walletLookups).toEqual([]);
	});
});
