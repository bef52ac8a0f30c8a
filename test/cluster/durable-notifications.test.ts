/**
 * Over the real RabbitMQ: the notifications node is down while money moves;
 * its durable queue keeps the events, and the receipts go out when it is back.
 * What the queue delivers runs the service's own event handlers: a payload
 * that breaks their contract, or a handler that fails, is retried and then
 * parked in the dead-letter queue.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import amqp from "amqplib";
import type { ServiceBroker } from "moleculer";
import type request from "supertest";
import { durableEventsOf } from "../../lib/durable-events";
import { startMint } from "../../server";
import { browserAgent, newPerson, sessionFrom, signupBody } from "../helpers/http";
import { RABBITMQ_URL, describeWithInfra, rabbitmqNeed, removeFromRabbitmq } from "../helpers/infra";
import { testConfig, waitFor } from "../helpers/mint";
import { mailsTo, startSmtp, type TestSmtp } from "../helpers/smtp";

const AMQP_URL = RABBITMQ_URL;

describeWithInfra("notifications over durable RabbitMQ queues", rabbitmqNeed(), () => {
	const namespace = `mint-test-${crypto.randomUUID().slice(0, 8)}`;
	const notificationsDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "mint-notifications-"));
	let smtp: TestSmtp;
	let backend: ServiceBroker;
	let notifications: ServiceBroker | undefined;
	let http: ReturnType<typeof request>;

	const startNotifications = async () => {
		const broker = await startMint(
			testConfig({
				TRANSPORTER: AMQP_URL,
				NAMESPACE: namespace,
				SERVICES: "notifications",
				NODE_ID: `${namespace}-notifications-${crypto.randomUUID().slice(0, 4)}`,
				SMTP_URL: smtp.url,
				MAIL_POLL_MS: "25",
				// How often the durable queue delivers an event whose handling fails, and how soon again.
				MAIL_MAX_ATTEMPTS: "3",
				MAIL_RETRY_BASE_MS: "20",
				DATA_DIR: notificationsDataDir,
			}),
		);
		await broker.waitForServices(["auth"], 10_000);
		return broker;
	};

	/** Waits for the one event parked in the notifications dead-letter queue, and takes it off: its name, attempts and last error. */
	const takeDeadEvent = async () => {
		const bus = durableEventsOf(backend)!;
		await waitFor(async () => ((await bus.depth("notifications")).dead === 1 ? true : undefined), 10_000);
		const connection = await amqp.connect(AMQP_URL);
		try {
			const message = await (await connection.createChannel()).get(`${namespace}.notifications.dead`, { noAck: true });
			if (!message) throw new Error("the dead-letter queue is empty");
			const headers = message.properties.headers ?? {};
			return { event: message.properties.type, attempts: headers["x-mint-attempts"], lastError: String(headers["x-mint-last-error"]) };
		} finally {
			await connection.close();
		}
	};

	const envelope = () => ({ eventId: crypto.randomUUID(), occurredAt: new Date().toISOString() });

	beforeAll(async () => {
		smtp = await startSmtp();
		backend = await startMint(
			testConfig({ TRANSPORTER: AMQP_URL, NAMESPACE: namespace, SERVICES: "api,auth,wallet,transactions", NODE_ID: `${namespace}-backend` }),
		);
		notifications = await startNotifications();
		http = browserAgent((backend.getLocalService("api") as any).server);
	}, 30_000);

	afterAll(async () => {
		await notifications?.stop();
		await backend?.stop();
		await smtp?.close();
		fs.rmSync(notificationsDataDir, { recursive: true, force: true });
		// Leave nothing behind in the shared RabbitMQ.
		await removeFromRabbitmq({
			queues: ["notifications", "notifications.retry", "notifications.dead"].map(q => `${namespace}.${q}`),
			exchanges: [`${namespace}.events`],
		});
	});

	it("sends the receipts of a transfer made while the notifications node was down", async () => {
		const senderRes = await http.post("/api/v1/auth/signup").send(signupBody(newPerson({ firstName: "Sally" })));
		const recipientRes = await http.post("/api/v1/auth/signup").send(signupBody(newPerson({ firstName: "Rob" })));
		const sender = sessionFrom(senderRes);
		await waitFor(() => mailsTo(smtp, senderRes.body.email).length === 1 || undefined, 10_000);

		await notifications!.stop();
		notifications = undefined;
		expect((await http.post("/api/v1/transactions/topup").set("Cookie", sender.cookie).send({ amount: 20 })).status).toBe(201);
		const sent = await http.post("/api/v1/transactions/transfer").set("Cookie", sender.cookie).send({ amount: 6.5, toUserId: recipientRes.body.id });
		expect(sent.status).toBe(201);
		await new Promise(r => setTimeout(r, 300));
		expect(mailsTo(smtp, senderRes.body.email).filter(m => m.subject.startsWith("You sent"))).toEqual([]);

		notifications = await startNotifications();
		const receipt = await waitFor(() => mailsTo(smtp, recipientRes.body.email).find(m => m.subject.startsWith("You received")), 10_000);
		expect(receipt.subject).toBe(`You received 6.50 USD from Sally ${senderRes.body.lastName}`);
		await waitFor(() => mailsTo(smtp, senderRes.body.email).find(m => m.subject === "You topped up 20.00 USD"), 10_000);
		await waitFor(() => mailsTo(smtp, senderRes.body.email).find(m => m.subject.startsWith("You sent 6.50 USD")), 10_000);
		// The welcome emails were not sent a second time.
		expect(mailsTo(smtp, senderRes.body.email).filter(m => m.subject.startsWith("Welcome"))).toHaveLength(1);
	}, 40_000);

	it("takes its events from the durable queue only: Moleculer routes none of them to the notifications node", async () => {
		const listened: { name: string }[] = await notifications!.call("$node.events", { onlyLocal: true, skipInternal: true });
		expect(listened.map(e => e.name)).toEqual([]);
	});

	it("refuses an event that breaks its contract: parked after its retries, no email, no record, no value in the error", async () => {
		const userId = crypto.randomUUID();
		const email = `broken-${userId.slice(0, 8)}@example.com`;
		const token = "short-secret-token"; // a verification token is 20 characters or more
		const expiresAt = new Date(Date.now() + 3600_000).toISOString();
		const event = { ...envelope(), userId, email, firstName: "Broken", lastName: "Contract", verificationToken: token, verificationExpiresAt: expiresAt };
		await durableEventsOf(backend)!.publish("user.signedUp", event);

		const dead = await takeDeadEvent();
		expect(dead).toEqual({ event: "user.signedUp", attempts: 3, lastError: "Event user.signedUp breaks its contract: verificationToken (stringMin)" });
		expect(mailsTo(smtp, email)).toEqual([]);
		expect(await notifications!.call("notifications.deliveriesOf", { email })).toEqual([]);
	}, 20_000);

	it("retries an event whose handler fails, then parks it for an operator", async () => {
		const stranger = crypto.randomUUID();
		const event = { ...envelope(), transactionId: `tx-${stranger}`, type: "TopUp", status: "Completed", amountMinor: 500, currency: "USD", userId: stranger };
		await durableEventsOf(backend)!.publish("transaction.completed", event);

		// The handler asked auth for the receipt's addressee, and auth knows no such user.
		expect(await takeDeadEvent()).toEqual({ event: "transaction.completed", attempts: 3, lastError: "User not found" });
		expect(await notifications!.call("notifications.deliveriesOf", { userId: stranger })).toEqual([]);
	}, 20_000);
});
