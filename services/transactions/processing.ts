/**
 * Driving a transaction through the wallet steps, and the lease that says
 * who may. The process holding a transaction's lease (its creator, or the
 * sweeper once the lease has run out) drives it; every wallet step is
 * idempotent by transaction id, so a re-drive after a crash or a retried
 * call moves nothing twice.
 *
 *   top-up:   Pending -> Processing, credit the user, -> Completed
 *   transfer: Pending -> Processing, debit the sender (no money: -> Failed),
 *             credit the recipient, -> Completed
 */
import type { Logger } from "moleculer";
import { TRANSACTION_STATUSES, type MovementRequest, type MovementResult, type TransactionStatus } from "../../contracts/money";
import type { TransactionMetrics } from "../../lib/business-metrics";
import type { Store } from "../../mixins/db.mixin";
import { Announced, type TransactionOutbox } from "./outbox";
import { afterMove, isFinal, transition } from "./state-machine";
import type { TransactionEntity } from "./views";

export const INSUFFICIENT_FUNDS = "Insufficient funds";

/** The wallet steps, as the service calls them. */
export interface WalletSteps {
	credit(movement: MovementRequest): Promise<MovementResult>;
	debit(movement: MovementRequest): Promise<MovementResult>;
}

export interface ProcessingDeps {
	store: Store<TransactionEntity>;
	outbox: TransactionOutbox;
	wallet: WalletSteps;
	logger: Pick<Logger, "warn" | "error">;
	/** How long a lease lasts: a transaction unfinished this long after its last claim is re-driven. */
	stuckAfterMs: number;
	/** After each sweep: how many transactions are still unfinished a lease after their last change (lib/business-metrics.ts). */
	metrics?: Pick<TransactionMetrics, "stuck">;
}

/** At most this many stuck transactions per sweep. */
const SWEEP_BATCH = 500;
const UNFINISHED: TransactionStatus[] = TRANSACTION_STATUSES.filter(status => !isFinal(status));

/** A party a transaction of its type must have (a stored document without one is corrupt). */
function party(tx: TransactionEntity, field: "userId" | "fromUserId" | "toUserId"): string {
	const userId = tx[field];
	if (!userId) throw new Error(`Transaction ${tx._id} has no ${field}`);
	return userId;
}

export class TransactionProcessor {
	constructor(private readonly deps: ProcessingDeps) {}

	/** A new transaction's lease: until when its creator drives it. */
	leaseFromNow(now: number = Date.now()): number {
		return now + this.deps.stuckAfterMs;
	}

	/**
	 * Runs a transaction forward from wherever it is: the transaction as this
	 * driver left it (null if it is gone). Every step is safe to repeat. Its
	 * creator hands in the transaction it inserted and what it announced of
	 * it, so nothing is read back.
	 */
	async drive(id: string, known?: TransactionEntity, announced = new Announced()): Promise<TransactionEntity | null> {
		const { store, wallet, outbox } = this.deps;
		let tx = known ?? (await store.findOne({ _id: id }));
		if (!tx || isFinal(tx.status)) return tx;
		if (tx.status === "Pending") {
			// Moved by another writer meanwhile: go on from where it is, if that is still ours to do.
			tx = (await this.move(tx, "Processing", announced)) ?? (await store.findOne({ _id: id }));
			if (tx?.status !== "Processing") return tx;
		}
		const { amountMinor } = tx;
		const movement = (userId: string): MovementRequest => ({ userId, txId: id, amountMinor });
		let done: TransactionEntity | null;
		if (tx.type === "TopUp") {
			await wallet.credit(movement(party(tx, "userId")));
			done = await this.move(tx, "Completed", announced);
		} else {
			const debit = await wallet.debit(movement(party(tx, "fromUserId")));
			if (debit.outcome === "insufficient-funds") {
				done = await this.move(tx, "Failed", announced, INSUFFICIENT_FUNDS);
			} else {
				await wallet.credit(movement(party(tx, "toUserId")));
				done = await this.move(tx, "Completed", announced);
			}
		}
		if (!done) return store.findOne({ _id: id });
		await outbox.clear(done, announced);
		return done;
	}

	/** Takes over a transaction whose lease has run out (its driver died or stalled): only one claim per lease succeeds. */
	async claim(id: string): Promise<boolean> {
		const now = Date.now();
		const changed = await this.deps.store.updateOne(
			{ _id: id, status: { $in: UNFINISHED }, leaseUntil: { $lt: now } },
			{ $set: { leaseUntil: this.leaseFromNow(now) } },
		);
		return changed === 1;
	}

	/** The sweeper: claims and re-drives every transaction whose lease has run out. Safe on several nodes at once. */
	async sweepStuck(): Promise<{ redriven: string[] }> {
		const { store, logger } = this.deps;
		// leaseUntil first: its sparse index holds only unfinished transactions.
		const stuck = await store.find({ query: { leaseUntil: { $lt: Date.now() }, status: { $in: UNFINISHED } }, limit: SWEEP_BATCH });
		const redriven: string[] = [];
		for (const tx of stuck) {
			if (!(await this.claim(tx._id))) continue;
			try {
				await this.drive(tx._id);
				redriven.push(tx._id);
			} catch (err) {
				logger.error({ err, transactionId: tx._id }, "re-drive failed; will try again");
			}
		}
		if (redriven.length) logger.warn({ count: redriven.length }, "sweeper re-drove stuck transactions");
		await this.reportStuck();
		return { redriven };
	}

	/** What the sweeper could not finish: unfinished transactions whose last change is older than a lease. */
	private async reportStuck(): Promise<void> {
		const { store, metrics, stuckAfterMs } = this.deps;
		if (!metrics) return;
		const changedBefore = new Date(Date.now() - stuckAfterMs).toISOString();
		// Every unfinished transaction has a lease (and only those): the lease's index finds them without a scan.
		const inFlight = { leaseUntil: { $lt: Number.MAX_SAFE_INTEGER }, status: { $in: UNFINISHED } };
		metrics.stuck(await store.count({ query: { ...inFlight, updatedAt: { $lt: changedBefore } } }));
	}

	/** One move of the state machine from where `tx` is, announced once recorded: the moved transaction, or null when another writer moved it first. */
	private async move(tx: TransactionEntity, to: TransactionStatus, announced: Announced, reason?: string): Promise<TransactionEntity | null> {
		const record = await transition(this.deps.store, tx._id, tx.status, to, reason);
		if (!record) return null;
		const moved = afterMove(tx, record);
		await this.deps.outbox.announceRecorded(moved, record, announced);
		return moved;
	}
}
