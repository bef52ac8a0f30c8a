/**
 * Over the real RabbitMQ: the notifications queue is missing when an event is
 * published (no notifications node has ever run, or an operator deleted the
 * queue), and the email still goes out, once.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import amqp from "amqplib";
import type { ServiceBroker } from "moleculer";
import type request from "supertest";
import { startMint } from "../../server";
import { browserAgent, newPerson, signupBody, type Person } from "../helpers/http";
import { RABBITMQ_URL, describeWithInfra, rabbitmqNeed, removeFromRabbitmq } from "../helpers/infra";
import { testConfig, waitFor } from "../helpers/mint";
import { mailsTo, startSmtp, type TestSmtp } from "../helpers/smtp";

const AMQP_URL = RABBITMQ_URL;

/** A queue's counts, or undefined if it does not exist, read on a connection of its own. */
async function queueState(queue: string): Promise<{ messageCount: number; consumerCount: number } | undefined> {
	const connection = await amqp.connect(AMQP_URL);
	try {
		const { messageCount, consumerCount } = await (await connection.createChannel()).checkQueue(queue);
		return { messageCount, consumerCount };
	} catch {
		return undefined; // 404: it closed that channel, not the connection
	} finally {
		await connection.close();
	}
}

describeWithInfra("durable events when the notifications queue is missing", rabbitmqNeed(), () => {
	let smtp: TestSmtp;
	const nodes: { broker: ServiceBroker; dataDir: string }[] = [];
	const namespaces: string[] = [];

	const newNamespace = () => {
		const namespace = `mint-test-${crypto.randomUUID().slice(0, 8)}`;
		namespaces.push(namespace);
		return namespace;
	};

	const startNode = async (namespace: string, services: string) => {
		const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "mint-node-"));
		const broker = await startMint(
			testConfig({
				TRANSPORTER: AMQP_URL,
				NAMESPACE: namespace,
				SERVICES: services,
				NODE_ID: `${namespace}-${services.replace(/,/g, "-")}`,
				SMTP_URL: smtp.url,
				MAIL_POLL_MS: "25",
				DATA_DIR: dataDir,
			}),
		);
		nodes.push({ broker, dataDir });
		return broker;
	};

	/** Gateway, auth, wallet and transactions on one node: every producer of durable events, no consumer of them. */
	const startBackend = async (namespace: string) => {
		const broker = await startNode(namespace, "api,auth,wallet,transactions");
		return browserAgent((broker.getLocalService("api") as any).server);
	};

	const startNotifications = async (namespace: string) => {
		const broker = await startNode(namespace, "notifications");
		await broker.waitForServices(["auth"], 10_000);
		return broker;
	};

	const signUp = async (http: ReturnType<typeof request>, person: Person) => {
		const res = await http.post("/api/v1/auth/signup").send(signupBody(person));
		expect(res.status).toBe(201);
	};

	/** The welcome email arrives, and no second one follows it. */
	const expectOneWelcome = async (person: Person, timeoutMs: number) => {
		await waitFor(() => mailsTo(smtp, person.email).length > 0 || undefined, timeoutMs);
		await new Promise(r => setTimeout(r, 500));
		expect(mailsTo(smtp, person.email).map(m => m.subject)).toEqual([expect.stringMatching(/^Welcome/)]);
	};

	beforeAll(async () => {
		smtp = await startSmtp();
	});

	afterAll(async () => {
		for (const { broker } of nodes.reverse()) await broker.stop();
		for (const { dataDir } of nodes) fs.rmSync(dataDir, { recursive: true, force: true });
		await smtp?.close();
		// Leave nothing behind in the shared RabbitMQ.
		for (const namespace of namespaces) {
			await removeFromRabbitmq({
				queues: ["notifications", "notifications.retry", "notifications.dead"].map(q => `${namespace}.${q}`),
				exchanges: [`${namespace}.events`],
			});
		}
	});

	it("sends the welcome email, once, of a signup made before any notifications node ever ran", async () => {
		const namespace = newNamespace();
		const http = await startBackend(namespace);
		const person = newPerson({ firstName: "Early" });
		await signUp(http, person);
		// The publisher declared the queue: the event waits there for a consumer.
		expect(await queueState(`${namespace}.notifications`)).toEqual({ messageCount: 1, consumerCount: 0 });

		await startNotifications(namespace);
		await expectOneWelcome(person, 10_000);
	}, 30_000);

	it("does not lose a signup's event when an operator deletes the queue while the cluster runs", async () => {
		const namespace = newNamespace();
		const queue = `${namespace}.notifications`;
		const http = await startBackend(namespace);
		await startNotifications(namespace);
		const before = newPerson({ firstName: "Before" });
		await signUp(http, before);
		await expectOneWelcome(before, 10_000);

		await removeFromRabbitmq({ queues: [queue] });
		const after = newPerson({ firstName: "After" });
		await signUp(http, after);
		// Either the queue was declared again before the publish, or the publish was refused and
		// auth's outbox relay publishes the event again (within about 10 s).
		await expectOneWelcome(after, 15_000);
		expect(await queueState(queue)).toEqual({ messageCount: 0, consumerCount: 1 });
	}, 30_000);
});
