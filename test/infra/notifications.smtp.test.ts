/** Email end to end against a real SMTP server (smtp-server, started here). */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { login, newPerson, signup } from "../helpers/http";
import { actionRuns, startTestMint, waitFor, type TestMint } from "../helpers/mint";
import { topUp, transfer } from "../helpers/money";
import { closedPort, mailsTo, startSmtp, type TestSmtp } from "../helpers/smtp";

const FAST_RETRIES = { MAIL_RETRY_BASE_MS: "20", MAIL_RETRY_MAX_MS: "80", MAIL_POLL_MS: "25", MAIL_MAX_ATTEMPTS: "3" };
const tokenIn = (text: string) => /code: ([A-Za-z0-9_-]{20,})/.exec(text)?.[1];
const deliveries = (mint: TestMint) => (mint.broker.getLocalService("notifications") as any).adapter;
/**
 * A delivery record once its attempt in flight is recorded (its claim released or, once sent, gone): the SMTP server
 * has an email a moment before the sender hears it was accepted and records the attempt.
 */
const settledRecord = (mint: TestMint, query: object) =>
	waitFor(async () => {
		const [record] = await deliveries(mint).find({ query });
		return record && !record.leaseUntil ? record : undefined;
	}, 5000);

describe("with an SMTP server", () => {
	let smtp: TestSmtp;
	let mint: TestMint;
	beforeAll(async () => {
		smtp = await startSmtp();
		mint = await startTestMint({ SMTP_URL: smtp.url, PUBLIC_URL: "https://mint.example.com", ...FAST_RETRIES });
	});
	afterAll(async () => {
		await mint.stop();
		await smtp.close();
	});

	it("sends the welcome email with a working verification token", async () => {
		const session = await signup(mint, newPerson({ firstName: "Grace" }));
		const [welcome] = await waitFor(() => (mailsTo(smtp, session.person.email).length ? mailsTo(smtp, session.person.email) : undefined));
		expect(welcome.subject).toBe("Welcome to Mint, Grace: please verify your email");
		const token = tokenIn(welcome.text)!;
		expect(welcome.text).toContain(`https://mint.example.com/verify-email?token=${token}`);
		// Handlebars escapes "=" as &#x3D; in HTML, which a mail client reads back as "=".
		expect(welcome.html.replace(/&#x3D;/g, "=")).toContain(`href="https://mint.example.com/verify-email?token=${token}"`);
		const verified = await mint.http.post("/api/v1/auth/verify-email").send({ token });
		expect(verified.status).toBe(200);
		expect(verified.body.emailVerifiedAt).not.toBeNull();
	});

	it("sends the reset email, and its token resets the password", async () => {
		const session = await signup(mint);
		await mint.http.post("/api/v1/auth/password/forgot").send({ email: session.person.email });
		const reset = await waitFor(() => mailsTo(smtp, session.person.email).find(m => m.subject === "Reset your Mint password"));
		const token = tokenIn(reset.text)!;
		const res = await mint.http.post("/api/v1/auth/password/reset").send({ token, password: "a brand new one", passwordConfirm: "a brand new one" });
		expect(res.status).toBe(200);
		expect((await login(mint, { ...session.person, password: "a brand new one" })).user.id).toBe(session.user.id);
	});

	it("sends receipts for a top-up and both sides of a transfer, with the right amounts", async () => {
		const sender = await signup(mint, newPerson({ firstName: "Sam", lastName: "Sender" }));
		const recipient = await signup(mint, newPerson({ firstName: "Rita", lastName: "Recipient" }));
		expect((await topUp(mint, sender, 12.5)).status).toBe(201);
		expect((await transfer(mint, sender, 7.05, recipient.user.id)).status).toBe(201);
		const topUpReceipt = await waitFor(() => mailsTo(smtp, sender.person.email).find(m => m.subject.startsWith("You topped up")));
		expect(topUpReceipt.subject).toBe("You topped up 12.50 USD");
		const sent = await waitFor(() => mailsTo(smtp, sender.person.email).find(m => m.subject.startsWith("You sent")));
		expect(sent.subject).toBe("You sent 7.05 USD to Rita Recipient");
		expect(sent.text).toContain(recipient.person.email);
		const received = await waitFor(() => mailsTo(smtp, recipient.person.email).find(m => m.subject.startsWith("You received")));
		expect(received.subject).toBe("You received 7.05 USD from Sam Sender");
		expect(mailsTo(smtp, recipient.person.email).filter(m => m.subject.startsWith("You sent"))).toEqual([]);
	});

	it("takes the receipts' names and addresses from auth's cache once it holds them, and a renamed sender's next receipt has the new name", async () => {
		const sender = await signup(mint, newPerson({ firstName: "Cass", lastName: "Cached" }));
		const recipient = await signup(mint, newPerson({ firstName: "Rory", lastName: "Reader" }));
		expect((await topUp(mint, sender, 10)).status).toBe(201);
		const receivedFrom = async (name: string) => {
			const subject = `You received 1.00 USD from ${name}`;
			const before = mailsTo(smtp, recipient.person.email).filter(m => m.subject === subject).length;
			expect((await transfer(mint, sender, 1, recipient.user.id)).status).toBe(201);
			await waitFor(() => mailsTo(smtp, recipient.person.email).filter(m => m.subject === subject).length > before);
		};
		await receivedFrom("Cass Cached");
		// Both contacts are cached now: the next receipts ask auth nothing.
		const asked = actionRuns(mint.broker, "auth.contactOf");
		await receivedFrom("Cass Cached");
		await waitFor(() => mailsTo(smtp, sender.person.email).filter(m => m.subject === "You sent 1.00 USD to Rory Reader").length === 2);
		expect(actionRuns(mint.broker, "auth.contactOf")).toBe(asked);
		// A rename invalidates the sender's entries: the next receipt asks auth for that contact, and has the new name.
		expect((await mint.http.put("/api/v1/users/me").set("Cookie", sender.cookie).send({ firstName: "Cassandra" })).status).toBe(200);
		await receivedFrom("Cassandra Cached");
		expect(actionRuns(mint.broker, "auth.contactOf")).toBe(asked + 1);
	});

	it("retries after 4xx answers and delivers once the server recovers", async () => {
		const person = newPerson();
		smtp.refuse(person.email, 451);
		await signup(mint, person);
		await waitFor(() => smtp.refusals(person.email) >= 2, 5000);
		smtp.refuse(person.email, undefined);
		await waitFor(() => mailsTo(smtp, person.email).length === 1 || undefined, 5000);
		const record = await settledRecord(mint, { to: person.email.toLowerCase() });
		expect(record.status).toBe("sent");
		expect(record.attempts).toBe(smtp.refusals(person.email) + 1);
		await new Promise(r => setTimeout(r, 150));
		expect(mailsTo(smtp, person.email)).toHaveLength(1);
	});

	it("dead-letters after 5xx answers past the limit; a replay delivers once", async () => {
		const person = newPerson();
		smtp.refuse(person.email, 550);
		const session = await signup(mint, person);
		const dead = await waitFor(async () => {
			const letters: any[] = await mint.broker.call("notifications.deadLetters", {});
			return letters.find(l => l.to === person.email.toLowerCase());
		}, 5000);
		expect(dead).toMatchObject({ template: "welcome", status: "dead", attempts: 3, userId: session.user.id });
		expect(dead.lastError).toMatch(/^550/);
		expect(smtp.refusals(person.email)).toBe(3);
		// Counted once the dead letter is recorded in the file; another reader may see the record a moment before.
		const deadCount = () => mint.broker.metrics.getMetric("mint.emails.total")!.get({ template: "welcome", result: "dead" })?.value;
		expect(await waitFor(() => deadCount(), 2000)).toBeGreaterThanOrEqual(1);

		smtp.refuse(person.email, undefined);
		expect(await mint.broker.call("notifications.replay", { id: dead.id })).toEqual({ replayed: 1 });
		await waitFor(() => mailsTo(smtp, person.email).length === 1 || undefined, 5000);
		expect(await mint.broker.call("notifications.replay", { id: dead.id })).toEqual({ replayed: 0 });
		await new Promise(r => setTimeout(r, 150));
		expect(mailsTo(smtp, person.email)).toHaveLength(1);
		const history: any[] = await mint.broker.call("notifications.deliveriesOf", { userId: session.user.id });
		expect(history.map(d => [d.template, d.status])).toEqual([["welcome", "sent"]]);
	});

	it("sends one email for an event delivered twice", async () => {
		const userId = crypto.randomUUID();
		const event = {
			eventId: crypto.randomUUID(),
			occurredAt: new Date().toISOString(),
			userId,
			email: `twice-${userId.slice(0, 8)}@example.com`,
			firstName: "Twice",
			lastName: "Delivered",
			verificationToken: "t".repeat(43),
			verificationExpiresAt: new Date(Date.now() + 3600_000).toISOString(),
		};
		await mint.broker.broadcastLocal("user.signedUp", event);
		await mint.broker.broadcastLocal("user.signedUp", { ...event });
		await waitFor(() => mailsTo(smtp, event.email).length === 1 || undefined);
		await new Promise(r => setTimeout(r, 150));
		expect(mailsTo(smtp, event.email)).toHaveLength(1);
		expect(await deliveries(mint).count({ query: { to: event.email } })).toBe(1);
	});

	it("escapes variables in the HTML part", async () => {
		const userId = crypto.randomUUID();
		const email = `xss-${userId.slice(0, 8)}@example.com`;
		await mint.broker.broadcastLocal("user.signedUp", {
			eventId: crypto.randomUUID(),
			occurredAt: new Date().toISOString(),
			userId,
			email,
			firstName: "<script>alert(1)</script>",
			lastName: "X",
			verificationToken: "v".repeat(43),
			verificationExpiresAt: new Date(Date.now() + 3600_000).toISOString(),
		});
		const [mail] = await waitFor(() => (mailsTo(smtp, email).length ? mailsTo(smtp, email) : undefined));
		expect(mail.html).toContain("Hi &lt;script&gt;alert(1)&lt;/script&gt;,");
		expect(mail.html).not.toContain("<script>");
	});
});

describe("when the mail server is down", () => {
	it("dead-letters on connection refused; after it is back, replayAll delivers once", async () => {
		const port = await closedPort();
		const mint = await startTestMint({ SMTP_URL: `smtp://127.0.0.1:${port}`, ...FAST_RETRIES });
		let smtp: TestSmtp | undefined;
		try {
			const session = await signup(mint);
			const dead = await waitFor(async () => (await deliveries(mint).find({ query: { status: "dead" } }))[0], 5000);
			expect(dead.lastError).toMatch(/ECONNREFUSED|ESOCKET|connect/i);
			smtp = await startSmtp(port);
			expect(await mint.broker.call("notifications.replayAll")).toEqual({ replayed: 1 });
			await waitFor(() => mailsTo(smtp!, session.person.email).length === 1 || undefined, 5000);
			expect((await settledRecord(mint, { _id: dead._id })).status).toBe("sent");
		} finally {
			await mint.stop();
			await smtp?.close();
		}
	});

	it("keeps a pending email across a restart and sends it once the server is there", async () => {
		const port = await closedPort();
		const env = { SMTP_URL: `smtp://127.0.0.1:${port}`, ...FAST_RETRIES, MAIL_MAX_ATTEMPTS: "100", MAIL_RETRY_BASE_MS: "50" };
		const first = await startTestMint(env);
		const session = await signup(first);
		await waitFor(async () => (await deliveries(first).find({ query: { status: "failed-retrying" } }))[0], 5000);
		await first.stop({ keepData: true });
		const smtp = await startSmtp(port);
		const second = await startTestMint({ ...env, DATA_DIR: first.dataDir });
		try {
			await waitFor(() => mailsTo(smtp, session.person.email).length === 1 || undefined, 5000);
			expect(mailsTo(smtp, session.person.email)[0].subject).toMatch(/^Welcome to Mint/);
		} finally {
			await second.stop();
			await smtp.close();
		}
	});
});

describe("without SMTP_URL (embedded)", () => {
	it("writes each email as an .eml file under DATA_DIR/mail", async () => {
		const mint = await startTestMint({ MAIL_POLL_MS: "25" });
		try {
			const session = await signup(mint, newPerson({ firstName: "Eml" }));
			const dir = path.join(mint.dataDir, "mail");
			const file = await waitFor(() => (fs.existsSync(dir) ? fs.readdirSync(dir).find(f => f.endsWith(".eml")) : undefined));
			const raw = fs.readFileSync(path.join(dir, file), "utf8");
			expect(raw).toContain(`To: ${session.person.email}`);
			expect(raw).toContain("Subject: Welcome to Mint, Eml: please verify your email");
			expect(raw).toContain("From: Mint <no-reply@mint.local>");
		} finally {
			await mint.stop();
		}
	});
});
