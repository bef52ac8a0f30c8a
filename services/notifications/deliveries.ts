/**
 * The delivery records, and sending them.
 *
 * Every email is a delivery record first (its id derived from event id +
 * template + recipient, so a duplicated event sends nothing twice), then
 * sent by a worker that retries failures with exponential backoff and
 * jitter up to `maxAttempts`, then leaves the record as a dead letter an
 * operator can list and replay. The worker sends up to SEND_CONCURRENCY
 * emails at once.
 *
 * No index on `status` (a few values shared by every record, and records
 * change status: the index would cost every write more as records pile
 * up). Two sparse fields say what is left to do instead, each indexed and
 * present only while it applies: `nextAttemptAt` while an email is due
 * (pending or failed-retrying), `deadAt` while it is a dead letter. Records
 * written before they existed are brought in line at start (catchUp()).
 *
 * A record never holds a one-time token in clear: the variables that carry
 * one (the code and the link) are sealed with AUTH_SECRET, the email is
 * rendered when it is sent, and the sealed part is dropped once it is.
 *
 * A plain module: the store, the templates, the transport and the secrets
 * are handed in, so it runs without a broker.
 */
import crypto from "node:crypto";
import type { Contact } from "../../contracts/users";
import type { EmailMetrics } from "../../lib/business-metrics";
import { seal, unseal } from "../../lib/sealing";
import type { NodeSecrets } from "../../lib/secrets";
import { isDuplicateKeyError, type IndexSpec, type Store } from "../../mixins/db.mixin";
import type { MailTemplates, MailTransport, RenderedMail, SentMail, TemplateName } from "./mailer";

export type DeliveryStatus = "pending" | "sent" | "failed-retrying" | "dead";

export interface DeliveryEntity {
	/** deliveryIdFor(event id, template, recipient): what makes a duplicated event's email a duplicate. */
	_id: string;
	/** In records written before 2026-12-02 only: no query, view or index reads it (the `_id` holds it hashed). */
	eventId?: string;
	template: TemplateName;
	to: string;
	userId: string;
	/** As an operator sees it: a secret variable shows as "[sealed]". */
	subject: string;
	/** The template variables that are no secret; dropped once the email is sent. Absent too in records written before rendering moved to send time. */
	vars?: Record<string, string>;
	/** The secret ones (a one-time token and the link carrying it), sealed ("mail-vars"); dropped once the email is sent. */
	sealedVars?: string;
	/** The rendered email, in records written before rendering moved to send time only. */
	html?: string;
	text?: string;
	status: DeliveryStatus;
	attempts: number;
	/** When the next attempt is due: only while the email is pending or failed-retrying (sparse index); while claimed, when the claim lapses. */
	nextAttemptAt?: number;
	/** When it became a dead letter: only while it is one (sparse index). */
	deadAt?: string;
	/** Claimed by a sender until then (0: not claimed); gone once the email is sent. */
	leaseUntil?: number;
	lastError?: string;
	messageId?: string;
	createdAt: string;
	updatedAt: string;
	sentAt?: string;
}

/** A record as the operator actions show it: never its variables. */
export interface DeliveryView {
	id: string;
	template: TemplateName;
	to: string;
	userId: string;
	subject: string;
	status: DeliveryStatus;
	attempts: number;
	lastError?: string;
	createdAt: string;
	updatedAt: string;
	sentAt?: string;
}

/** How one attempt ended, as the mint.emails.total metric counts it. */
export type SendResult = "sent" | "failed" | "dead";

export interface RetryPolicy {
	maxAttempts: number;
	retryBaseMs: number;
	retryMaxMs: number;
}

interface DeliveryLogger {
	info(fields: object, msg: string): void;
	warn(fields: object, msg: string): void;
}

export interface DeliveriesDeps {
	store: Store<DeliveryEntity>;
	templates: MailTemplates;
	transport: MailTransport;
	secrets: NodeSecrets;
	retry: RetryPolicy;
	logger: DeliveryLogger;
	/** Counts one attempt's outcome. */
	count(template: TemplateName, result: SendResult): void;
	/** Told how many dead letters the store holds (lib/business-metrics.ts). */
	metrics?: Pick<EmailMetrics, "deadLetters">;
}

const SENDING_LEASE_MS = 60_000;
const BATCH = 50;
/**
 * Records a node holds claimed in memory, at most: beyond that (a mail server down or slow while events
 * keep coming) new ones are inserted unclaimed, due at once for any node, as the store's backlog.
 */
export const MAX_HELD = 2_000;
/** Emails one worker sends at once (each waits on its store writes and the mail server, not on the CPU). */
export const SEND_CONCURRENCY = 8;
/** The store indexes these queries rely on: the sparse fields above, and the operator's lookup by user. */
export const DELIVERY_INDEXES: IndexSpec[] = [
	{ fields: { nextAttemptAt: 1 }, sparse: true },
	{ fields: { deadAt: 1 }, sparse: true },
	// Set once, when sent: what the retention removes by.
	{ fields: { sentAt: 1 }, sparse: true },
	{ fields: { userId: 1 } },
];
/** Dead letters: every record with a `deadAt` (an ISO time, so any string). */
const DEAD = { deadAt: { $gte: "" } };
/** What a secret variable renders as wherever the record keeps a rendering. */
const SEALED = "[sealed]";
const OPERATOR_LIST_LIMIT = 200;
/** The dead letters are counted again after this node dead-letters or revives one, and at least this often (other nodes' changes). */
const DEAD_LETTERS_RECOUNT_MS = 15_000;

export const deliveryIdFor = (eventId: string, template: string, to: string) =>
	crypto.createHash("sha256").update(`${eventId}\n${template}\n${to.toLowerCase()}`).digest("hex");

export const deliveryView = (d: DeliveryEntity): DeliveryView => ({
	id: d._id,
	template: d.template,
	to: d.to,
	userId: d.userId,
	subject: d.subject,
	status: d.status,
	attempts: d.attempts,
	lastError: d.lastError,
	createdAt: d.createdAt,
	updatedAt: d.updatedAt,
	sentAt: d.sentAt,
});

/** Exponential backoff with jitter: base * 2^(attempt-1), times 0.5-1.5, never above the cap. */
export function retryDelayMs(attempt: number, baseMs: number, maxMs: number, random = Math.random): number {
	const exponential = baseMs * 2 ** Math.min(40, Math.max(0, attempt - 1));
	return Math.round(Math.min(maxMs, exponential * (0.5 + random())));
}

/** What a failed send is recorded as: the SMTP code (or the socket error's) and the message, cut short. */
function sendError(err: unknown): string {
	const e = err as { responseCode?: number; code?: string; message?: string };
	return `${e.responseCode ?? e.code ?? "error"}: ${String(e.message ?? err).slice(0, 300)}`;
}

/** A record to send in a pass: claimed when it was inserted here (its lease this node's), or to claim first. */
interface DueDelivery {
	delivery: DeliveryEntity;
	claimed: boolean;
}

export class Deliveries {
	/** When the dead letters were last counted (0: never, or a change since). */
	private deadLettersCountedAt = 0;
	/** Records this node inserted already claimed, oldest first: the next pass sends them without a claim of their own. */
	private readonly inserted: DeliveryEntity[] = [];

	constructor(private readonly deps: DeliveriesDeps) {}

	/**
	 * The delivery record; a second record for the same (event, template, recipient) is refused.
	 * secretVars (one-time tokens and the links that carry them) are stored sealed only.
	 * True when the record is new (there is something to send), false when this event already produced this email.
	 *
	 * Inserted claimed by this node, to be sent by its next pass: no claim of its own (one store write less
	 * an email), and no other node's query finds it (it is due, for them, once the lease lapses: a node that
	 * dies with it unsent leaves it to the others a lease later; one that stops hands it back, release()).
	 * Unclaimed, due at once, when this node already holds MAX_HELD.
	 */
	async enqueue(
		eventId: string,
		template: TemplateName,
		contact: Pick<Contact, "id" | "email" | "firstName">,
		vars: Record<string, string>,
		secretVars: Record<string, string> = {},
	): Promise<boolean> {
		const now = new Date().toISOString();
		const publicVars = { firstName: contact.firstName, ...vars };
		// Rendered now as well, with the secrets masked: a template that cannot render fails the event, not the send.
		const masked = Object.fromEntries(Object.keys(secretVars).map(name => [name, SEALED]));
		const { subject } = this.deps.templates.render(template, { ...publicVars, ...masked });
		const held = this.inserted.length < MAX_HELD;
		const delivery: DeliveryEntity = {
			_id: deliveryIdFor(eventId, template, contact.email),
			template,
			to: contact.email.toLowerCase(),
			userId: contact.id,
			subject,
			vars: publicVars,
			...(Object.keys(secretVars).length > 0 ? { sealedVars: seal(JSON.stringify(secretVars), this.deps.secrets.current, "mail-vars") } : {}),
			status: "pending",
			attempts: 0,
			...(held ? this.leaseFrom(Date.now()) : { leaseUntil: 0, nextAttemptAt: Date.now() }),
			createdAt: now,
			updatedAt: now,
		};
		try {
			await this.deps.store.insert(delivery);
			if (held) this.inserted.push(delivery);
			return true;
		} catch (err) {
			if (isDuplicateKeyError(err)) return false;
			throw err;
		}
	}

	/** A claim from `now`: held until the lease lapses, when the email is due again for any node. */
	private leaseFrom(now: number): { leaseUntil: number; nextAttemptAt: number } {
		const leaseUntil = now + SENDING_LEASE_MS;
		return { leaseUntil, nextAttemptAt: leaseUntil };
	}

	/**
	 * One pass of the worker: sends what this node inserted since the last pass, and claims and sends the
	 * records that are due (failed ones past their backoff, revived ones, those whose claim lapsed),
	 * SEND_CONCURRENCY at a time, until `stopping()` says otherwise. Whether more may be due (a full batch
	 * was found, or more were inserted meanwhile): the worker goes on at once.
	 */
	async deliverDue(stopping: () => boolean): Promise<boolean> {
		if (stopping()) return false;
		const now = Date.now();
		// An inserted record whose lease is half gone is claimed anew first: its send must not outlive the lease.
		const mine = this.inserted.splice(0, BATCH).map(delivery => ({ delivery, claimed: (delivery.leaseUntil ?? 0) - now > SENDING_LEASE_MS / 2 }));
		const found = await this.deps.store.find({
			query: { nextAttemptAt: { $lte: now }, leaseUntil: { $lt: now }, status: { $in: ["pending", "failed-retrying"] } },
			sort: ["nextAttemptAt"],
			limit: BATCH,
		});
		const due: DueDelivery[] = [...mine, ...found.map(delivery => ({ delivery, claimed: false }))];
		let next = 0;
		let failure: { err: unknown } | undefined;
		const sender = async () => {
			// A failed "sent" mark stops the pass: with the store failing, every email sent now would go twice.
			while (next < due.length && !failure && !stopping()) {
				const { delivery, claimed } = due[next++];
				try {
					if (claimed || (await this.claim(delivery))) await this.attempt(delivery);
				} catch (err) {
					failure ??= { err };
				}
			}
		};
		await Promise.all(Array.from({ length: Math.min(SEND_CONCURRENCY, due.length) }, sender));
		// This node's records the pass did not reach (stopping, or a failure) wait for the next pass, or release().
		this.inserted.unshift(...due.slice(next, mine.length).map(d => d.delivery));
		if (failure) throw failure.err;
		await this.reportDeadLetters();
		return this.inserted.length > 0 || found.length === BATCH;
	}

	/** Claims a record as it was read: several notifications nodes may run their passes at once, one claim per lease wins. */
	private async claim(delivery: DeliveryEntity): Promise<boolean> {
		const claimed = await this.deps.store.updateOne(
			{ _id: delivery._id, status: delivery.status, leaseUntil: delivery.leaseUntil },
			{ $set: this.leaseFrom(Date.now()) },
		);
		return claimed === 1;
	}

	/**
	 * Hands back the records this node inserted and has not sent (it is stopping): due now for any node, as
	 * if never claimed. Those another node claimed meanwhile (their lease lapsed here) are left to it. How many.
	 */
	async release(): Promise<number> {
		const unsent = this.inserted.splice(0);
		let released = 0;
		for (const d of unsent) {
			released += await this.deps.store.updateOne(
				{ _id: d._id, status: d.status, leaseUntil: d.leaseUntil },
				{ $set: { leaseUntil: 0, nextAttemptAt: Date.now() } },
			);
		}
		return released;
	}

	/**
	 * Brings records written before the sparse fields in line (once they are, this touches nothing):
	 * a sent record loses its `nextAttemptAt`, a dead letter trades it for a `deadAt`. How many changed.
	 */
	async catchUp(): Promise<number> {
		const { store } = this.deps;
		const stale = { nextAttemptAt: { $gte: 0 } };
		const sent = await store.updateMany({ ...stale, status: "sent" }, { $unset: { nextAttemptAt: true } });
		const dead = await store.updateMany({ ...stale, status: "dead" }, { $unset: { nextAttemptAt: true }, $set: { deadAt: new Date().toISOString() } });
		return sent + dead;
	}

	/** Counts the dead letters for the gauge when due: never counted, changed here, or counted too long ago. */
	private async reportDeadLetters(): Promise<void> {
		const { metrics, store } = this.deps;
		if (!metrics || Date.now() - this.deadLettersCountedAt < DEAD_LETTERS_RECOUNT_MS) return;
		this.deadLettersCountedAt = Date.now();
		metrics.deadLetters(await store.count({ query: DEAD }));
	}

	/** The email as it goes out: rendered from the record's variables, its secret ones unsealed just for this. */
	mailOf(delivery: DeliveryEntity): RenderedMail {
		if (!delivery.vars) return { subject: delivery.subject, html: delivery.html ?? "", text: delivery.text ?? "" };
		const secretVars: Record<string, string> = delivery.sealedVars ? JSON.parse(unseal(delivery.sealedVars, this.deps.secrets.unsealWith, "mail-vars")) : {};
		return this.deps.templates.render(delivery.template, { ...delivery.vars, ...secretVars });
	}

	/**
	 * Sends a claimed record once: sent, or failed and due again after a backoff, or dead after the last attempt.
	 *
	 * Once the server has taken the email, only the "sent" mark stands between
	 * it and a second copy: it is a retryable single-document write (the driver
	 * retries it once after a failover, the server applies it at most once),
	 * and a failed mark is never recorded as a failed send. What remains: if
	 * the mark still fails (the database down for longer than that retry) or
	 * the process dies between the send and the mark, the record stays claimed
	 * and is sent again once its lease lapses: a duplicate email, never a lost one.
	 */
	async attempt(delivery: DeliveryEntity): Promise<void> {
		const attempts = delivery.attempts + 1;
		let sent: SentMail;
		try {
			sent = await this.deps.transport.send({ to: delivery.to, ...this.mailOf(delivery) });
		} catch (err) {
			await this.recordFailure(delivery, attempts, err);
			return;
		}
		this.deps.count(delivery.template, "sent");
		const { logger } = this.deps;
		try {
			await this.recordSent(delivery, attempts, sent);
		} catch (err) {
			// The pass stops here: with the store failing, every email sent now would go twice.
			logger.warn({ err, deliveryId: delivery._id, messageId: sent.messageId }, "email sent but not marked sent: it goes again when its lease lapses");
			throw err;
		}
		if (sent.file) logger.info({ file: sent.file, subject: delivery.subject, to: delivery.to }, "email written");
		else logger.info({ deliveryId: delivery._id, template: delivery.template, messageId: sent.messageId }, "email sent");
	}

	/**
	 * Unconditional (the email is out, whoever holds the lease now). What it was rendered from (its variables,
	 * sealed or not, an older record's rendering) and its claim are of no more use: the record keeps what an operator reads.
	 */
	private async recordSent(delivery: DeliveryEntity, attempts: number, sent: SentMail): Promise<void> {
		const at = new Date().toISOString();
		await this.deps.store.updateOne(
			{ _id: delivery._id },
			{
				$set: { status: "sent", attempts, messageId: sent.messageId, sentAt: at, updatedAt: at },
				$unset: { nextAttemptAt: true, deadAt: true, lastError: true, leaseUntil: true, vars: true, sealedVars: true, html: true, text: true },
			},
		);
	}

	/** Due again after a backoff, or dead after the last attempt; never over a "sent" mark (a sender whose lease had lapsed may have raced this one). */
	private async recordFailure(delivery: DeliveryEntity, attempts: number, err: unknown): Promise<void> {
		const { store, logger, retry } = this.deps;
		const lastError = sendError(err);
		const dead = attempts >= retry.maxAttempts;
		const at = new Date().toISOString();
		const outcome = { status: dead ? "dead" : "failed-retrying", attempts, lastError, updatedAt: at, leaseUntil: 0 };
		await store.updateOne(
			{ _id: delivery._id, status: { $ne: "sent" } },
			dead
				? { $set: { ...outcome, deadAt: at }, $unset: { nextAttemptAt: true } }
				: { $set: { ...outcome, nextAttemptAt: Date.now() + retryDelayMs(attempts, retry.retryBaseMs, retry.retryMaxMs) } },
		);
		this.deps.count(delivery.template, dead ? "dead" : "failed");
		if (dead) this.deadLettersCountedAt = 0;
		logger.warn(
			{ deliveryId: delivery._id, template: delivery.template, attempts, lastError, dead },
			dead ? "email dead-lettered" : "email failed; will retry",
		);
	}

	/**
	 * Dead letters (all of them, or the one with this id) become pending again, with a fresh retry budget; how many did.
	 * Safe to repeat: only records still dead match.
	 */
	async revive(id?: string): Promise<number> {
		const revival = {
			$set: { status: "pending", attempts: 0, nextAttemptAt: Date.now(), leaseUntil: 0, updatedAt: new Date().toISOString() },
			$unset: { deadAt: true },
		};
		const revived =
			id === undefined
				? await this.deps.store.updateMany({ ...DEAD, status: "dead" }, revival)
				: await this.deps.store.updateOne({ _id: id, ...DEAD, status: "dead" }, revival);
		if (revived > 0) {
			this.deadLettersCountedAt = 0;
			await this.reportDeadLetters();
		}
		return revived;
	}

	/**
	 * Removes the records of emails sent more than `keepDays` ago: how many. Delivery records do not pile up
	 * for ever; within that time a redelivered event still finds its record and sends nothing twice.
	 */
	async pruneSent(keepDays: number, now = Date.now()): Promise<number> {
		const before = new Date(now - keepDays * 86_400_000).toISOString();
		return this.deps.store.removeMany({ sentAt: { $lt: before }, status: "sent" });
	}

	async exists(id: string): Promise<boolean> {
		return Boolean(await this.deps.store.findOne({ _id: id }));
	}

	/** Emails that could not be delivered after every retry, oldest first. */
	async deadLetters(limit: number): Promise<DeliveryView[]> {
		const rows = await this.deps.store.find({ query: DEAD, sort: ["updatedAt"], limit });
		return rows.map(deliveryView);
	}

	/** A user's emails, newest first, by user id (or else by address). */
	async of(recipient: { userId?: string; email?: string }): Promise<DeliveryView[]> {
		const query = recipient.userId ? { userId: recipient.userId } : { to: String(recipient.email ?? "").toLowerCase() };
		const rows = await this.deps.store.find({ query, sort: ["-createdAt"], limit: OPERATOR_LIST_LIMIT });
		return rows.map(deliveryView);
	}
}
