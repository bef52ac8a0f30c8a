/** The delivery records and their sending, without a broker: on a real NeDB store, with a transport that fails on demand. */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createAdapter } from "../../mixins/db.mixin";
import {
	DELIVERY_INDEXES,
	Deliveries,
	MAX_HELD,
	SEND_CONCURRENCY,
	deliveryIdFor,
	retryDelayMs,
	type DeliveryEntity,
	type SendResult,
} from "../../services/notifications/deliveries";
import { MailTemplates, createMailTransport, messageIdFor, type MailTransport, type OutgoingMail } from "../../services/notifications/mailer";
import { testConfig } from "../helpers/mint";

const SECRETS = { current: "a-test-secret-of-enough-length-for-hkdf", unsealWith: ["a-test-secret-of-enough-length-for-hkdf"] };
const RETRY = { maxAttempts: 3, retryBaseMs: 1, retryMaxMs: 1 };
const EVENT_ID = "6f1c2b7e-1d3a-4c5b-9e8f-0a1b2c3d4e5f";
const GRACE = { id: "u-grace", email: "Grace@Example.com", firstName: "Grace" };
const TOKEN = "t0k3n-".repeat(8);

let dir: string;
let store: ReturnType<typeof createAdapter<DeliveryEntity>>;
let sent: OutgoingMail[];
let refuse: number | undefined;
let counted: [string, SendResult][];
let deliveries: Deliveries;

const transport: MailTransport = {
	async send(mail) {
		if (refuse) throw Object.assign(new Error(`refused with ${refuse}`), { responseCode: refuse });
		sent.push(mail);
		return { messageId: `<${sent.length}@test>` };
	},
	close() {},
};

const welcome = () =>
	deliveries.enqueue(
		EVENT_ID,
		"welcome",
		GRACE,
		{ expiresAt: "tomorrow" },
		{ token: TOKEN, verifyUrl: `https://mint.example.com/verify-email?token=${TOKEN}` },
	);
const sendDue = () => deliveries.deliverDue(() => false);
const record = async () => (await store.findOne({ _id: deliveryIdFor(EVENT_ID, "welcome", GRACE.email) }))!;

beforeEach(async () => {
	dir = fs.mkdtempSync(path.join(os.tmpdir(), "mint-deliveries-"));
	store = createAdapter<DeliveryEntity>(testConfig({ DATA_DIR: dir }), "notifications", { name: "deliveries", indexes: DELIVERY_INDEXES });
	store.init({}, { logger: console });
	await store.connect();
	sent = [];
	refuse = undefined;
	counted = [];
	deliveries = newDeliveries();
});

/** A notifications node's Deliveries on the test's store (a second one is another node). */
const newDeliveries = () =>
	new Deliveries({
		store,
		templates: new MailTemplates(),
		transport,
		secrets: SECRETS,
		retry: RETRY,
		logger: { info() {}, warn() {} },
		count: (template, result) => void counted.push([template, result]),
	});
afterEach(async () => {
	// Disconnecting stops NeDB's autocompaction timer, which would keep Jest alive.
	await store.disconnect();
	fs.rmSync(dir, { recursive: true, force: true });
});

describe("Deliveries", () => {
	it("keeps one record for an event delivered twice, and sends it once", async () => {
		expect(await welcome()).toBe(true);
		expect(await welcome()).toBe(false);
		await sendDue();
		await sendDue();
		expect(sent.map(m => [m.to, m.subject])).toEqual([["grace@example.com", "Welcome to Mint, Grace: please verify your email"]]);
		expect(await store.count({})).toBe(1);
	});

	it("keeps the one-time token sealed until the send, and drops it once sent", async () => {
		await welcome();
		const pending = await record();
		expect(JSON.stringify(pending)).not.toContain(TOKEN);
		expect(pending.sealedVars).toEqual(expect.any(String));
		await sendDue();
		expect(sent[0].text).toContain(`https://mint.example.com/verify-email?token=${TOKEN}`);
		const done = await record();
		expect(done).toMatchObject({ status: "sent", attempts: 1, messageId: "<1@test>", subject: "Welcome to Mint, Grace: please verify your email" });
		expect(done.sealedVars).toBeUndefined();
		// Nor the rest of what it was rendered from, nor its claim: a sent record keeps what an operator reads.
		expect(Object.keys(done).sort()).toEqual(
			["_id", "attempts", "createdAt", "messageId", "sentAt", "status", "subject", "template", "to", "updatedAt", "userId"].sort(),
		);
		expect(counted).toEqual([["welcome", "sent"]]);
	});

	it("retries a refused email, dead-letters it after the last attempt, and a revival sends it once", async () => {
		await welcome();
		refuse = 451;
		for (let attempt = 1; attempt <= RETRY.maxAttempts; attempt++) {
			await new Promise(r => setTimeout(r, 5)); // past the backoff
			await sendDue();
		}
		expect(await record()).toMatchObject({ status: "dead", attempts: 3, lastError: "451: refused with 451" });
		expect(counted).toEqual([
			["welcome", "failed"],
			["welcome", "failed"],
			["welcome", "dead"],
		]);
		expect((await deliveries.deadLetters(10)).map(d => [d.template, d.status])).toEqual([["welcome", "dead"]]);

		refuse = undefined;
		expect(await deliveries.revive("no-such-id")).toBe(0);
		expect(await deliveries.revive()).toBe(1);
		await sendDue();
		expect(await deliveries.revive()).toBe(0);
		expect(sent).toHaveLength(1);
		expect((await deliveries.of({ email: GRACE.email })).map(d => [d.status, d.attempts])).toEqual([["sent", 1]]);
	});

	it("an email whose 'sent' mark fails is no failed send: it stays claimed, and goes again only once its lease lapses", async () => {
		await welcome();
		const updateOne = store.updateOne.bind(store);
		const marks = jest.spyOn(store, "updateOne").mockImplementation(async (query, update, opts) => {
			if (JSON.stringify(update).includes('"status":"sent"')) throw new Error("connection lost");
			return updateOne(query, update, opts);
		});
		await expect(sendDue()).rejects.toThrow("connection lost");
		marks.mockRestore();
		const claimed = await record();
		expect(claimed).toMatchObject({ status: "pending", attempts: 0 });
		expect(claimed.lastError).toBeUndefined();
		expect(claimed.leaseUntil).toBeGreaterThan(Date.now());
		expect(counted).toEqual([["welcome", "sent"]]);
		await sendDue();
		expect(sent).toHaveLength(1);
		// The lease lapses (and with it the email is due again): it goes again (a duplicate, never a loss), and this time the mark sticks.
		expect(claimed.nextAttemptAt).toBe(claimed.leaseUntil);
		await store.updateOne({ _id: claimed._id }, { $set: { leaseUntil: Date.now() - 1, nextAttemptAt: Date.now() - 1 } });
		await sendDue();
		expect(sent).toHaveLength(2);
		expect(await record()).toMatchObject({ status: "sent", attempts: 1, messageId: "<2@test>" });
	});

	it("sends what it inserted with no claim of its own, and no other node finds it meanwhile", async () => {
		const before = Date.now();
		await welcome();
		const inserted = await record();
		expect(inserted.leaseUntil).toBeGreaterThanOrEqual(before + 60_000);
		expect(inserted.nextAttemptAt).toBe(inserted.leaseUntil);
		const other = newDeliveries();
		expect(await other.deliverDue(() => false)).toBe(false);
		expect(sent).toEqual([]);
		const writes = jest.spyOn(store, "updateOne");
		await sendDue();
		// The "sent" mark only.
		expect(writes).toHaveBeenCalledTimes(1);
		writes.mockRestore();
		expect(sent.map(m => m.to)).toEqual(["grace@example.com"]);
		expect(await record()).toMatchObject({ status: "sent", attempts: 1 });
	});

	it("hands back what it inserted and did not send: due at once for another node, sent once", async () => {
		await welcome();
		expect(await deliveries.release()).toBe(1);
		expect(await deliveries.release()).toBe(0);
		expect(await record()).toMatchObject({ status: "pending", leaseUntil: 0 });
		await newDeliveries().deliverDue(() => false);
		await sendDue();
		expect(sent).toHaveLength(1);
		expect(await record()).toMatchObject({ status: "sent", attempts: 1 });
	});

	it("claims what it inserted once the lease is half gone, and sends nothing another node took after it lapsed", async () => {
		const start = Date.now();
		const clock = jest.spyOn(Date, "now");
		try {
			await welcome();
			// 31 s later, unsent (a long backlog): claimed anew before it goes.
			clock.mockReturnValue(start + 31_000);
			const writes = jest.spyOn(store, "updateOne");
			await sendDue();
			expect(writes).toHaveBeenCalledTimes(2);
			writes.mockRestore();
			expect(sent).toHaveLength(1);

			// Another email inserted here, unsent past its lease: another node claims and sends it; this one then sends nothing.
			await deliveries.enqueue(EVENT_ID, "topup-completed", GRACE, { amount: "$1.00", transactionId: "t1", at: "now" });
			clock.mockReturnValue(start + 31_000 + 61_000);
			await newDeliveries().deliverDue(() => false);
			expect(sent).toHaveLength(2);
			await sendDue();
			expect(sent).toHaveLength(2);
			expect(counted).toEqual([
				["welcome", "sent"],
				["topup-completed", "sent"],
			]);
		} finally {
			clock.mockRestore();
		}
	});

	it("holds at most MAX_HELD records claimed: the next ones are due at once for any node, and each is sent once", async () => {
		const topUp = (i: number) => deliveries.enqueue(`event-${i}`, "topup-completed", GRACE, { amount: "$1.00", transactionId: `t${i}`, at: "now" });
		for (let i = 0; i <= MAX_HELD; i++) await topUp(i);
		expect(await store.count({ query: { leaseUntil: { $gt: Date.now() } } })).toBe(MAX_HELD);
		await newDeliveries().deliverDue(() => false);
		expect(sent).toHaveLength(1);
		while (await sendDue());
		expect(sent).toHaveLength(MAX_HELD + 1);
		// Each email once: every transaction's, none twice.
		expect(new Set(sent.map(m => /Transaction: (\S+)/.exec(m.text)?.[1])).size).toBe(MAX_HELD + 1);
		expect(await store.count({ query: { status: "sent" } })).toBe(MAX_HELD + 1);
	});

	it("a failed attempt never overwrites the 'sent' mark of a sender that raced it", async () => {
		await welcome();
		const stale = await record();
		await sendDue();
		refuse = 421;
		await deliveries.attempt(stale);
		expect(await record()).toMatchObject({ status: "sent", attempts: 1, messageId: "<1@test>" });
		expect((await record()).lastError).toBeUndefined();
	});

	it("keeps what is left to do in sparse fields: nextAttemptAt only while due, deadAt only while dead", async () => {
		await welcome();
		expect((await record()).nextAttemptAt).toEqual(expect.any(Number));
		expect((await record()).deadAt).toBeUndefined();
		refuse = 451;
		for (let attempt = 1; attempt <= RETRY.maxAttempts; attempt++) {
			await new Promise(r => setTimeout(r, 5)); // past the backoff
			await sendDue();
		}
		const dead = await record();
		expect(dead).toMatchObject({ status: "dead", deadAt: dead.updatedAt });
		expect(dead.nextAttemptAt).toBeUndefined();
		refuse = undefined;
		await deliveries.revive();
		expect((await record()).nextAttemptAt).toEqual(expect.any(Number));
		expect((await record()).deadAt).toBeUndefined();
		await sendDue();
		const done = await record();
		expect(done.status).toBe("sent");
		expect(done).not.toHaveProperty("nextAttemptAt");
		expect(done).not.toHaveProperty("deadAt");
	});

	it("brings records from before the sparse fields in line, once: a sent one loses its due time, a dead one is listed and counted", async () => {
		const legacy = (id: string, status: DeliveryEntity["status"]): DeliveryEntity => ({
			_id: id,
			eventId: EVENT_ID,
			template: "topup-completed",
			to: "old@example.com",
			userId: "u-old",
			subject: "You topped up $1.00",
			vars: { firstName: "Old", amount: "$1.00", transactionId: "t-old", at: "then" },
			status,
			attempts: status === "pending" ? 0 : 3,
			nextAttemptAt: 1,
			leaseUntil: 0,
			createdAt: "2026-01-01T00:00:00.000Z",
			updatedAt: "2026-01-01T00:00:00.000Z",
		});
		await store.insertMany([legacy("old-sent", "sent"), legacy("old-dead", "dead"), legacy("old-pending", "pending")]);
		expect(await deliveries.catchUp()).toBe(2);
		expect(await deliveries.catchUp()).toBe(0);
		expect(await store.findOne({ _id: "old-sent" })).not.toHaveProperty("nextAttemptAt");
		expect(await store.findOne({ _id: "old-dead" })).toMatchObject({ status: "dead", deadAt: expect.any(String) });
		expect((await deliveries.deadLetters(10)).map(d => d.id)).toEqual(["old-dead"]);
		// The pending one is still due, and goes out once.
		await sendDue();
		expect(sent.map(m => m.to)).toEqual(["old@example.com"]);
		expect((await store.findOne({ _id: "old-pending" }))!.status).toBe("sent");
	});

	it(`sends up to ${SEND_CONCURRENCY} emails at once, each once`, async () => {
		let inFlight = 0;
		let most = 0;
		const slow: MailTransport = {
			async send(mail) {
				most = Math.max(most, ++inFlight);
				await new Promise(r => setTimeout(r, 10));
				inFlight--;
				sent.push(mail);
				return { messageId: `<${sent.length}@test>` };
			},
			close() {},
		};
		const concurrent = new Deliveries({ ...(deliveries as any).deps, transport: slow });
		const people = Array.from({ length: 60 }, (_, i) => ({ id: `u${i}`, email: `p${i}@example.com`, firstName: `P${i}` }));
		for (const person of people) await concurrent.enqueue(EVENT_ID, "topup-completed", person, { amount: "$1.00", transactionId: "t", at: "now" });
		// A full batch (50) says more may be due: the worker goes on at once rather than at its next poll.
		expect(await concurrent.deliverDue(() => false)).toBe(true);
		expect(sent).toHaveLength(50);
		expect(await concurrent.deliverDue(() => false)).toBe(false);
		expect(most).toBe(SEND_CONCURRENCY);
		expect(sent.map(m => m.to).sort()).toEqual(people.map(p => p.email).sort());
		expect(await store.count({ query: { status: "sent" } })).toBe(60);
	});

	it("removes the records of emails sent more than the days kept, and nothing else", async () => {
		const people = ["old", "recent", "pending"].map(name => ({ id: name, email: `${name}@example.com`, firstName: name }));
		for (const person of people) await deliveries.enqueue(EVENT_ID, "topup-completed", person, { amount: "$1.00", transactionId: "t", at: "now" });
		await sendDue();
		const id = (email: string) => deliveryIdFor(EVENT_ID, "topup-completed", email);
		const daysAgo = (days: number) => new Date(Date.now() - days * 86_400_000).toISOString();
		await store.updateOne({ _id: id("old@example.com") }, { $set: { sentAt: daysAgo(91) } });
		await store.updateOne({ _id: id("recent@example.com") }, { $set: { sentAt: daysAgo(89) } });
		await store.updateOne({ _id: id("pending@example.com") }, { $set: { status: "pending", nextAttemptAt: Date.now() + 60_000 }, $unset: { sentAt: true } });
		expect(await deliveries.pruneSent(90)).toBe(1);
		expect((await store.find({ sort: ["to"] })).map(d => d.to)).toEqual(["pending@example.com", "recent@example.com"]);
		expect(await deliveries.pruneSent(90)).toBe(0);
	});

	it("sends nothing once stopping", async () => {
		await welcome();
		await deliveries.deliverDue(() => true);
		expect(sent).toEqual([]);
		expect((await record()).status).toBe("pending");
	});
});

describe("retryDelayMs", () => {
	it("doubles from the base with 0.5-1.5 jitter, never above the cap", () => {
		expect([1, 2, 3].map(attempt => retryDelayMs(attempt, 100, 10_000, () => 0.5))).toEqual([100, 200, 400]);
		expect(retryDelayMs(1, 100, 10_000, () => 0)).toBe(50);
		expect(retryDelayMs(1, 100, 10_000, () => 0.999)).toBe(150);
		expect(retryDelayMs(50, 100, 10_000, () => 0.5)).toBe(10_000);
	});
});

describe("the embedded mail transport (no SMTP_URL)", () => {
	const emlIn = (folder: string) =>
		fs
			.readdirSync(folder)
			.filter(f => f.endsWith(".eml"))
			.sort();
	/** The files' names in the order a listing sorts them (two emails of one millisecond sort by their random part, not by when they were sent). */
	const namesOf = (files: string[]) => files.map(f => path.basename(f)).sort();

	it("keeps the newest MAIL_DIR_KEEP .eml files, those already there counted, other files left alone; 0 keeps them all", async () => {
		const mailDir = path.join(dir, "mail");
		fs.mkdirSync(mailDir);
		const old = ["2020-01-01T00-00-00-000Z-aaaaaaaa.eml", "2020-01-02T00-00-00-000Z-bbbbbbbb.eml"];
		for (const name of [...old, "notes.txt"]) fs.writeFileSync(path.join(mailDir, name), "x");
		const transport = createMailTransport(testConfig({ DATA_DIR: dir, MAIL_DIR_KEEP: "3" }));
		const first = await sendOne(transport, "one@example.com");
		expect(emlIn(mailDir)).toEqual([...old, path.basename(first)]);
		const sent = [first];
		for (const to of ["two@example.com", "three@example.com", "four@example.com"]) sent.push(await sendOne(transport, to));
		expect(emlIn(mailDir)).toEqual(namesOf(sent.slice(1)));
		expect(fs.existsSync(path.join(mailDir, "notes.txt"))).toBe(true);
		// A file removed by hand meanwhile is no trouble.
		fs.rmSync(sent[1]);
		sent.push(await sendOne(transport, "five@example.com"));
		expect(emlIn(mailDir)).toEqual(namesOf(sent.slice(2)));

		// A folder far over the bound drains ten old files an email, not all at once.
		for (let i = 0; i < 25; i++) fs.writeFileSync(path.join(mailDir, `2019-01-01T00-00-00-000Z-${String(i).padStart(8, "0")}.eml`), "x");
		const draining = createMailTransport(testConfig({ DATA_DIR: dir, MAIL_DIR_KEEP: "3" }));
		const counts: number[] = [];
		for (let i = 0; i < 4; i++) {
			sent.push(await sendOne(draining, `drain${i}@example.com`));
			counts.push(emlIn(mailDir).length);
		}
		// (Each new email written over the oldest file, then ten more removed.)
		expect(counts).toEqual([18, 8, 3, 3]);
		expect(emlIn(mailDir)).toEqual(namesOf(sent.slice(-3)));

		const keepAll = createMailTransport(testConfig({ DATA_DIR: dir, MAIL_DIR_KEEP: "0" }));
		for (const to of ["a@example.com", "b@example.com", "c@example.com"]) await sendOne(keepAll, to);
		expect(emlIn(mailDir)).toHaveLength(6);
	});

	it("once the folder is full, writes each email over the oldest file, whole: no file created, none removed", async () => {
		const mailDir = path.join(dir, "mail");
		fs.mkdirSync(mailDir);
		// One longer than any email (what is left of it must not show in the email written over it), one shorter.
		const oldNames = ["2020-01-01T00-00-00-000Z-aaaaaaaa.eml", "2020-01-02T00-00-00-000Z-bbbbbbbb.eml"];
		fs.writeFileSync(path.join(mailDir, oldNames[0]), "x".repeat(20_000));
		fs.writeFileSync(path.join(mailDir, oldNames[1]), "x".repeat(10));
		const inodes = oldNames.map(name => fs.statSync(path.join(mailDir, name)).ino);
		const transport = createMailTransport(testConfig({ DATA_DIR: dir, MAIL_DIR_KEEP: "2" }));
		const first = await sendOne(transport, "one@example.com");
		const second = await sendOne(transport, "two@example.com");
		expect(emlIn(mailDir)).toEqual(namesOf([first, second]));
		expect([first, second].map(f => fs.statSync(f).ino)).toEqual(inodes);
		for (const [file, to] of [
			[first, "one@example.com"],
			[second, "two@example.com"],
		]) {
			const text = fs.readFileSync(file, "utf8");
			expect(text).toContain(`To: ${to}`);
			expect(text).toContain(`Subject: Hello ${to}`);
			// Whole: the multipart message's closing boundary last, nothing of the old file after it.
			expect(text).toMatch(/\n--[^\n]+--\n?$/);
			expect(text).not.toContain("xxxx");
			expect(text.length).toBeLessThan(5_000);
		}
		expect(fs.readdirSync(mailDir).sort()).toEqual(emlIn(mailDir));
	});

	it("writes each email as an .eml file under DATA_DIR/mail, making the folder when it is missing, even after it was removed", async () => {
		const mailDir = path.join(dir, "mail");
		const transport = createMailTransport(testConfig({ DATA_DIR: dir }));
		const first = await sendOne(transport, "first@example.com");
		expect(path.dirname(first)).toBe(mailDir);
		expect(fs.readFileSync(first, "utf8")).toContain("To: first@example.com");
		fs.rmSync(mailDir, { recursive: true });
		const second = await sendOne(transport, "second@example.com");
		expect(fs.readdirSync(mailDir)).toEqual([path.basename(second)]);
		expect(fs.readFileSync(second, "utf8")).toContain("Subject: Hello second@example.com");
	});

	it("gives each message its own Message-ID at the sender's domain, the one it answers", async () => {
		const transport = createMailTransport(testConfig({ DATA_DIR: dir, MAIL_FROM: "Mint <no-reply@wallet.example.org>" }));
		const sent = await Promise.all(["a@example.com", "b@example.com"].map(to => transport.send({ to, subject: "Hi", text: "Hi", html: "<p>Hi</p>" })));
		const headers = sent.map(s => /^Message-ID: (.*)$/m.exec(fs.readFileSync(s.file ?? "", "utf8"))?.[1]);
		expect(headers).toEqual(sent.map(s => s.messageId));
		for (const id of headers) expect(id).toMatch(/^<[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}@wallet\.example\.org>$/);
		expect(headers[0]).not.toBe(headers[1]);
		expect(new Set(sent.map(s => s.file)).size).toBe(2);
		expect(messageIdFor("no-reply@mint.local")).toMatch(/@mint\.local>$/);
		expect(messageIdFor("Mint")).toMatch(/@localhost>$/);
	});
});

/** Sends a small email through a transport: the file it was written to. */
async function sendOne(transport: MailTransport, to: string): Promise<string> {
	const result = await transport.send({ to, subject: `Hello ${to}`, text: "Hi", html: "<p>Hi</p>" });
	if (!result.file) throw new Error("no file written");
	return result.file;
}
