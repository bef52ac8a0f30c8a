/**
 * notifications: templated email for account and money events.
 *
 * Every email is a delivery record first (its id derived from event id +
 * template + recipient, so a duplicated event sends nothing twice), then
 * sent by a worker that retries failures with exponential backoff and
 * jitter up to MAIL_MAX_ATTEMPTS, then leaves the record as a dead letter an
 * operator can list and replay. Records live in the service's own database,
 * so a pending email survives a restart.
 *
 * A record never holds a one-time token in clear: the variables that carry
 * one (the code and the link) are sealed with AUTH_SECRET, the email is
 * rendered when it is sent, and the sealed part is dropped once it is.
 *
 * Consumes: user.signedUp, user.passwordResetRequested, transaction.completed, transaction.failed
 * Calls:    auth.contactOf (names and addresses for transaction receipts)
 */
import crypto from "node:crypto";
import type { Context, ServiceSchema } from "moleculer";
import type { Config } from "../lib/config";
import { notFound } from "../lib/errors";
import Validator from "fastest-validator";
import { durableEventsOf } from "../lib/durable-events";
import { DURABLE_SUBSCRIPTIONS } from "../contracts/events";
import { consumerContract } from "../lib/events";
import { formatMoney } from "../lib/money";
import { seal, unseal } from "../lib/sealing";
import { nodeSecrets, type NodeSecrets } from "../lib/secrets";
import { DbMixin, isDuplicateKeyError } from "../mixins/db.mixin";
import { MailTemplates, createMailTransport, retryDelayMs, type MailTransport, type RenderedMail, type TemplateName } from "./notifications/mailer";

export type DeliveryStatus = "pending" | "sent" | "failed-retrying" | "dead";

export interface DeliveryEntity {
	_id: string;
	eventId: string;
	template: TemplateName;
	to: string;
	userId: string;
	/** As an operator sees it: a secret variable shows as "[sealed]". */
	subject: string;
	/** The template variables that are no secret. Absent only in records written before rendering moved to send time. */
	vars?: Record<string, string>;
	/** The secret ones (a one-time token and the link carrying it), sealed ("mail-vars"); dropped once the email is sent. */
	sealedVars?: string;
	/** The rendered email, in records written before rendering moved to send time only. */
	html?: string;
	text?: string;
	status: DeliveryStatus;
	attempts: number;
	nextAttemptAt: number;
	leaseUntil: number;
	lastError?: string;
	messageId?: string;
	createdAt: string;
	updatedAt: string;
	sentAt?: string;
}

export interface Contact {
	id: string;
	email: string;
	firstName: string;
	lastName: string;
}

const SENDING_LEASE_MS = 60_000;
const BATCH = 50;
/** What a secret variable renders as wherever the record keeps a rendering. */
const SEALED = "[sealed]";

export const deliveryIdFor = (eventId: string, template: string, to: string) =>
	crypto.createHash("sha256").update(`${eventId}\n${template}\n${to.toLowerCase()}`).digest("hex");

const deliveryView = (d: DeliveryEntity) => ({
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

const when = (iso: string) => new Date(iso).toUTCString();

/** Names the fields and rules a payload broke, never their values: a value may be a one-time token. */
const contractProblems = (problems: unknown) =>
	Array.isArray(problems) ? problems.map((p: { field?: string; type?: string }) => `${p.field} (${p.type})`).join(", ") : "no contract for this event";

export default function createNotificationsService(config: Config): ServiceSchema {
	const mail = config.mail;
	const base = config.auth.publicBaseUrl.replace(/\/$/, "");
	// Read when the service is created, not when its schema is built (that may touch DATA_DIR).
	let secrets: NodeSecrets;

	/** What each event asks of this service, bound to Moleculer events (embedded) or the durable queue (cluster). */
	const eventHandlers: Record<string, { params: Record<string, unknown>; handler(this: any, ctx: Context<any>): Promise<void> }> = {
		"user.signedUp": {
			params: consumerContract("user.signedUp", "userId", "email", "firstName", "verificationToken", "verificationExpiresAt"),
			async handler(this: any, ctx: Context<any>) {
				const e = ctx.params;
				await this.enqueue(
					e.eventId,
					"welcome",
					{ id: e.userId, email: e.email, firstName: e.firstName },
					{ expiresAt: when(e.verificationExpiresAt) },
					{ token: e.verificationToken, verifyUrl: `${base}/verify-email?token=${encodeURIComponent(e.verificationToken)}` },
				);
			},
		},

		"user.passwordResetRequested": {
			params: consumerContract("user.passwordResetRequested", "userId", "email", "firstName", "resetToken", "resetExpiresAt"),
			async handler(this: any, ctx: Context<any>) {
				const e = ctx.params;
				await this.enqueue(
					e.eventId,
					"password-reset",
					{ id: e.userId, email: e.email, firstName: e.firstName },
					{ expiresAt: when(e.resetExpiresAt) },
					{ token: e.resetToken, resetUrl: `${base}/reset-password?token=${encodeURIComponent(e.resetToken)}` },
				);
			},
		},

		"transaction.completed": {
			params: consumerContract("transaction.completed", "transactionId", "type", "amountMinor", "currency", "userId", "fromUserId", "toUserId"),
			async handler(this: any, ctx: Context<any>) {
				const e = ctx.params;
				const facts = { amount: formatMoney(e.amountMinor, e.currency), transactionId: e.transactionId, at: when(e.occurredAt) };
				if (e.type === "TopUp") {
					await this.enqueue(e.eventId, "topup-completed", await this.contactOf(ctx, e.userId), facts);
					return;
				}
				const [sender, recipient]: Contact[] = await Promise.all([this.contactOf(ctx, e.fromUserId), this.contactOf(ctx, e.toUserId)]);
				const nameOf = (c: Contact) => `${c.firstName} ${c.lastName}`;
				await this.enqueue(e.eventId, "transfer-sent", sender, { ...facts, counterpartyName: nameOf(recipient), counterpartyEmail: recipient.email });
				await this.enqueue(e.eventId, "transfer-received", recipient, { ...facts, counterpartyName: nameOf(sender), counterpartyEmail: sender.email });
			},
		},

		"transaction.failed": {
			params: consumerContract("transaction.failed", "transactionId", "type", "amountMinor", "currency", "userId", "fromUserId", "reason"),
			async handler(this: any, ctx: Context<any>) {
				const e = ctx.params;
				await this.enqueue(e.eventId, "transaction-failed", await this.contactOf(ctx, e.userId ?? e.fromUserId), {
					kind: e.type === "TopUp" ? "top-up" : "transfer",
					amount: formatMoney(e.amountMinor, e.currency),
					reason: e.reason ?? "it could not be completed",
					transactionId: e.transactionId,
					at: when(e.occurredAt),
				});
			},
		},
	};
	const validator = new Validator();
	const checks = Object.fromEntries(Object.entries(eventHandlers).map(([name, h]) => [name, validator.compile({ ...h.params })]));

	return {
		name: "notifications",
		mixins: [DbMixin(config, "notifications", { name: "deliveries", indexes: [{ fields: { status: 1 } }, { fields: { userId: 1 } }] })],

		actions: {
			/** Operator (REPL): emails that could not be delivered after every retry. */
			deadLetters: {
				visibility: "public",
				params: { limit: { type: "number", integer: true, min: 1, max: 1000, optional: true, convert: true } },
				async handler(this: any, ctx: Context<{ limit?: number }>) {
					const rows: DeliveryEntity[] = await this.adapter.find({ query: { status: "dead" }, sort: ["updatedAt"], limit: ctx.params.limit ?? 100 });
					return rows.map(deliveryView);
				},
			},

			/** Operator (REPL): send a dead letter again, from a fresh retry budget. */
			replay: {
				visibility: "public",
				params: { id: { type: "string", min: 1, max: 100 } },
				async handler(this: any, ctx: Context<{ id: string }>) {
					const revived = await this.revive({ _id: ctx.params.id, status: "dead" });
					if (revived === 0 && !(await this.adapter.findOne({ _id: ctx.params.id }))) throw notFound("Delivery not found");
					return { replayed: revived };
				},
			},

			/** Operator (REPL): send every dead letter again. */
			replayAll: {
				visibility: "public",
				async handler(this: any) {
					return { replayed: await this.revive({ status: "dead" }) };
				},
			},

			/** Operator (REPL): a user's emails, newest first, by user id or address. */
			deliveriesOf: {
				visibility: "public",
				params: { userId: { type: "string", optional: true }, email: { type: "string", optional: true } },
				async handler(this: any, ctx: Context<{ userId?: string; email?: string }>) {
					const query = ctx.params.userId ? { userId: ctx.params.userId } : { to: String(ctx.params.email ?? "").toLowerCase() };
					const rows: DeliveryEntity[] = await this.adapter.find({ query, sort: ["-createdAt"], limit: 200 });
					return rows.map(deliveryView);
				},
			},

			/** Operator (REPL, cluster): events parked in this service's RabbitMQ dead-letter queue go back to its queue. */
			redriveDeadEvents: {
				visibility: "public",
				async handler(this: any) {
					const bus = durableEventsOf(this.broker);
					if (!bus) return { redriven: 0, reason: "no durable queues in embedded mode" };
					return { redriven: await bus.redriveDead("notifications"), queues: await bus.depth("notifications") };
				},
			},

			health: {
				async handler(this: any) {
					await this.adapter.count({ query: { _id: "health-check" } });
					return { status: "ok", service: "notifications" };
				},
			},
		},

		// In the cluster the durable queue delivers these (see started()): none is missed while this node is down.
		events: config.transporter ? {} : eventHandlers,

		methods: {
			contactOf(this: any, ctx: Context, userId: string): Promise<Contact> {
				return ctx.call("auth.contactOf", { id: userId }, { retries: 3 });
			},

			/**
			 * The delivery record; a second record for the same (event, template, recipient) is refused.
			 * secretVars (one-time tokens and the links that carry them) are stored sealed only.
			 */
			async enqueue(
				this: any,
				eventId: string,
				template: TemplateName,
				contact: Pick<Contact, "id" | "email" | "firstName">,
				vars: Record<string, string>,
				secretVars: Record<string, string> = {},
			) {
				const now = new Date().toISOString();
				const publicVars = { firstName: contact.firstName, ...vars };
				// Rendered now as well, with the secrets masked: a template that cannot render fails the event, not the send.
				const masked = Object.fromEntries(Object.keys(secretVars).map(name => [name, SEALED]));
				const { subject } = this.templates.render(template, { ...publicVars, ...masked });
				const delivery: DeliveryEntity = {
					_id: deliveryIdFor(eventId, template, contact.email),
					eventId,
					template,
					to: contact.email.toLowerCase(),
					userId: contact.id,
					subject,
					vars: publicVars,
					...(Object.keys(secretVars).length > 0 ? { sealedVars: seal(JSON.stringify(secretVars), secrets.current, "mail-vars") } : {}),
					status: "pending",
					attempts: 0,
					nextAttemptAt: Date.now(),
					leaseUntil: 0,
					createdAt: now,
					updatedAt: now,
				};
				try {
					await this.adapter.insert(delivery);
				} catch (err) {
					if (isDuplicateKeyError(err)) return; // this event already produced this email
					throw err;
				}
				this.kick();
			},

			/** Runs the worker now (or right after the current run). */
			kick(this: any) {
				if (this.working) {
					this.workAgain = true;
					return;
				}
				this.working = (async () => {
					try {
						do {
							this.workAgain = false;
							await this.deliverDue();
						} while (this.workAgain);
					} catch (err) {
						this.logger.error({ err }, "mail worker failed");
					} finally {
						this.working = undefined;
					}
				})();
			},

			async deliverDue(this: any) {
				const now = Date.now();
				const due: DeliveryEntity[] = await this.adapter.find({
					query: { status: { $in: ["pending", "failed-retrying"] }, nextAttemptAt: { $lte: now }, leaseUntil: { $lt: now } },
					sort: ["nextAttemptAt"],
					limit: BATCH,
				});
				for (const delivery of due) {
					if (this.stopping) return;
					// Claim it: several notifications nodes may run this loop at once.
					const claimed = await this.adapter.updateMany(
						{ _id: delivery._id, status: delivery.status, leaseUntil: delivery.leaseUntil },
						{ $set: { leaseUntil: Date.now() + SENDING_LEASE_MS } },
					);
					if (claimed === 1) await this.attempt(delivery);
				}
			},

			/** The email as it goes out: rendered from the record's variables, its secret ones unsealed just for this. */
			mailOf(this: any, delivery: DeliveryEntity): RenderedMail {
				if (!delivery.vars) return { subject: delivery.subject, html: delivery.html ?? "", text: delivery.text ?? "" };
				const secretVars = delivery.sealedVars ? JSON.parse(unseal(delivery.sealedVars, secrets.unsealWith, "mail-vars")) : {};
				return this.templates.render(delivery.template, { ...delivery.vars, ...secretVars });
			},

			async attempt(this: any, delivery: DeliveryEntity) {
				const attempts = delivery.attempts + 1;
				const at = new Date().toISOString();
				try {
					const sent = await this.transport.send({ to: delivery.to, ...this.mailOf(delivery) });
					// A sent email's secrets (and an older record's rendering) are of no more use here.
					await this.adapter.updateMany(
						{ _id: delivery._id },
						{
							$set: { status: "sent", attempts, messageId: sent.messageId, sentAt: at, updatedAt: at, leaseUntil: 0 },
							$unset: { lastError: true, sealedVars: true, html: true, text: true },
						},
					);
					this.count(delivery.template, "sent");
					if (sent.file) this.logger.info({ file: sent.file, subject: delivery.subject, to: delivery.to }, "email written");
					else this.logger.info({ deliveryId: delivery._id, template: delivery.template, messageId: sent.messageId }, "email sent");
				} catch (err) {
					const e = err as { responseCode?: number; code?: string; message?: string };
					const lastError = `${e.responseCode ?? e.code ?? "error"}: ${String(e.message ?? err).slice(0, 300)}`;
					const dead = attempts >= mail.maxAttempts;
					await this.adapter.updateMany(
						{ _id: delivery._id },
						{
							$set: {
								status: dead ? "dead" : "failed-retrying",
								attempts,
								lastError,
								updatedAt: at,
								leaseUntil: 0,
								nextAttemptAt: Date.now() + retryDelayMs(attempts, mail.retryBaseMs, mail.retryMaxMs),
							},
						},
					);
					this.count(delivery.template, dead ? "dead" : "failed");
					this.logger.warn({ deliveryId: delivery._id, template: delivery.template, attempts, lastError, dead }, dead ? "email dead-lettered" : "email failed; will retry");
				}
			},

			async revive(this: any, query: object): Promise<number> {
				const now = new Date().toISOString();
				const revived = await this.adapter.updateMany(query, { $set: { status: "pending", attempts: 0, nextAttemptAt: Date.now(), leaseUntil: 0, updatedAt: now } });
				if (revived) this.kick();
				return revived;
			},

			count(this: any, template: string, result: "sent" | "failed" | "dead") {
				this.broker.metrics.increment("mint.emails.total", { template, result });
			},
		},

		created(this: any) {
			secrets = nodeSecrets(config);
			this.templates = new MailTemplates();
			this.broker.metrics.register({ type: "counter", name: "mint.emails.total", labelNames: ["template", "result"], description: "Emails by template and result" });
		},

		async started(this: any) {
			this.transport = createMailTransport(config) as MailTransport;
			const bus = durableEventsOf(this.broker);
			if (bus) {
				await bus.subscribe({
					group: "notifications",
					events: DURABLE_SUBSCRIPTIONS.notifications,
					maxAttempts: mail.maxAttempts,
					retryBaseMs: mail.retryBaseMs,
					handle: async (event: string, payload: any) => {
						const problems = checks[event]?.(payload);
						if (problems !== true) throw new Error(`Event ${event} breaks its contract: ${contractProblems(problems)}`);
						const ctx = { params: payload, call: (action: string, params: object, opts: object) => this.broker.call(action, params, opts) };
						await eventHandlers[event].handler.call(this, ctx as unknown as Context<any>);
					},
				});
			}
			this.timer = setInterval(() => this.kick(), mail.pollMs);
			this.timer.unref();
			this.kick(); // pending emails from before a restart
		},

		async stopped(this: any) {
			this.stopping = true;
			clearInterval(this.timer);
			await this.working;
			this.transport?.close();
		},
	} as ServiceSchema;
}
