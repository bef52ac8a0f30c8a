/**
 * Over the real RabbitMQ: the notifications node is down while money moves;
 * its durable queue keeps the events, and the receipts go out when it is back.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { ServiceBroker } from "moleculer";
import request from "supertest";
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
				DATA_DIR: notificationsDataDir,
			}),
		);
		await broker.waitForServices(["auth"], 10_000);
		return broker;
	};

	beforeAll(async () => {
		smtp = await startSmtp();
		backend = await startMint(testConfig({ TRANSPORTER: AMQP_URL, NAMESPACE: namespace, SERVICES: "api,auth,wallet,transactions", NODE_ID: `${namespace}-backend` }));
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
});
