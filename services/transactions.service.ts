/**
 * transactions: top-ups and transfers, their state machine, idempotency and
 * history. Money itself moves only in the wallet service (wallet.debit /
 * wallet.credit, idempotent by transaction id).
 *
 * State machine: Pending -> Processing -> Completed | Failed. Each move is a
 * compare-and-set on the current status that also appends the move to the
 * transaction's history (one document, one update), then is emitted.
 *
 * Emits:    transaction.created, transaction.processing, transaction.completed, transaction.failed
 * Calls:    wallet.debit, wallet.credit, wallet.balanceOf, auth.exists
 *
 * Exactly once: the process holding a transaction's lease (its creator, or
 * the sweeper once the lease has run out) drives it; every wallet step is
 * idempotent by transaction id, so a re-drive after a crash or a retried call
 * moves nothing twice.
 */
import crypto from "node:crypto";
import type { Context, ServiceSchema } from "moleculer";
import type { Config } from "../lib/config";
import { businessRule, notFound, validationError } from "../lib/errors";
import type { EventName } from "../contracts/events";
import { eventIdFor, publish } from "../lib/events";
import { parseMajorAmount, toMajor } from "../lib/money";
import { DbMixin, isDuplicateKeyError } from "../mixins/db.mixin";
import type { Caller, MovementResult, TransactionFacts } from "../contracts";

export type TransactionType = "TopUp" | "Transfer";
export type TransactionStatus = "Pending" | "Processing" | "Completed" | "Failed";

export interface HistoryRecord {
	status: TransactionStatus;
	at: string;
	reason?: string;
}

export interface TransactionEntity {
	_id: string;
	type: TransactionType;
	status: TransactionStatus;
	amountMinor: number;
	currency: string;
	userId?: string; // top-up
	fromUserId?: string; // transfer
	toUserId?: string; // transfer
	/** Who asked for it: the top-up's user or the transfer's sender. */
	requestedBy: string;
	reason?: string;
	idempotencyKey?: string;
	requestHash: string;
	/** Until when the process that holds the transaction drives it; then the sweeper may. */
	leaseUntil: number;
	/** The outbox: state changes recorded in `history` whose events are not yet confirmed published. */
	unpublished: number;
	history: HistoryRecord[];
	createdAt: string;
	updatedAt: string;
}

export interface TransactionView {
	id: string;
	type: TransactionType;
	status: TransactionStatus;
	amount: number;
	currency: string;
	userId?: string;
	fromUserId?: string;
	toUserId?: string;
	reason?: string;
	createdAt: string;
	updatedAt: string;
}

/** What topup/transfer return to the gateway, which turns it into 200/201/202. */
export interface SubmitResult {
	transaction: TransactionView;
	replayed: boolean;
	final: boolean;
}

export const toTransactionView = (tx: TransactionEntity): TransactionView => ({
	id: tx._id,
	type: tx.type,
	status: tx.status,
	amount: toMajor(tx.amountMinor),
	currency: tx.currency,
	...(tx.userId ? { userId: tx.userId } : {}),
	...(tx.fromUserId ? { fromUserId: tx.fromUserId } : {}),
	...(tx.toUserId ? { toUserId: tx.toUserId } : {}),
	...(tx.reason ? { reason: tx.reason } : {}),
	createdAt: tx.createdAt,
	updatedAt: tx.updatedAt,
});

const FINAL: TransactionStatus[] = ["Completed", "Failed"];
const EVENT_BY_STATUS: Record<TransactionStatus, string> = { Pending: "created", Processing: "processing", Completed: "completed", Failed: "failed" };
const NEXT: Record<TransactionStatus, TransactionStatus[]> = { Pending: ["Processing"], Processing: ["Completed", "Failed"], Completed: [], Failed: [] };

/** Replays a recorded history: the state it leads to, or an error naming the first move the machine forbids. */
export function replayHistory(history: HistoryRecord[]): { status: TransactionStatus; reason?: string } {
	if (history[0]?.status !== "Pending") throw new Error("A history starts with Pending");
	let state: { status: TransactionStatus; reason?: string } = { status: "Pending" };
	for (const record of history.slice(1)) {
		if (!NEXT[state.status].includes(record.status)) throw new Error(`Illegal move ${state.status} -> ${record.status}`);
		state = { status: record.status, ...(record.reason ? { reason: record.reason } : {}) };
	}
	return state;
}
const IDEMPOTENCY_KEY = /^[\x20-\x7e]{1,255}$/;
const INSUFFICIENT_FUNDS = "Insufficient funds";
/** Wallet steps are idempotent by transaction id, so a timed-out call may be retried. */
const WALLET_CALL = { retries: 3 };

/** The same user and Idempotency-Key always name the same transaction: the insert itself dedupes. */
export const transactionIdFor = (userId: string, idempotencyKey: string): string => eventIdFor("transaction", userId, idempotencyKey);

const requestHashOf = (request: object) => crypto.createHash("sha256").update(JSON.stringify(request)).digest("hex");

const sleep = (ms: number) => new Promise<void>(resolve => setTimeout(resolve, ms).unref());

export default function createTransactionsService(config: Config): ServiceSchema {
	const limits = config.transactions;

	/** The amount from the wire, as minor units, or a 400 naming the field. */
	function amountMinorOf(value: unknown, maxMinor: number): number {
		const parsed = parseMajorAmount(value, maxMinor);
		if (!parsed.ok) throw validationError([{ path: "amount", message: `The amount ${parsed.reason}` }]);
		return parsed.minor;
	}

	return {
		name: "transactions",
		mixins: [
			DbMixin(config, "transactions", {
				name: "transactions",
				indexes: [{ fields: { userId: 1 } }, { fields: { fromUserId: 1 } }, { fields: { toUserId: 1 } }, { fields: { status: 1 } }],
			}),
		],

		actions: {
			topup: {
				auth: "required",
				params: { $$strict: true, amount: { type: "any" } },
				async handler(this: any, ctx: Context<{ amount: unknown }, { user: Caller; idempotencyKey?: string }>): Promise<SubmitResult> {
					const amountMinor = amountMinorOf(ctx.params.amount, limits.topUpMaxMinor);
					const userId = ctx.meta.user.id;
					return this.submit(ctx, { type: "TopUp", amountMinor, userId, requestedBy: userId });
				},
			},

			transfer: {
				auth: "required",
				params: { $$strict: true, amount: { type: "any" }, toUserId: { type: "uuid" } },
				async handler(this: any, ctx: Context<{ amount: unknown; toUserId: string }, { user: Caller; idempotencyKey?: string }>): Promise<SubmitResult> {
					const amountMinor = amountMinorOf(ctx.params.amount, limits.transferMaxMinor);
					const fromUserId = ctx.meta.user.id;
					const { toUserId } = ctx.params;
					if (toUserId === fromUserId) throw validationError([{ path: "toUserId", message: "You cannot send money to yourself" }]);
					return this.submit(ctx, { type: "Transfer", amountMinor, fromUserId, toUserId, requestedBy: fromUserId });
				},
			},

			list: {
				auth: "required",
				params: {
					$$strict: true,
					limit: { type: "number", integer: true, min: 1, max: 100, convert: true, optional: true },
					offset: { type: "number", integer: true, min: 0, max: 1_000_000, convert: true, optional: true },
					type: { type: "enum", values: ["TopUp", "Transfer"], optional: true },
					status: { type: "enum", values: ["Pending", "Processing", "Completed", "Failed"], optional: true },
				},
				async handler(this: any, ctx: Context<{ limit?: number; offset?: number; type?: string; status?: string }, { user: Caller }>) {
					const me = ctx.meta.user.id;
					const limit = ctx.params.limit ?? 20;
					const offset = ctx.params.offset ?? 0;
					const query: Record<string, unknown> = { $or: [{ userId: me }, { fromUserId: me }, { toUserId: me }] };
					if (ctx.params.type) query.type = ctx.params.type;
					if (ctx.params.status) query.status = ctx.params.status;
					const [rows, total] = await Promise.all([
						this.adapter.find({ query, sort: ["-createdAt", "-_id"], limit, offset }),
						this.adapter.count({ query }),
					]);
					return { transactions: rows.map(toTransactionView), total, limit, offset };
				},
			},

			get: {
				auth: "required",
				params: { $$strict: true, id: { type: "string", min: 1, max: 64 } },
				async handler(this: any, ctx: Context<{ id: string }, { user: Caller }>) {
					return toTransactionView(await this.findForParty(ctx.params.id, ctx.meta.user.id));
				},
			},

			history: {
				auth: "required",
				params: { $$strict: true, id: { type: "string", min: 1, max: 64 } },
				async handler(this: any, ctx: Context<{ id: string }, { user: Caller }>) {
					const tx: TransactionEntity = await this.findForParty(ctx.params.id, ctx.meta.user.id);
					return tx.history.map(h => ({ status: h.status, at: h.at, ...(h.reason ? { reason: h.reason } : {}) }));
				},
			},

			/** For wallet.checkInvariants: every transaction's money facts, and the stuck ones. */
			ledgerFacts: {
				visibility: "public",
				async handler(this: any): Promise<TransactionFacts> {
					const rows: TransactionEntity[] = await this.adapter.find({});
					const now = Date.now();
					return {
						transactions: rows.map(t => ({
							id: t._id,
							type: t.type,
							status: t.status,
							amountMinor: t.amountMinor,
							userId: t.userId,
							fromUserId: t.fromUserId,
							toUserId: t.toUserId,
						})),
						stuck: rows.filter(t => !FINAL.includes(t.status) && t.leaseUntil < now).map(t => ({ id: t._id, status: t.status, updatedAt: t.updatedAt })),
					};
				},
			},

			/**
			 * Operator action (REPL): re-emits a transaction's recorded state changes,
			 * oldest first, with their original eventIds and times (consumers dedupe).
			 */
			replayEvents: {
				visibility: "public",
				params: { id: { type: "string", min: 1, max: 64 } },
				async handler(this: any, ctx: Context<{ id: string }>) {
					const tx: TransactionEntity | null = await this.adapter.findOne({ _id: ctx.params.id });
					if (!tx) throw notFound("Transaction not found");
					const state = replayHistory(tx.history);
					if (state.status !== tx.status) throw new Error(`History of ${tx._id} replays to ${state.status}, stored ${tx.status}`);
					for (const record of tx.history) await this.announce(tx, record);
					return { replayed: tx.history.length, status: state.status };
				},
			},

			/** Operator action (REPL): re-drive every transaction stuck past TX_STUCK_AFTER_MS now. */
			sweep: {
				visibility: "public",
				async handler(this: any) {
					return this.sweepStuck();
				},
			},

			/** Operator (REPL `tx <id>`): a transaction with its recorded history, whoever the parties are. */
			inspect: {
				visibility: "public",
				params: { id: { type: "string", min: 1, max: 64 } },
				async handler(this: any, ctx: Context<{ id: string }>) {
					const tx: TransactionEntity | null = await this.adapter.findOne({ _id: ctx.params.id });
					if (!tx) throw notFound("Transaction not found");
					return { ...toTransactionView(tx), history: tx.history, leaseUntil: new Date(tx.leaseUntil).toISOString(), unpublishedEvents: tx.unpublished ?? 0 };
				},
			},

			/** Operator action (REPL): re-drive one transaction whose lease has run out. */
			redrive: {
				visibility: "public",
				params: { id: { type: "string", min: 1, max: 64 } },
				async handler(this: any, ctx: Context<{ id: string }>) {
					const claimed = await this.claim(ctx.params.id);
					if (claimed) await this.drive(ctx.params.id);
					const tx: TransactionEntity | null = await this.adapter.findOne({ _id: ctx.params.id });
					if (!tx) throw notFound("Transaction not found");
					return { redriven: claimed, transaction: toTransactionView(tx) };
				},
			},

			health: {
				async handler(this: any) {
					await this.adapter.count({ query: { _id: "health-check" } });
					return { status: "ok", service: "transactions" };
				},
			},
		},

		methods: {
			async submit(
				this: any,
				ctx: Context<unknown, { idempotencyKey?: string }>,
				draft: Pick<TransactionEntity, "type" | "amountMinor" | "userId" | "fromUserId" | "toUserId" | "requestedBy">,
			): Promise<SubmitResult> {
				const idempotencyKey = ctx.meta.idempotencyKey;
				if (idempotencyKey !== undefined && !IDEMPOTENCY_KEY.test(idempotencyKey)) {
					throw validationError([{ path: "Idempotency-Key", message: "The Idempotency-Key header must be 1-255 printable characters" }]);
				}
				const requestHash = requestHashOf({ type: draft.type, amountMinor: draft.amountMinor, toUserId: draft.toUserId ?? null });
				const id = idempotencyKey === undefined ? crypto.randomUUID() : transactionIdFor(draft.requestedBy, idempotencyKey);

				// A key seen before answers with its transaction, before any request-time check.
				const seen: TransactionEntity | null = idempotencyKey === undefined ? null : await this.adapter.findOne({ _id: id });
				if (seen) return this.replay(seen, requestHash);

				if (draft.type === "Transfer") {
					if (!(await ctx.call<boolean, object>("auth.exists", { id: draft.toUserId }))) throw notFound("Recipient not found");
					const balance = await ctx.call<number, object>("wallet.balanceOf", { userId: draft.fromUserId }, WALLET_CALL);
					if (balance < draft.amountMinor) throw businessRule(INSUFFICIENT_FUNDS);
				}

				const now = new Date().toISOString();
				const tx: TransactionEntity = {
					_id: id,
					...draft,
					status: "Pending",
					currency: config.currency,
					...(idempotencyKey !== undefined ? { idempotencyKey } : {}),
					requestHash,
					leaseUntil: Date.now() + limits.stuckAfterMs,
					unpublished: 1,
					history: [{ status: "Pending", at: now }],
					createdAt: now,
					updatedAt: now,
				};
				for (const key of Object.keys(tx) as (keyof TransactionEntity)[]) if (tx[key] === undefined) delete tx[key];
				try {
					await this.adapter.insert(tx);
				} catch (err) {
					if (!isDuplicateKeyError(err)) throw err;
					return this.replay(await this.adapter.findOne({ _id: id }), requestHash);
				}
				await this.announceRecorded(tx, tx.history[0]);

				// The creator holds the lease: drive it now, answer with the final state if it ends in time.
				const driving = this.drive(id).catch((err: unknown) => this.logger.error({ err, transactionId: id }, "transaction processing failed; the sweeper will re-drive it"));
				await Promise.race([driving, sleep(limits.syncWaitMs)]);
				const current: TransactionEntity = await this.adapter.findOne({ _id: id });
				return { transaction: toTransactionView(current), replayed: false, final: FINAL.includes(current.status) };
			},

			replay(this: any, tx: TransactionEntity, requestHash: string): SubmitResult {
				if (tx.requestHash !== requestHash) throw businessRule("This Idempotency-Key was already used with a different request");
				return { transaction: toTransactionView(tx), replayed: true, final: FINAL.includes(tx.status) };
			},

			/** Runs a transaction forward from wherever it is. Every step is safe to repeat. */
			async drive(this: any, id: string): Promise<void> {
				let tx: TransactionEntity | null = await this.adapter.findOne({ _id: id });
				if (!tx || FINAL.includes(tx.status)) return;
				if (tx.status === "Pending") {
					await this.transition(tx, "Pending", "Processing");
					tx = (await this.adapter.findOne({ _id: id })) as TransactionEntity;
					if (tx.status !== "Processing") return;
				}
				if (tx.type === "TopUp") {
					await this.walletStep("wallet.credit", { userId: tx.userId, txId: tx._id, amountMinor: tx.amountMinor });
					await this.transition(tx, "Processing", "Completed");
					return;
				}
				const debit: MovementResult = await this.walletStep("wallet.debit", { userId: tx.fromUserId, txId: tx._id, amountMinor: tx.amountMinor });
				if (debit.outcome === "insufficient-funds") {
					await this.transition(tx, "Processing", "Failed", INSUFFICIENT_FUNDS);
					return;
				}
				await this.walletStep("wallet.credit", { userId: tx.toUserId, txId: tx._id, amountMinor: tx.amountMinor });
				await this.transition(tx, "Processing", "Completed");
			},

			walletStep(this: any, action: string, params: object): Promise<MovementResult> {
				return this.broker.call(action, params, WALLET_CALL);
			},

			/** Compare-and-set on the status, recording the move in the same update. */
			async transition(this: any, tx: TransactionEntity, from: TransactionStatus, to: TransactionStatus, reason?: string): Promise<boolean> {
				const at = new Date().toISOString();
				const record: HistoryRecord = { status: to, at, ...(reason ? { reason } : {}) };
				const changed = await this.adapter.updateMany(
					{ _id: tx._id, status: from },
					{ $set: { status: to, updatedAt: at, ...(reason ? { reason } : {}) }, $push: { history: record }, $inc: { unpublished: 1 } },
				);
				if (changed !== 1) return false;
				await this.announceRecorded(tx, record);
				return true;
			},

			/**
			 * The state change and its event are written together (the history
			 * record and `unpublished` in one update): once the event is out, the
			 * outbox count goes down. If publishing fails, or the node dies first,
			 * the relay (relayUnpublished) publishes the history again later.
			 */
			async announceRecorded(this: any, tx: TransactionEntity, record: HistoryRecord) {
				try {
					await this.announce(tx, record);
				} catch (err) {
					// The state change stands; the relay publishes its event later.
					this.logger.warn({ err, transactionId: tx._id, status: record.status }, "event not published yet; the outbox relay will retry");
					return;
				}
				await this.adapter.updateMany({ _id: tx._id, unpublished: { $gt: 0 } }, { $inc: { unpublished: -1 } });
			},

			/** The outbox relay: re-publishes whole histories (stable event ids, so consumers dedupe) until confirmed. */
			async relayUnpublished(this: any): Promise<string[]> {
				const quietSince = new Date(Date.now() - limits.sweepIntervalMs).toISOString();
				const waiting: TransactionEntity[] = await this.adapter.find({ query: { unpublished: { $gt: 0 }, updatedAt: { $lt: quietSince } }, limit: 500 });
				const relayed: string[] = [];
				for (const tx of waiting) {
					try {
						for (const record of tx.history) await this.announce(tx, record);
					} catch (err) {
						this.logger.warn({ err, transactionId: tx._id }, "outbox relay could not publish; will try again");
						continue;
					}
					await this.adapter.updateMany({ _id: tx._id, unpublished: tx.unpublished }, { $set: { unpublished: 0 } });
					relayed.push(tx._id);
				}
				if (relayed.length) this.logger.warn({ count: relayed.length }, "outbox relay published pending transaction events");
				return relayed;
			},

			/** Emits a state change; its eventId is stable per (transaction, status), so replays dedupe. */
			async announce(this: any, tx: TransactionEntity, record: HistoryRecord) {
				await publish(
					this.broker,
					`transaction.${EVENT_BY_STATUS[record.status]}` as EventName,
					{
						transactionId: tx._id,
						type: tx.type,
						status: record.status,
						amountMinor: tx.amountMinor,
						currency: tx.currency,
						...(tx.userId ? { userId: tx.userId } : {}),
						...(tx.fromUserId ? { fromUserId: tx.fromUserId, toUserId: tx.toUserId } : {}),
						...(record.reason ? { reason: record.reason } : {}),
					},
					{ eventId: eventIdFor("transaction-event", tx._id, record.status), occurredAt: record.at },
				);
			},

			async findForParty(this: any, id: string, userId: string): Promise<TransactionEntity> {
				const tx: TransactionEntity | null = await this.adapter.findOne({ _id: id });
				if (!tx || ![tx.userId, tx.fromUserId, tx.toUserId].includes(userId)) throw notFound("Transaction not found");
				return tx;
			},

			/** Takes over a transaction whose lease has run out (its driver died or stalled). */
			async claim(this: any, id: string): Promise<boolean> {
				const now = Date.now();
				const changed = await this.adapter.updateMany(
					{ _id: id, status: { $in: ["Pending", "Processing"] }, leaseUntil: { $lt: now } },
					{ $set: { leaseUntil: now + limits.stuckAfterMs } },
				);
				return changed === 1;
			},

			/** The sweeper: safe on several nodes at once, since only one claim per lease succeeds. */
			async sweepStuck(this: any): Promise<{ redriven: string[] }> {
				const stuck: TransactionEntity[] = await this.adapter.find({
					query: { status: { $in: ["Pending", "Processing"] }, leaseUntil: { $lt: Date.now() } },
					limit: 500,
				});
				const redriven: string[] = [];
				for (const tx of stuck) {
					if (!(await this.claim(tx._id))) continue;
					try {
						await this.drive(tx._id);
						redriven.push(tx._id);
					} catch (err) {
						this.logger.error({ err, transactionId: tx._id }, "re-drive failed; will try again");
					}
				}
				if (redriven.length) this.logger.warn({ count: redriven.length }, "sweeper re-drove stuck transactions");
				return { redriven };
			},
		},

		started(this: any) {
			this.sweepTimer = setInterval(async () => {
				await this.sweepStuck().catch((err: unknown) => this.logger.error({ err }, "sweep failed"));
				await this.relayUnpublished().catch((err: unknown) => this.logger.error({ err }, "outbox relay failed"));
			}, limits.sweepIntervalMs);
			this.sweepTimer.unref();
		},

		stopped(this: any) {
			clearInterval(this.sweepTimer);
		},
	} as ServiceSchema;
}
