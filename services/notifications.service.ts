/**
 * notifications: templated email for account and money events.
 *
 * Each event below becomes delivery records (notifications/deliveries.ts:
 * one per event, template and recipient, one-time tokens sealed), which a
 * worker sends (notifications/mailer.ts: templates and transport), retrying
 * failures with backoff and leaving dead letters an operator can list and
 * replay. Records live in the service's own database, so a pending email
 * survives a restart.
 *
 * Consumes: user.signedUp, user.passwordResetRequested, transaction.completed, transaction.failed
 *           (Moleculer events embedded; in the cluster the same handlers, fed by the
 *           durable queue: mixins/durable-consumer.mixin.ts)
 * Calls:    auth.contactOf (names and addresses for transaction receipts; its cache entry read
 *           first, lib/cacher.ts callCached: with Redis a cached contact needs no call)
 * Serves:   deadLetters, replay, replayAll, deliveriesOf, redriveDeadEvents (operator, REPL); health
 */
import type { Context, Service } from "moleculer";
import type { EventPayload } from "../contracts/events";
import { USER_BY_ID_CACHE, type Contact } from "../contracts/users";
import { emailMetrics } from "../lib/business-metrics";
import { callCached } from "../lib/cacher";
import type { Config } from "../lib/config";
import { defineService } from "../lib/define-service";
import { durableEventsOf } from "../lib/durable-events";
import { notFound } from "../lib/errors";
import { consumerContract } from "../lib/events";
import { formatMoney } from "../lib/money";
import { nodeSecrets } from "../lib/secrets";
import { DbMixin, type DbVars } from "../mixins/db.mixin";
import { HealthMixin } from "../mixins/health.mixin";
import { PeriodicJobs, type PeriodicVars } from "../mixins/periodic.mixin";
import { DELIVERY_INDEXES, Deliveries, type DeliveryEntity, type DeliveryView } from "./notifications/deliveries";
import { DurableConsumer } from "../mixins/durable-consumer.mixin";
import { MailTemplates, createMailTransport, type MailTransport } from "./notifications/mailer";

interface NotificationsVars extends DbVars<DeliveryEntity>, PeriodicVars {
	deliveries: Deliveries;
	transport: MailTransport;
	/** Set when the service stops: the worker sends nothing more. */
	stopping: boolean;
	/** A record was added or revived since the worker's run began: the run looks again. */
	deliverAgain: boolean;
}

const MAIL_WORKER = "mail-worker";
/** How often the records of emails sent more than MAIL_KEEP_SENT_DAYS ago are removed. */
const PRUNE_SENT_EVERY_MS = 3_600_000;

const when = (iso: string) => new Date(iso).toUTCString();

export default function createNotificationsService(config: Config) {
	const mail = config.mail;
	const base = config.auth.publicBaseUrl.replace(/\/$/, "");

	return defineService<NotificationsVars>()({
		name: "notifications",
		// Mixins start last to first (the store, then the worker, then the durable queue) and stop first to last, after stopped() below.
		mixins: [
			DurableConsumer("notifications", { maxAttempts: mail.maxAttempts, retryBaseMs: mail.retryBaseMs }),
			PeriodicJobs<Service & NotificationsVars>([
				{
					// Every MAIL_POLL_MS, at start (pending emails from before a restart), and kicked by every new record.
					name: MAIL_WORKER,
					intervalMs: mail.pollMs,
					runAtStart: true,
					async run() {
						try {
							// Again while a batch came back full (more is due) or a record came meanwhile.
							let more: boolean;
							do {
								this.deliverAgain = false;
								more = await this.deliveries.deliverDue(() => this.stopping);
							} while ((more || this.deliverAgain) && !this.stopping);
						} catch (err) {
							this.logger.error({ err }, "mail worker failed");
						}
					},
				},
				{
					// Delivery records do not pile up: those of emails sent more than MAIL_KEEP_SENT_DAYS ago go.
					name: "prune-sent",
					intervalMs: PRUNE_SENT_EVERY_MS,
					runAtStart: true,
					async run() {
						const removed = await this.deliveries.pruneSent(mail.keepSentDays);
						if (removed > 0) this.logger.info({ removed, keepSentDays: mail.keepSentDays }, "removed the records of emails sent long ago");
					},
				},
			]),
			HealthMixin("notifications"),
			DbMixin(config, "notifications", { name: "deliveries", indexes: DELIVERY_INDEXES }),
		],

		methods: {
			/**
			 * The contract leaves a transaction event's user ids optional: auth refuses a missing one, and the event fails.
			 * Read from auth's cache entry when it holds one (with Redis, no call to the auth node), else asked.
			 */
			contactOf(ctx: Context, userId: string | undefined): Promise<Contact> {
				return callCached<Contact>(ctx, "auth.contactOf", USER_BY_ID_CACHE, { id: userId }, { retries: 3 });
			},

			/** A delivery record (nothing when this event already produced this email), and the worker kicked to send it. */
			async enqueue(...delivery: Parameters<Deliveries["enqueue"]>): Promise<void> {
				if (!(await this.deliveries.enqueue(...delivery))) return;
				// Stopping (an event still in flight): this node sends nothing more, so the record is handed back now.
				if (this.stopping) await this.deliveries.release();
				else this.kick();
			},

			/** Dead letters (one, or all) back to pending, and the worker kicked; how many. */
			async revive(id?: string): Promise<number> {
				const revived = await this.deliveries.revive(id);
				if (revived) this.kick();
				return revived;
			},

			/** Runs the mail worker now, or once more right after the run in flight (which may have looked before the new record). */
			kick(): void {
				this.deliverAgain = true;
				void this.runJob(MAIL_WORKER).then(() => {
					if (this.deliverAgain && !this.stopping) this.kick();
				});
			},
		},

		actions: {
			/** Operator (REPL): emails that could not be delivered after every retry. */
			deadLetters: {
				visibility: "public",
				params: { limit: { type: "number", integer: true, min: 1, max: 1000, optional: true, convert: true } },
				handler(ctx: Context<{ limit?: number }>): Promise<DeliveryView[]> {
					return this.deliveries.deadLetters(ctx.params.limit ?? 100);
				},
			},

			/** Operator (REPL): send a dead letter again, from a fresh retry budget. */
			replay: {
				visibility: "public",
				params: { id: { type: "string", min: 1, max: 100 } },
				async handler(ctx: Context<{ id: string }>) {
					const replayed = await this.revive(ctx.params.id);
					if (replayed === 0 && !(await this.deliveries.exists(ctx.params.id))) throw notFound("Delivery not found");
					return { replayed };
				},
			},

			/** Operator (REPL): send every dead letter again. */
			replayAll: {
				visibility: "public",
				async handler() {
					return { replayed: await this.revive() };
				},
			},

			/** Operator (REPL): a user's emails, newest first, by user id or address. */
			deliveriesOf: {
				visibility: "public",
				params: { userId: { type: "string", optional: true }, email: { type: "string", optional: true } },
				handler(ctx: Context<{ userId?: string; email?: string }>): Promise<DeliveryView[]> {
					return this.deliveries.of(ctx.params);
				},
			},

			/** Operator (REPL, cluster): events parked in this service's RabbitMQ dead-letter queue go back to its queue. */
			redriveDeadEvents: {
				visibility: "public",
				async handler() {
					const bus = durableEventsOf(this.broker);
					if (!bus) return { redriven: 0, reason: "no durable queues in embedded mode" };
					return { redriven: await bus.redriveDead("notifications"), queues: await bus.depth("notifications") };
				},
			},
		},

		events: {
			"user.signedUp": {
				params: consumerContract("user.signedUp", "userId", "email", "firstName", "verificationToken", "verificationExpiresAt"),
				async handler(ctx: Context<EventPayload<"user.signedUp">>) {
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
				async handler(ctx: Context<EventPayload<"user.passwordResetRequested">>) {
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
				async handler(ctx: Context<EventPayload<"transaction.completed">>) {
					const e = ctx.params;
					const facts = { amount: formatMoney(e.amountMinor, e.currency), transactionId: e.transactionId, at: when(e.occurredAt) };
					if (e.type === "TopUp") {
						await this.enqueue(e.eventId, "topup-completed", await this.contactOf(ctx, e.userId), facts);
						return;
					}
					const [sender, recipient] = await Promise.all([this.contactOf(ctx, e.fromUserId), this.contactOf(ctx, e.toUserId)]);
					const nameOf = (c: Contact) => `${c.firstName} ${c.lastName}`;
					await this.enqueue(e.eventId, "transfer-sent", sender, { ...facts, counterpartyName: nameOf(recipient), counterpartyEmail: recipient.email });
					await this.enqueue(e.eventId, "transfer-received", recipient, { ...facts, counterpartyName: nameOf(sender), counterpartyEmail: sender.email });
				},
			},

			"transaction.failed": {
				params: consumerContract("transaction.failed", "transactionId", "type", "amountMinor", "currency", "userId", "fromUserId", "reason"),
				async handler(ctx: Context<EventPayload<"transaction.failed">>) {
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
		},

		created() {
			this.stopping = false;
			this.deliverAgain = false;
			const metrics = emailMetrics(this.broker);
			// Made here, before any mixin's started(): the worker and the durable queue may send from then on.
			this.transport = createMailTransport(config);
			this.deliveries = new Deliveries({
				store: this.adapter,
				templates: new MailTemplates(),
				transport: this.transport,
				// Read when the service is created, not when its schema is built (that may touch DATA_DIR).
				secrets: nodeSecrets(config),
				retry: mail,
				logger: this.logger,
				count: (template, result) => metrics.emailed(template, result),
				metrics,
			});
		},

		/** Once the store is connected: records from before the sparse fields brought in line (the worker's query does not need it: it also asks for the status). */
		async started() {
			const changed = await this.deliveries.catchUp();
			if (changed > 0) this.logger.info({ changed }, "delivery records brought in line with the sparse due and dead fields");
		},

		async stopped() {
			this.stopping = true;
			// Joins the worker's run in flight, if any (a new run sees `stopping` and returns at once): its email goes out before the transport closes.
			await this.runJob(MAIL_WORKER);
			// What this node inserted and did not send is due at once for the others (or for it, restarted), not a lease later.
			const released = await this.deliveries.release();
			if (released > 0) this.logger.info({ released }, "unsent emails handed back");
			this.transport.close();
		},
	});
}
