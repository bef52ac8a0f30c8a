/**
 * Wallet streams across a cluster over the real RabbitMQ: two gateways and
 * a core node. A change made through one gateway reaches the streams held
 * by the other (every gateway hears every wallet and transaction event), a
 * logout through one ends the session's streams on the other, a stream
 * sees nothing of other users, and each gateway caps its streams.
 */
import { execFile } from "node:child_process";
import crypto from "node:crypto";
import type { AddressInfo } from "node:net";
import { promisify } from "node:util";
import type { ServiceBroker } from "moleculer";
import type request from "supertest";
import { startMint } from "../../server";
import { browserAgent, newPerson, sessionFrom, signupBody, type Session } from "../helpers/http";
import { RABBITMQ_URL, describeWithInfra, rabbitmqNeed, removeFromRabbitmq } from "../helpers/infra";
import { testConfig, waitFor } from "../helpers/mint";
import { openStream, type SseStream } from "../helpers/sse";

/** Everything a namespace left in RabbitMQ: Moleculer's exchanges and queues, the durable events' ones. */
async function removeNamespaceFromRabbitmq(namespace: string): Promise<void> {
	const ours = (name: string) => name.startsWith(`MOL-${namespace}.`) || name.startsWith(`${namespace}.`);
	const names = async (what: string) => (await promisify(execFile)("rabbitmqctl", [what, "name", "-q", "--no-table-headers"])).stdout.split("\n").filter(ours);
	const [queues, exchanges] = await Promise.all([names("list_queues"), names("list_exchanges")]);
	await removeFromRabbitmq({ queues, exchanges });
}

describeWithInfra("wallet streams across gateways", rabbitmqNeed(), () => {
	const namespace = `mint-test-${crypto.randomUUID().slice(0, 8)}`;
	let core: ServiceBroker;
	const gateways: ServiceBroker[] = [];
	const http: ReturnType<typeof request>[] = [];
	const ports: number[] = [];
	const opened: SseStream[] = [];

	beforeAll(async () => {
		const shared = { TRANSPORTER: RABBITMQ_URL, NAMESPACE: namespace, STREAM_HEARTBEAT_SEC: "1" };
		core = await startMint(testConfig({ ...shared, SERVICES: "auth,wallet,transactions", NODE_ID: `${namespace}-core` }));
		for (const i of [1, 2]) gateways.push(await startMint(testConfig({ ...shared, SERVICES: "api", NODE_ID: `${namespace}-gateway-${i}` })));
		for (const gateway of gateways) await gateway.waitForServices(["auth", "wallet", "transactions"], 10_000);
		// The core knows both gateways (and their event subscriptions) before anything is published.
		await waitFor(() => core.registry.getServiceList({ onlyAvailable: true }).filter(s => s.name === "api").length === 2, 10_000);
		for (const gateway of gateways) {
			const server = (gateway.getLocalService("api") as any).server;
			http.push(browserAgent(server));
			ports.push((server.address() as AddressInfo).port);
		}
	}, 40_000);

	afterEach(() => {
		for (const stream of opened.splice(0)) stream.close();
	});

	afterAll(async () => {
		for (const gateway of gateways) await gateway.stop();
		await core?.stop();
		await removeNamespaceFromRabbitmq(namespace);
	});

	const signUp = async (): Promise<Session> => sessionFrom(await http[0].post("/api/v1/auth/signup").send(signupBody(newPerson())));

	/** A stream on gateway `i` (0 or 1) that has sent its first event. */
	async function streamOn(i: number, session: Session): Promise<SseStream> {
		const stream = await openStream(ports[i], { headers: { Authorization: `Bearer ${session.access}` } });
		opened.push(stream);
		expect(stream.status).toBe(200);
		await stream.until(s => s.events.length >= 1);
		return stream;
	}

	const completed = (id: string) => (s: SseStream) => s.events.find(e => e.event === "transaction" && e.data.id === id && e.data.status === "Completed");

	it("a transfer through gateway 1 reaches the recipient's stream on gateway 2 within 200 ms of its 201, and both parties' streams on both gateways", async () => {
		const [alice, bob] = [await signUp(), await signUp()];
		const streams = { alice: [await streamOn(0, alice), await streamOn(1, alice)], bob: [await streamOn(0, bob), await streamOn(1, bob)] };
		expect((await http[0].post("/api/v1/transactions/topup").set("Cookie", alice.cookie).send({ amount: 40 })).status).toBe(201);

		const sent = await http[0].post("/api/v1/transactions/transfer").set("Cookie", alice.cookie).send({ amount: 15.5, toUserId: bob.user.id });
		const answeredAt = performance.now();
		expect([sent.status, sent.body.status]).toEqual([201, "Completed"]);
		const credited = await streams.bob[1].until(s => s.events.find(e => e.event === "balance" && e.data.transactionId === sent.body.id), 2000);
		const lateMs = Math.max(0, credited.at - answeredAt);
		expect(lateMs).toBeLessThanOrEqual(200);
		expect(credited.data).toMatchObject({ userId: bob.user.id, balance: 15.5, direction: "credit", amount: 15.5 });

		for (const stream of [...streams.alice, ...streams.bob]) await stream.until(completed(sent.body.id), 2000);
		const balances = (stream: SseStream) => stream.named().flatMap(([event, data]) => (event === "balance" ? [data.balance] : []));
		for (const stream of streams.alice) expect(balances(stream)).toEqual([0, 40, 24.5]);
		for (const stream of streams.bob) expect(balances(stream)).toEqual([0, 15.5]);
		// The same events, with the same ids, on both gateways.
		expect(streams.bob[0].events.map(e => e.id).slice(1)).toEqual(streams.bob[1].events.map(e => e.id).slice(1));
	});

	it("a user's streams, on either gateway, see nothing of another user's money", async () => {
		const [alice, bob, carol] = [await signUp(), await signUp(), await signUp()];
		const carols = [await streamOn(0, carol), await streamOn(1, carol)];
		const bobs = await streamOn(1, bob);
		await http[1].post("/api/v1/transactions/topup").set("Cookie", alice.cookie).send({ amount: 10 });
		const sent = await http[1].post("/api/v1/transactions/transfer").set("Cookie", alice.cookie).send({ amount: 5, toUserId: bob.user.id });
		await bobs.until(completed(sent.body.id), 2000);
		for (const stream of carols) {
			// Heartbeats come through (the stream is alive), nothing else.
			await stream.until(s => s.comments.length >= 1, 3000);
			expect(stream.named()).toEqual([["balance", expect.objectContaining({ userId: carol.user.id, balance: 0 })]]);
		}
	});

	it("a logout through gateway 1 ends the session's streams on gateway 2 by the time it answers", async () => {
		const alice = await signUp();
		const streams = [await streamOn(1, alice), await streamOn(0, alice)];
		expect((await http[0].post("/api/v1/auth/logout").set("Cookie", alice.cookie)).status).toBe(204);
		// auth waits for every gateway to deny the session before it answers; the streams end there and then.
		await new Promise(resolve => setTimeout(resolve, 50));
		for (const stream of streams) {
			expect(stream.named().at(-1)).toEqual(["end", { reason: "session-revoked" }]);
			expect(await stream.ended).toBe(true);
		}
		expect((await openStream(ports[1], { headers: { Authorization: `Bearer ${alice.access}` } })).status).toBe(401);
	});

	it("each gateway caps a user's streams (5): the sixth on one gateway is 429, the other gateway has its own count", async () => {
		const alice = await signUp();
		for (let i = 0; i < 5; i++) await streamOn(0, alice);
		const sixth = await openStream(ports[0], { headers: { Authorization: `Bearer ${alice.access}` } });
		expect([sixth.status, sixth.headers["retry-after"], sixth.body.error.status]).toEqual([429, "10", 429]);
		expect((await streamOn(1, alice)).status).toBe(200);
	});
});
