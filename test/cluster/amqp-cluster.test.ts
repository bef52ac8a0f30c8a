/** Three Mint nodes over the real RabbitMQ: a gateway, an auth + wallet node and a transactions node. */
import crypto from "node:crypto";
import type { ServiceBroker } from "moleculer";
import type request from "supertest";
import { startMint } from "../../server";
import { browserAgent, newPerson, signupBody, sessionFrom } from "../helpers/http";
import { RABBITMQ_URL, describeWithInfra, rabbitmqNeed, removeFromRabbitmq } from "../helpers/infra";
import { testConfig } from "../helpers/mint";

const AMQP_URL = RABBITMQ_URL;

describeWithInfra("a cluster over RabbitMQ", rabbitmqNeed(), () => {
	let gateway: ServiceBroker;
	let backend: ServiceBroker;
	let money: ServiceBroker;
	let http: ReturnType<typeof request>;

	const namespace = `mint-test-${crypto.randomUUID().slice(0, 8)}`;
	beforeAll(async () => {
		const shared = { TRANSPORTER: AMQP_URL, NAMESPACE: namespace };
		backend = await startMint(testConfig({ ...shared, SERVICES: "auth,wallet", NODE_ID: `${namespace}-backend` }));
		money = await startMint(testConfig({ ...shared, SERVICES: "transactions", NODE_ID: `${namespace}-money` }));
		gateway = await startMint(testConfig({ ...shared, SERVICES: "api", NODE_ID: `${namespace}-gateway` }));
		// Every side must have discovered the others: an event emitted before that has no subscriber.
		await gateway.waitForServices(["auth", "wallet", "transactions"], 10_000);
		await backend.waitForServices(["api", "transactions"], 10_000);
		await money.waitForServices(["api", "auth", "wallet"], 10_000);
		http = browserAgent((gateway.getLocalService("api") as any).server);
	}, 30_000);

	afterAll(async () => {
		await gateway?.stop();
		await money?.stop();
		await backend?.stop();
		// The durable-events exchange and the queues the publishers declared for their subscribers.
		await removeFromRabbitmq({
			queues: ["notifications", "notifications.retry", "notifications.dead"].map(q => `${namespace}.${q}`),
			exchanges: [`${namespace}.events`],
		});
	});

	it("signs up through the gateway node and shows the wallet the other node created", async () => {
		const person = newPerson();
		const res = await http.post("/api/v1/auth/signup").send(signupBody(person));
		expect(res.status).toBe(201);
		const session = sessionFrom(res);
		const wallet = await http.get("/api/v1/wallet/user").set("Cookie", session.cookie);
		expect(wallet.status).toBe(200);
		expect(wallet.body).toMatchObject({ userId: res.body.id, balance: 0, currency: "USD" });
		const walletService = backend.getLocalService("wallet") as any;
		expect(await walletService.adapter.count({ query: { userId: res.body.id } })).toBe(1);
	});

	it("refuses a logged-out session on the gateway node (the revocation crossed the transporter)", async () => {
		const res = await http.post("/api/v1/auth/signup").send(signupBody(newPerson()));
		const session = sessionFrom(res);
		expect((await http.get("/api/v1/wallet/user").set("Authorization", `Bearer ${session.access}`)).status).toBe(200);
		expect((await http.post("/api/v1/auth/logout").set("Cookie", session.cookie)).status).toBe(204);
		let status = 0;
		for (let i = 0; i < 50 && status !== 401; i++) {
			status = (await http.get("/api/v1/wallet/user").set("Authorization", `Bearer ${session.access}`)).status;
			if (status !== 401) await new Promise(r => setTimeout(r, 20));
		}
		expect(status).toBe(401);
	});

	it("keeps verifying tokens across a key rotation on the auth node", async () => {
		const before = sessionFrom(await http.post("/api/v1/auth/signup").send(signupBody(newPerson())));
		const rotated = await gateway.call<{ currentKid: string }>("auth.rotateKeys");
		const after = sessionFrom(await http.post("/api/v1/auth/signup").send(signupBody(newPerson())));
		expect(JSON.parse(Buffer.from(after.access.split(".")[0], "base64url").toString()).kid).toBe(rotated.currentKid);
		for (const session of [before, after]) {
			expect((await http.get("/api/v1/auth/user").set("Authorization", `Bearer ${session.access}`)).body).not.toBeNull();
		}
	});

	it("moves money across nodes: top-up and transfer answer 201 and both balances show it at once", async () => {
		const sender = sessionFrom(await http.post("/api/v1/auth/signup").send(signupBody(newPerson())));
		const recipientRes = await http.post("/api/v1/auth/signup").send(signupBody(newPerson()));
		const recipient = sessionFrom(recipientRes);
		const topUp = await http.post("/api/v1/transactions/topup").set("Cookie", sender.cookie).set("Idempotency-Key", "cluster-topup").send({ amount: 40 });
		expect(topUp.status).toBe(201);
		const replay = await http.post("/api/v1/transactions/topup").set("Cookie", sender.cookie).set("Idempotency-Key", "cluster-topup").send({ amount: 40 });
		expect(replay.status).toBe(200);
		const sent = await http.post("/api/v1/transactions/transfer").set("Cookie", sender.cookie).send({ amount: 15.5, toUserId: recipientRes.body.id });
		expect(sent.status).toBe(201);
		expect(sent.body.status).toBe("Completed");
		expect((await http.get("/api/v1/wallet/user").set("Cookie", sender.cookie)).body.balance).toBe(24.5);
		expect((await http.get("/api/v1/wallet/user").set("Cookie", recipient.cookie)).body.balance).toBe(15.5);
		const report = await gateway.call<{ ok: boolean; violations: string[] }>("wallet.checkInvariants");
		expect(report.violations).toEqual([]);
	});
});
