/**
 * Email rendering and sending: Handlebars templates (a folder per message
 * with subject, HTML and text side by side, in a shared layout) and the
 * nodemailer transport the configuration asks for.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import Handlebars from "handlebars";
import nodemailer from "nodemailer";
import type { Config } from "../../lib/config";
import { projectRoot } from "../../lib/project-root";

export const TEMPLATE_NAMES = ["welcome", "password-reset", "topup-completed", "transfer-sent", "transfer-received", "transaction-failed"] as const;
export type TemplateName = (typeof TEMPLATE_NAMES)[number];

export interface RenderedMail {
	subject: string;
	html: string;
	text: string;
}

export class MailTemplates {
	private readonly compiled = new Map<
		TemplateName,
		{ subject: HandlebarsTemplateDelegate; html: HandlebarsTemplateDelegate; text: HandlebarsTemplateDelegate }
	>();
	private readonly layoutHtml: HandlebarsTemplateDelegate;
	private readonly layoutText: HandlebarsTemplateDelegate;

	constructor(dir = path.join(projectRoot(), "templates", "mail")) {
		const hb = Handlebars.create();
		const read = (...parts: string[]) => fs.readFileSync(path.join(dir, ...parts), "utf8");
		// HTML escapes every {{variable}}; the text parts and the subject are not HTML.
		const html = (source: string) => hb.compile(source, { strict: true });
		const plain = (source: string) => hb.compile(source, { strict: true, noEscape: true });
		this.layoutHtml = html(read("layout.html.hbs"));
		this.layoutText = plain(read("layout.text.hbs"));
		for (const name of TEMPLATE_NAMES) {
			this.compiled.set(name, { subject: plain(read(name, "subject.hbs")), html: html(read(name, "html.hbs")), text: plain(read(name, "text.hbs")) });
		}
	}

	render(name: TemplateName, vars: Record<string, string>): RenderedMail {
		const template = this.compiled.get(name);
		if (!template) throw new Error(`No mail template ${name}`);
		// One line, no control characters: a subject must not smuggle headers.
		const subject = template
			.subject(vars)
			// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
			.replace(/[\r\n\t\x00-\x1f\x7f]+/g, " ")
			.trim();
		return {
			subject,
			html: this.layoutHtml({ subject, body: template.html(vars) }),
			text: this.layoutText({ body: template.text(vars).trim() }),
		};
	}
}

export interface OutgoingMail extends RenderedMail {
	to: string;
}

export interface SentMail {
	messageId: string;
	/** Where an embedded-mode message was written. */
	file?: string;
}

export interface MailTransport {
	send(mail: OutgoingMail): Promise<SentMail>;
	close(): void;
}

/**
 * A Message-ID at the sender's domain (as nodemailer makes one), from Node's buffered random UUIDs.
 * Each crypto.randomBytes call is a trip to the system: nodemailer's own Message-ID made two a message,
 * the .eml name one; with its MIME boundaries (two more, left) they were 4.3% of a transfer's CPU with
 * its two emails in a profile, 1.8% after.
 */
export function messageIdFor(from: string): string {
	const domain = /@([^\s>]+)>?\s*$/.exec(from)?.[1] ?? "localhost";
	return `<${crypto.randomUUID()}@${domain}>`;
}

/** SMTP when SMTP_URL is set; otherwise each message is written as an .eml file under DATA_DIR/mail. */
export function createMailTransport(config: Config): MailTransport {
	const from = config.mail.from;
	if (config.mail.smtpUrl) {
		// The timeouts are connection options: beside the URL (the second argument would be message defaults).
		const transporter = nodemailer.createTransport({ url: config.mail.smtpUrl, connectionTimeout: 10_000, greetingTimeout: 10_000, socketTimeout: 20_000 });
		return {
			async send(mail) {
				const info = await transporter.sendMail({ from, messageId: messageIdFor(from), ...mail });
				return { messageId: info.messageId };
			},
			close: () => transporter.close(),
		};
	}
	const dir = path.join(config.dataDir, "mail");
	const transporter = nodemailer.createTransport({ streamTransport: true, buffer: true, newline: "unix" });
	const mailbox = new KeptNewest(dir, config.mail.dirKeep);
	return {
		async send(mail) {
			const info = await transporter.sendMail({ from, messageId: messageIdFor(from), ...mail });
			// Eight random hex digits (a UUID's first eight are random) keep two messages of one millisecond apart.
			const file = path.join(dir, `${new Date().toISOString().replace(/[:.]/g, "-")}-${crypto.randomUUID().slice(0, 8)}.eml`);
			// With `buffer: true` the message is a Buffer; nodemailer types it as Buffer or stream.
			const message = info.message as unknown as Buffer;
			// Written aside, then renamed: whoever watches the folder sees whole .eml files only.
			// Synchronously: a 2-4 kB file into the page cache costs about 40 us of CPU this way, against
			// 230 us through fs/promises (open, write, close and rename each a trip to libuv's pool),
			// measured on this machine; the event loop waits less than the promises would make it work.
			const partial = `${file}.partial`;
			const reused = mailbox.reuseOldest(partial);
			// The folder is made when a write finds it missing (first email, or removed since), not before every email.
			try {
				if (reused) writeOver(partial, message);
				else fs.writeFileSync(partial, message);
			} catch (err) {
				if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
				fs.mkdirSync(dir, { recursive: true });
				mailbox.forget();
				fs.writeFileSync(partial, message);
			}
			fs.renameSync(partial, file);
			mailbox.added(path.basename(file));
			return { messageId: info.messageId, file };
		},
		close: () => transporter.close(),
	};
}

/**
 * Writes a file's new content over its old one and cuts it there: an email over an email of about its size
 * takes and frees no disk block (emptying the file first would free its blocks and take new ones: twice
 * the CPU, measured).
 */
function writeOver(file: string, data: Buffer): void {
	const fd = fs.openSync(file, "r+");
	try {
		for (let written = 0; written < data.length; ) written += fs.writeSync(fd, data, written, data.length - written, written);
		fs.ftruncateSync(fd, data.length);
	} finally {
		fs.closeSync(fd);
	}
}

/** Old .eml files removed per email written, at most. */
const PRUNE_PER_EMAIL = 10;

/**
 * The development mail-catcher keeps the newest `keep` .eml files (MAIL_DIR_KEEP, as Mailpit keeps
 * its newest 500): the folder does not grow for ever, nor keep every link ever sent. Their names
 * start with the time they were written, so their order is the names'. The folder is listed once,
 * at the first email (and again after it had to be made anew); 0 keeps everything.
 *
 * Once the folder is full, a new email is written over the oldest one's file, renamed first: no file
 * is created or removed. Creating one is what costs: ext4 without a journal (this build machine's
 * disk) looks past every inode freed in the last minute for a new one, and with two emails a
 * transfer that was 0.3-1 ms of system CPU a file and 14% of an embedded transfer's profile; two
 * renames and a write over the old file (writeOver) cost about 55 us (measured: 2,000 emails into a
 * folder of 1,000; 120-140 us when the old file was emptied first).
 */
class KeptNewest {
	private names: string[] | undefined;

	constructor(
		private readonly dir: string,
		private readonly keep: number,
	) {}

	/** The folder was made anew: list it again at the next email. */
	forget(): void {
		this.names = undefined;
	}

	/** The folder's .eml files, oldest first: listed once, then kept up to date here (undefined while it cannot be listed). */
	private listed(): string[] | undefined {
		try {
			this.names ??= fs
				.readdirSync(this.dir)
				.filter(file => file.endsWith(".eml"))
				.sort();
		} catch {
			this.names = undefined;
		}
		return this.names;
	}

	/**
	 * When the folder is full, its oldest .eml file becomes `partial`, the next email's file to write over:
	 * whether it did. Never throws: a file that cannot be reused (removed by hand meanwhile) leaves the email a new one.
	 */
	reuseOldest(partial: string): boolean {
		if (this.keep === 0) return false;
		const names = this.listed();
		if (!names || names.length < this.keep) return false;
		try {
			fs.renameSync(path.join(this.dir, names[0]), partial);
			names.shift();
			return true;
		} catch (err) {
			if ((err as NodeJS.ErrnoException).code === "ENOENT") names.shift();
			return false;
		}
	}

	/** A new file is in the folder: the oldest beyond `keep` go. Never throws: the email is out; what could not go is tried again next time. */
	added(name: string): void {
		if (this.keep === 0) return;
		this.names?.push(name);
		// Not listed yet (the folder could not be, before this email made it): listed now, this file included.
		const names = this.listed();
		if (!names) return;
		// At most PRUNE_PER_EMAIL a time: a folder left far over the bound (by an older version) drains over
		// the next emails instead of blocking this one for thousands of removals.
		const excess = Math.min(names.length - this.keep, PRUNE_PER_EMAIL);
		let removed = 0;
		for (; removed < excess; removed++) {
			try {
				fs.unlinkSync(path.join(this.dir, names[removed]));
			} catch (err) {
				if ((err as NodeJS.ErrnoException).code !== "ENOENT") break;
			}
		}
		names.splice(0, removed);
	}
}
