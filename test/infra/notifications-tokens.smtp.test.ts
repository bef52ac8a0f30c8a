/**
 * One-time tokens (email verification, password reset) go out in the email
 * and stay nowhere the notifications service keeps things: not in its data
 * files, not in the delivery records its operator actions return, not in its
 * logs. Against a real SMTP server (smtp-server), and embedded (.eml files).
 */
import fs from "node:fs";
import path from "node:path";
import { symbols as pinoSymbols } from "pino";
import { login, newPerson, signup, type Person } from "../helpers/http";
import { startTestMint, waitFor, type TestMint } from "../helpers/mint";
import { mailsTo, startSmtp, type ReceivedMail, type TestSmtp } from "../helpers/smtp";

const FAST_RETRIES = { MAIL_RETRY_BASE_MS: "20", MAIL_RETRY_MAX_MS: "80", MAIL_POLL_MS: "25", MAIL_MAX_ATTEMPTS: "3" };
const PUBLIC_URL = "https://mint.example.com";

/** Every file of the notifications service's store, as text. */
function notificationsFiles(mint: TestMint): string {
	const dir = path.join(mint.dataDir, "notifications");
	return fs
		.readdirSync(dir, { recursive: true, withFileTypes: true })
		.filter(entry => entry.isFile())
		.map(entry => fs.readFileSync(path.join(entry.parentPath, entry.name), "utf8"))
		.join("\n");
}

/**
 * What a Mint broker logs from now on (at the level its config sets), kept off the test output:
 * every line its pino logger writes (child loggers share the parent's stream).
 */
function recordLogs(mint: TestMint): { text(): string } {
	const lines: string[] = [];
	const appender = (mint.broker as any).loggerFactory.appenders.find((a: any) => a.pino);
	const stream = appender.pino[pinoSymbols.streamSym];
	jest.spyOn(stream, "write").mockImplementation((line: any) => {
		lines.push(String(line));
		return true;
	});
	return { text: () => lines.join("") };
}

const emittedToken = async (mint: TestMint, event: string, field: string, userId: string): Promise<string> =>
	(await waitFor(() => mint.events.find(e => e.name === event && e.params.userId === userId))).params[field];

const mailTo = (smtp: TestSmtp, person: Person, subject: RegExp): Promise<ReceivedMail> =>
	waitFor(() => mailsTo(smtp, person.email).find(m => subject.test(m.subject)), 5000);

const deliveriesOf = (mint: TestMint, userId: string): Promise<any[]> => mint.broker.call("notifications.deliveriesOf", { userId });

describe("one-time tokens, with an SMTP server", () => {
	let smtp: TestSmtp;
	let mint: TestMint;
	let logs: ReturnType<typeof recordLogs>;
	beforeAll(async () => {
		smtp = await startSmtp();
		mint = await startTestMint({ SMTP_URL: smtp.url, PUBLIC_URL, LOG_LEVEL: "debug", ...FAST_RETRIES });
		logs = recordLogs(mint);
	});
	afterAll(async () => {
		await mint.stop();
		jest.restoreAllMocks();
		await smtp.close();
	});

	it("are in the welcome and reset emails, and nowhere in the delivery files, records or logs", async () => {
		const person = newPerson({ firstName: "Tess" });
		const session = await signup(mint, person);
		const verificationToken = await emittedToken(mint, "user.signedUp", "verificationToken", session.user.id);
		expect((await mint.http.post("/api/v1/auth/password/forgot").send({ email: person.email })).status).toBe(202);
		const resetToken = await emittedToken(mint, "user.passwordResetRequested", "resetToken", session.user.id);

		const welcome = await mailTo(smtp, person, /^Welcome to Mint/);
		expect(welcome.text).toContain(`${PUBLIC_URL}/verify-email?token=${verificationToken}`);
		expect(welcome.text).toContain(`Verification code: ${verificationToken}`);
		const reset = await mailTo(smtp, person, /^Reset your Mint password$/);
		expect(reset.text).toContain(`${PUBLIC_URL}/reset-password?token=${resetToken}`);
		expect(reset.html).toContain(resetToken);
		await waitFor(async () => (await deliveriesOf(mint, session.user.id)).filter(d => d.status === "sent").length === 2 || undefined);

		const files = notificationsFiles(mint);
		const records = await deliveriesOf(mint, session.user.id);
		const stored = await (mint.broker.getLocalService("notifications") as any).adapter.find({ query: { userId: session.user.id } });
		// The records are there, with what an operator needs...
		expect(files).toContain(person.email.toLowerCase());
		expect(records.map(d => [d.template, d.subject, d.status]).sort()).toEqual([
			["password-reset", "Reset your Mint password", "sent"],
			["welcome", "Welcome to Mint, Tess: please verify your email", "sent"],
		]);
		expect(stored).toHaveLength(2);
		// ...and no token, nor a link carrying one.
		for (const token of [verificationToken, resetToken]) {
			expect(files).not.toContain(token);
			expect(JSON.stringify(records)).not.toContain(token);
			expect(JSON.stringify(stored)).not.toContain(token);
			expect(logs.text()).not.toContain(token);
		}
		expect(logs.text()).toContain('"msg":"email sent"');
	});

	it("a dead-lettered reset email keeps its token sealed, and replayed after a restart its link resets the password", async () => {
		const person = newPerson();
		const session = await signup(mint, person);
		await mailTo(smtp, person, /^Welcome to Mint/);
		smtp.refuse(person.email, 550);
		expect((await mint.http.post("/api/v1/auth/password/forgot").send({ email: person.email })).status).toBe(202);
		const resetToken = await emittedToken(mint, "user.passwordResetRequested", "resetToken", session.user.id);
		const dead = await waitFor(async () => {
			const letters: any[] = await mint.broker.call("notifications.deadLetters", {});
			return letters.find(l => l.userId === session.user.id && l.template === "password-reset");
		}, 5000);
		expect(dead).toMatchObject({ status: "dead", attempts: 3, subject: "Reset your Mint password" });
		expect(JSON.stringify(dead)).not.toContain(resetToken);
		expect(notificationsFiles(mint)).not.toContain(resetToken);

		// Later, on a new process over the same data: the sealed variables open with the node's secret.
		await mint.stop({ keepData: true });
		mint = await startTestMint({ SMTP_URL: smtp.url, PUBLIC_URL, LOG_LEVEL: "debug", ...FAST_RETRIES, DATA_DIR: mint.dataDir });
		const logsAfterRestart = recordLogs(mint);
		smtp.refuse(person.email, undefined);
		expect(await mint.broker.call("notifications.replay", { id: dead.id })).toEqual({ replayed: 1 });
		const reset = await mailTo(smtp, person, /^Reset your Mint password$/);
		const link = /https:\/\/mint\.example\.com\/reset-password\?token=\S+/.exec(reset.text)![0];
		const token = new URL(link).searchParams.get("token")!;
		expect(token).toBe(resetToken);
		const res = await mint.http.post("/api/v1/auth/password/reset").send({ token, password: "replayed and reset", passwordConfirm: "replayed and reset" });
		expect(res.status).toBe(200);
		expect((await login(mint, { ...person, password: "replayed and reset" })).user.id).toBe(session.user.id);

		await waitFor(async () => (await deliveriesOf(mint, session.user.id)).every(d => d.status === "sent") || undefined);
		expect(notificationsFiles(mint)).not.toContain(resetToken);
		for (const text of [logs.text(), logsAfterRestart.text()]) {
			expect(text).toContain('"template":"password-reset"');
			expect(text).not.toContain(resetToken);
		}
	});

	it("a record written before tokens were sealed (rendered in full) is still sent, and its rendering dropped once it is", async () => {
		const adapter = (mint.broker.getLocalService("notifications") as any).adapter;
		const now = new Date().toISOString();
		const person = newPerson();
		const legacy = {
			_id: `legacy-${process.pid}`,
			eventId: "00000000-0000-4000-8000-000000000001",
			template: "welcome",
			to: person.email,
			userId: "legacy-user",
			subject: "Welcome to Mint, Old: please verify your email",
			html: "<p>old code: LEGACYTOKENLEGACYTOKEN</p>",
			text: "old code: LEGACYTOKENLEGACYTOKEN",
			status: "pending",
			attempts: 0,
			nextAttemptAt: Date.now(),
			leaseUntil: 0,
			createdAt: now,
			updatedAt: now,
		};
		await adapter.insert(legacy);
		const mail = await mailTo(smtp, person, /^Welcome to Mint, Old/);
		expect(mail.text).toContain("old code: LEGACYTOKENLEGACYTOKEN");
		const sent = await waitFor(async () => {
			const record = await adapter.findOne({ _id: legacy._id });
			return record.status === "sent" ? record : undefined;
		});
		expect([sent.html, sent.text]).toEqual([undefined, undefined]);
	});
});

describe("one-time tokens, embedded (.eml files)", () => {
	it("are in the .eml file the development mail-catcher writes, and not in the delivery files", async () => {
		const mint = await startTestMint({ MAIL_POLL_MS: "25" });
		try {
			const session = await signup(mint);
			const verificationToken = await emittedToken(mint, "user.signedUp", "verificationToken", session.user.id);
			const dir = path.join(mint.dataDir, "mail");
			const file = await waitFor(() => (fs.existsSync(dir) ? fs.readdirSync(dir).find(f => f.endsWith(".eml")) : undefined));
			expect(fs.readFileSync(path.join(dir, file), "utf8")).toContain(verificationToken);
			await waitFor(async () => (await deliveriesOf(mint, session.user.id))[0]?.status === "sent" || undefined);
			const files = notificationsFiles(mint);
			expect(files).toContain(session.user.id);
			expect(files).not.toContain(verificationToken);
		} finally {
			await mint.stop();
		}
	});
});
