/**
 * Over the real RabbitMQ: two notifications nodes, each with its own DATA_DIR
 * (its own delivery records), compete on the one durable queue. A burst of
 * signups, top-ups and transfers yields every email exactly once at the SMTP
 * server, and both nodes did part of the work.
 */
import { execFile } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import { promisify } from "node:util";
import amqp from "amqplib";
import type { ServiceBroker } from "moleculer";
import type request from "supertest";
import { startMint } from "../../server";
import { browserAgent, newPerson, sessionFrom, signupBody } from "../helpers/http";
import { RABBITMQ_URL, describeWithInfra, rabbitmqNeed, removeFromRabbitmq } from "../helpers/infra";
import { testConfig, waitFor } from "../helpers/mint";
import { mailsTo, startSmtp, type TestSmtp } from "../helpers/smtp";

/** Everything a namespace left in RabbitMQ: Moleculer's exchanges and queues, the durable events' ones. */
async function removeNamespaceFromRabbitmq(namespace: string): Promise<void> {
	const ours = (name: string) => name.startsWith(`MOL-${namespace}.`) || name.startsWith(`${namespace}.`);
	const names = async (what: string) => (await promisify(execFile)("rabbitmqctl", [what, "name", "-q", "--no-table-headers"])).stdout.split("\n").filter(ours);
	const [queues, exchanges] = await Promise.all([names("list_queues"), names("list_exchanges")]);
	await removeFromRabbitmq({ queues, exchanges });
}

const PEOPLE = 8;

describeWithInfra("two notifications nodes on one durable queue", rabbitmqNeed(), () => {
	const namespace = `mint-test-${crypto.randomUUID().slice(0, 8)}`;
	const dataDirs: string[] = [];
	let smtp: TestSmtp;
	let backend: ServiceBroker;
	let mailers: ServiceBroker[] = [];
	let http: ReturnType<typeof request>;

	const node = async (services: string, env: Record<string, string> = {}) => {
		const config = testConfig({
			TRANSPORTER: RABBITMQ_URL,
			NAMESPACE: namespace,
			SERVICES: services,
			NODE_ID: `${namespace}-${services}-${dataDirs.length}`,
			...env,
		});
		dataDirs.push(config.dataDir);
		return startMint(config);
	};

	beforeAll(async () => {
		smtp = await startSmtp();
		backend = await node("api,auth,wallet,transactions");
		mailers = await Promise.all([1, 2].map(() => node("notifications", { SMTP_URL: smtp.url, MAIL_POLL_MS: "25" })));
		http = browserAgent((backend.getLocalService("api") as any).server);
		await backend.waitForServices(["notifications"], 10_000);
		for (const mailer of mailers) await mailer.waitForServices(["auth"], 10_000);
		// Both nodes consume the queue before the burst.
		const connection = await amqp.connect(RABBITMQ_URL);
		try {
			const channel = await connection.createChannel();
			await waitFor(async () => (await channel.checkQueue(`${namespace}.notifications`)).consumerCount === 2 || undefined, 10_000);
		} finally {
			await connection.close();
		}
	}, 30_000);

	afterAll(async () => {
		for (const broker of [...mailers, backend]) await broker?.stop();
		await smtp?.close();
		for (const dir of dataDirs) fs.rmSync(dir, { recursive: true, force: true });
		await removeNamespaceFromRabbitmq(namespace);
	});

	it("sends each email of a burst of signups, top-ups and transfers exactly once, from both nodes", async () => {
		const people = Array.from({ length: PEOPLE }, (_, i) => newPerson({ firstName: `Payer${i}`, lastName: `Scale${i}` }));
		const signups = await Promise.all(people.map(p => http.post("/api/v1/auth/signup").send(signupBody(p))));
		expect(signups.map(r => r.status)).toEqual(people.map(() => 201));
		const sessions = signups.map(sessionFrom);

		const topups = await Promise.all(sessions.map(s => http.post("/api/v1/transactions/topup").set("Cookie", s.cookie).send({ amount: 10 })));
		expect(topups.map(r => r.status)).toEqual(people.map(() => 201));
		// Each pays the next one: everyone sends one transfer and receives one.
		const transfers = await Promise.all(
			sessions.map((s, i) =>
				http
					.post("/api/v1/transactions/transfer")
					.set("Cookie", s.cookie)
					.send({ amount: 1.25, toUserId: sessions[(i + 1) % PEOPLE].user.id }),
			),
		);
		expect(transfers.map(r => r.status)).toEqual(people.map(() => 201));

		// Four emails each; then a pause in which a duplicate would show.
		await waitFor(() => smtp.received.length >= 4 * PEOPLE || undefined, 20_000);
		await new Promise(r => setTimeout(r, 750));
		expect(smtp.received).toHaveLength(4 * PEOPLE);
		people.forEach((person, i) => {
			const payee = people[(i + 1) % PEOPLE];
			const payer = people[(i + PEOPLE - 1) % PEOPLE];
			expect(
				mailsTo(smtp, person.email)
					.map(m => m.subject)
					.sort(),
			).toEqual(
				[
					`Welcome to Mint, ${person.firstName}: please verify your email`,
					"You topped up 10.00 USD",
					`You sent 1.25 USD to ${payee.firstName} ${payee.lastName}`,
					`You received 1.25 USD from ${payer.firstName} ${payer.lastName}`,
				].sort(),
			);
		});

		// Each node recorded and sent its share in its own store, and no email is recorded by both.
		const recordsOf = async (mailer: ServiceBroker) =>
			(
				await Promise.all(
					people.map(p =>
						mailer.call<{ id: string; status: string }[], { email: string }>("notifications.deliveriesOf", { email: p.email }, { nodeID: mailer.nodeID }),
					),
				)
			).flat();
		const [first, second] = await Promise.all(mailers.map(recordsOf));
		expect(first.length).toBeGreaterThan(0);
		expect(second.length).toBeGreaterThan(0);
		expect(first.length + second.length).toBe(4 * PEOPLE);
		expect(new Set([...first, ...second].map(d => d.id)).size).toBe(4 * PEOPLE);
		expect([...first, ...second].every(d => d.status === "sent")).toBe(true);
	}, 40_000);
});
