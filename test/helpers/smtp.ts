/**
 * A real SMTP server for tests (the `smtp-server` package): it records what
 * it accepts, and a test can make it answer a given SMTP code per recipient.
 */
import net from "node:net";
import { simpleParser } from "mailparser";
import { SMTPServer } from "smtp-server";

export interface ReceivedMail {
	to: string[];
	subject: string;
	text: string;
	html: string;
}

export interface TestSmtp {
	port: number;
	url: string;
	received: ReceivedMail[];
	/** Answers this code (e.g. 451, 550) to DATA for a recipient while set; counts refusals per recipient. */
	refuse(recipient: string, code: number | undefined): void;
	refusals(recipient: string): number;
	close(): Promise<void>;
}

export async function startSmtp(port = 0): Promise<TestSmtp> {
	const received: ReceivedMail[] = [];
	const refuseWith = new Map<string, number>();
	const refused = new Map<string, number>();
	const server = new SMTPServer({
		authOptional: true,
		disabledCommands: ["STARTTLS", "AUTH"],
		logger: false,
		onData(stream, session, callback) {
			const chunks: Buffer[] = [];
			stream.on("data", (c: Buffer) => chunks.push(c));
			stream.on("end", async () => {
				const recipients = session.envelope.rcptTo.map(r => r.address.toLowerCase());
				const code = recipients.map(r => refuseWith.get(r)).find(c => c !== undefined);
				if (code !== undefined) {
					for (const r of recipients) refused.set(r, (refused.get(r) ?? 0) + 1);
					return callback(Object.assign(new Error(code >= 500 ? "Mailbox unavailable" : "Try again later"), { responseCode: code }));
				}
				const parsed = await simpleParser(Buffer.concat(chunks));
				received.push({ to: recipients, subject: parsed.subject ?? "", text: parsed.text ?? "", html: typeof parsed.html === "string" ? parsed.html : "" });
				callback();
			});
		},
	});
	await new Promise<void>((resolve, reject) => {
		server.once("error", reject);
		server.listen(port, "127.0.0.1", () => resolve());
	});
	const actual = (server.server.address() as net.AddressInfo).port;
	return {
		port: actual,
		url: `smtp://127.0.0.1:${actual}`,
		received,
		refuse(recipient, code) {
			if (code === undefined) refuseWith.delete(recipient.toLowerCase());
			else refuseWith.set(recipient.toLowerCase(), code);
		},
		refusals: recipient => refused.get(recipient.toLowerCase()) ?? 0,
		close: () => new Promise<void>(resolve => server.close(() => resolve())),
	};
}

/** A port with nothing listening on it (connection refused), for "the mail server is down". */
export async function closedPort(): Promise<number> {
	const probe = net.createServer();
	await new Promise<void>(resolve => probe.listen(0, "127.0.0.1", () => resolve()));
	const port = (probe.address() as net.AddressInfo).port;
	await new Promise<void>(resolve => probe.close(() => resolve()));
	return port;
}

export const mailsTo = (smtp: TestSmtp, address: string) => smtp.received.filter(m => m.to.includes(address.toLowerCase()));
