/** Two Mint nodes over the real RabbitMQ: a gateway node and an auth + wallet node. */
import crypto from "node:crypto";
import type { ServiceBroker } from "moleculer";
import request from "supertest";
import { startMint } from "../../server";
import { newPerson, signupBody, sessionFrom } from "../helpers/http";
import { describeWithInfra, tcpReachable } from "../helpers/infra";
import { testConfig } from "../helpers/mint";

const AMQP_URL = process.env.AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672";
const amqp = new URL(AMQP_URL);

describeWithInfra("a cluster over RabbitMQ", { name: `RabbitMQ at ${amqp.host}`, available: tcpReachable(amqp.hostname, Number(amqp.port || 5672)) }, () => {
	let gateway: ServiceBroker;
	let backend: ServiceBroker;
	let http: ReturnType<typeof request>;

	beforeAll(async () => {
		const namespace = `mint-test-${crypto.randomUUID().slice(0, 8)}`;
		const shared = { TRANSPORTER: AMQP_URL, NAMESPACE: namespace };
		backend = await startMint(testConfig({ ...shared, SERVICES: "auth,wallet", NODE_ID: `${namespace}-backend` }));
		gateway = await startMint(testConfig({ ...shared, SERVICES: "api", NODE_ID: `${namespace}-gateway` }));
		// Both sides must have discovered each other: an event emitted before that has no subscriber.
		await gateway.waitForServices(["auth", "wallet"], 10_000);
		await backend.waitForServices(["api"], 10_000);
		http = request((gateway.getLocalService("api") as any).server);
	}, 30_000);

	afterAll(async () => {
		await gateway?.stop();
		await backend?.stop();
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
});
