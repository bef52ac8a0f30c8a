/**
 * transactions: top-ups and transfers, their state machine, idempotency and
 * history. Money itself moves only in the wallet service (wallet.debit /
 * wallet.credit, idempotent by transaction id).
 *
 * State machine (transactions/state-machine.ts): Pending -> Processing ->
 * Completed | Failed. Each move is a compare-and-set on the current status
 * that also appends the move to the transaction's history (one document, one
 * update), then is emitted; the outbox relay re-publishes what did not go out.
 *
 * Emits:    transaction.created, transaction.processing, transaction.completed, transaction.failed
 * Consumes: its own transaction.* on every node (cache cleaning)
 * Cache:    list, get, history, per caller (scope transactions:<userId>); each recorded change
 *           invalidates its parties' before it is announced
 * Calls:    wallet.debit, wallet.credit, wallet.balanceOf, auth.exists (its cache entry read first: lib/cacher.ts callCached)
 * Jobs:     sweep (re-drives transactions whose lease ran out), outbox-relay
 *
 * Exactly once: the process holding a transaction's lease (its creator, or
 * the sweeper once the lease has run out) drives it; every wallet step is
 * idempotent by transaction id, so a re-drive after a crash or a retried call
 * moves nothing twice (transactions/processing.ts).
 */
import type { CallingOptions, Context, Service } from "moleculer";
import {
	TRANSACTION_STATUSES,
	TRANSACTION_TYPES,
	type HistoryView,
	type MovementRequest,
	type MovementResult,
	type SubmitResult,
	type TransactionFacts,
	type TransactionStatus,
	type TransactionType,
	type TransactionView,
} from "../contracts/money";
import type { SignedInMeta } from "../contracts/gateway";
import { USER_BY_ID_CACHE } from "../contracts/users";
import { transactionMetrics } from "../lib/business-metrics";
import { callCached, type CacheSettings } from "../lib/cacher";
import type { Config } from "../lib/config";
import { defineService } from "../lib/define-service";
import { notFound } from "../lib/errors";
import { CacheCleaner, type CacheCleanerVars } from "../mixins/cache-cleaner.mixin";
import { DbMixin, type DbVars } from "../mixins/db.mixin";
import { HealthMixin } from "../mixins/health.mixin";
import { OutboxRelay, type OutboxVars } from "../mixins/outbox.mixin";
import { PeriodicJobs, type PeriodicVars } from "../mixins/periodic.mixin";
import { migrateTransactions } from "./transactions/migrations";
import { TransactionOutbox } from "./transactions/outbox";
import { TransactionProcessor } from "./transactions/processing";
import { replayHistory } from "./transactions/state-machine";
import { TransactionSubmitter, topUpDraft, transferDraft, type TransferChecks } from "./transactions/submit";
import {
	TRANSACTIONS,
	isParty,
	partyQuery,
	toHistoryView,
	toInspectView,
	toTransactionFacts,
	toTransactionView,
	type TransactionEntity,
} from "./transactions/views";

type TransactionsVars = DbVars<TransactionEntity> &
	PeriodicVars &
	OutboxVars &
	CacheCleanerVars & {
		outbox: TransactionOutbox;
		processor: TransactionProcessor;
		submitter: TransactionSubmitter;
	};
type TransactionsThis = Service & TransactionsVars;

/** What topup and transfer get from the gateway. */

const ID_PARAM = { type: "string", min: 1, max: 64 } as const;
/** Wallet steps are idempotent by transaction id, so a timed-out call may be retried. */
const WALLET_CALL: CallingOptions = { retries: 3 };
/** What a caller reads of their transactions is never stale once a change has been answered: strict (lib/cacher.ts). */
const PER_CALLER: CacheSettings = { scope: "#user.id", ttl: 300, strict: true };
const PARTIES = ["userId", "fromUserId", "toUserId"] as const;

export default function createTransactionsService(config: Config) {
	const limits = config.transactions;

	return defineService<TransactionsVars>()({
		name: "transactions",
		// Mixins start last to first and stop first to last: the jobs stop (and finish their runs) before the store closes.
		mixins: [
			PeriodicJobs<TransactionsThis>([
				{
					name: "sweep",
					intervalMs: limits.sweepIntervalMs,
					run() {
						return this.processor.sweepStuck();
					},
				},
			]),
			OutboxRelay<TransactionsThis, TransactionEntity>({
				intervalMs: limits.sweepIntervalMs,
				quietMs: limits.sweepIntervalMs,
				pending(quietBefore) {
					return this.outbox.pending(quietBefore);
				},
				relay(tx) {
					return this.outbox.relay(tx);
				},
			}),
			HealthMixin("transactions"),
			CacheCleaner({
				"transaction.created": PARTIES,
				"transaction.processing": PARTIES,
				"transaction.completed": PARTIES,
				"transaction.failed": PARTIES,
			}),
			DbMixin(config, "transactions", TRANSACTIONS),
		],

		methods: {
			/** The sweeper, now: claims and re-drives what is stuck. Safe beside the periodic run and other nodes (one claim per lease wins). */
			sweepStuck(): Promise<{ redriven: string[] }> {
				return this.processor.sweepStuck();
			},

			/** A transfer's request-time checks, made on the caller's context (its request id and trace); the recipient from auth's cache entry when it holds one. */
			transferChecks(ctx: Context): TransferChecks {
				return {
					recipientExists: id => callCached<boolean>(ctx, "auth.exists", USER_BY_ID_CACHE, { id }),
					balanceOf: userId => ctx.call<number, { userId: string }>("wallet.balanceOf", { userId }, WALLET_CALL),
				};
			},

			async findAny(id: string): Promise<TransactionEntity> {
				const tx = await this.adapter.findOne({ _id: id });
				if (!tx) throw notFound("Transaction not found");
				return tx;
			},

			async findForParty(id: string, userId: string): Promise<TransactionEntity> {
				const tx = await this.adapter.findOne({ _id: id });
				if (!tx || !isParty(tx, userId)) throw notFound("Transaction not found");
				return tx;
			},
		},

		actions: {
			topup: {
				auth: "required",
				params: { $$strict: true, amount: { type: "any" } },
				handler(ctx: Context<{ amount: unknown }, SignedInMeta>): Promise<SubmitResult> {
					const draft = topUpDraft(ctx.params.amount, ctx.meta.user.id, limits.topUpMaxMinor);
					return this.submitter.submit(draft, ctx.meta.idempotencyKey, this.transferChecks(ctx));
				},
			},

			transfer: {
				auth: "required",
				params: { $$strict: true, amount: { type: "any" }, toUserId: { type: "uuid" } },
				handler(ctx: Context<{ amount: unknown; toUserId: string }, SignedInMeta>): Promise<SubmitResult> {
					const draft = transferDraft(ctx.params.amount, ctx.meta.user.id, ctx.params.toUserId, limits.transferMaxMinor);
					return this.submitter.submit(draft, ctx.meta.idempotencyKey, this.transferChecks(ctx));
				},
			},

			list: {
				auth: "required",
				cache: PER_CALLER,
				params: {
					$$strict: true,
					limit: { type: "number", integer: true, min: 1, max: 100, convert: true, optional: true },
					offset: { type: "number", integer: true, min: 0, max: 1_000_000, convert: true, optional: true },
					type: { type: "enum", values: TRANSACTION_TYPES, optional: true },
					status: { type: "enum", values: TRANSACTION_STATUSES, optional: true },
				},
				async handler(
					ctx: Context<{ limit?: number; offset?: number; type?: TransactionType; status?: TransactionStatus }, SignedInMeta>,
				): Promise<{ transactions: TransactionView[]; total: number; limit: number; offset: number }> {
					const { limit = 20, offset = 0, type, status } = ctx.params;
					const query = partyQuery(ctx.meta.user.id, { type, status });
					const [rows, total] = await Promise.all([this.adapter.find({ query, sort: ["-createdAt", "-_id"], limit, offset }), this.adapter.count({ query })]);
					return { transactions: rows.map(toTransactionView), total, limit, offset };
				},
			},

			get: {
				auth: "required",
				cache: PER_CALLER,
				params: { $$strict: true, id: ID_PARAM },
				async handler(ctx: Context<{ id: string }, SignedInMeta>): Promise<TransactionView> {
					return toTransactionView(await this.findForParty(ctx.params.id, ctx.meta.user.id));
				},
			},

			history: {
				auth: "required",
				cache: PER_CALLER,
				params: { $$strict: true, id: ID_PARAM },
				async handler(ctx: Context<{ id: string }, SignedInMeta>): Promise<HistoryView[]> {
					return (await this.findForParty(ctx.params.id, ctx.meta.user.id)).history.map(toHistoryView);
				},
			},

			/** For wallet.checkInvariants: every transaction's money facts, and the stuck ones. */
			ledgerFacts: {
				visibility: "public",
				async handler(): Promise<TransactionFacts> {
					return toTransactionFacts(await this.adapter.find({}), Date.now());
				},
			},

			/**
			 * Operator action (REPL): re-emits a transaction's recorded state changes,
			 * oldest first, with their original eventIds and times (consumers dedupe).
			 */
			replayEvents: {
				visibility: "public",
				params: { id: ID_PARAM },
				async handler(ctx: Context<{ id: string }>): Promise<{ replayed: number; status: TransactionStatus }> {
					const tx = await this.findAny(ctx.params.id);
					const state = replayHistory(tx.history);
					if (state.status !== tx.status) throw new Error(`History of ${tx._id} replays to ${state.status}, stored ${tx.status}`);
					for (const record of tx.history) await this.outbox.announce(tx, record);
					return { replayed: tx.history.length, status: state.status };
				},
			},

			/** Operator action (REPL): re-drive every transaction stuck past TX_STUCK_AFTER_MS now. */
			sweep: {
				visibility: "public",
				handler(): Promise<{ redriven: string[] }> {
					return this.sweepStuck();
				},
			},

			/** Operator (REPL `tx <id>`): a transaction with its recorded history, whoever the parties are. */
			inspect: {
				visibility: "public",
				params: { id: ID_PARAM },
				async handler(ctx: Context<{ id: string }>) {
					return toInspectView(await this.findAny(ctx.params.id));
				},
			},

			/** Operator action (REPL): re-drive one transaction whose lease has run out. */
			redrive: {
				visibility: "public",
				params: { id: ID_PARAM },
				async handler(ctx: Context<{ id: string }>): Promise<{ redriven: boolean; transaction: TransactionView }> {
					const claimed = await this.processor.claim(ctx.params.id);
					if (claimed) await this.processor.drive(ctx.params.id);
					return { redriven: claimed, transaction: toTransactionView(await this.findAny(ctx.params.id)) };
				},
			},
		},

		/** Transactions from an older Mint brought in line (transactions/migrations.ts); nothing to do once they are. */
		async started() {
			const changed = await migrateTransactions(this.adapter);
			if (changed.parties + changed.published > 0) this.logger.info(changed, "transactions brought in line with the parties and outbox indexes");
		},

		created() {
			// Every recorded change invalidates its parties' cache first: the announcement may fail (the relay sends it later), the cleaning may not wait.
			const announcer = {
				emit: async (name: string, payload: unknown) => {
					await this.cleanCacheFor(name, payload);
					return this.broker.emit(name, payload);
				},
			};
			const metrics = transactionMetrics(this.broker, config.currency);
			this.outbox = new TransactionOutbox(this.adapter, announcer, this.logger, metrics);
			this.processor = new TransactionProcessor({
				store: this.adapter,
				outbox: this.outbox,
				wallet: {
					credit: movement => this.broker.call<MovementResult, MovementRequest>("wallet.credit", movement, WALLET_CALL),
					debit: movement => this.broker.call<MovementResult, MovementRequest>("wallet.debit", movement, WALLET_CALL),
				},
				logger: this.logger,
				stuckAfterMs: limits.stuckAfterMs,
				metrics,
			});
			this.submitter = new TransactionSubmitter({
				store: this.adapter,
				outbox: this.outbox,
				processor: this.processor,
				logger: this.logger,
				currency: config.currency,
				syncWaitMs: limits.syncWaitMs,
			});
		},
	});
}
