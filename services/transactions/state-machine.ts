/**
 * The transaction state machine: Pending -> Processing -> Completed | Failed,
 * no other move. A move is a compare-and-set on the current status that also
 * appends the move to the transaction's history and counts it in the outbox
 * (`unpublished`), in one single-document update; a move the machine forbids
 * is refused before anything is written. A recorded history can be replayed,
 * and each (transaction, status) has one stable event id.
 */
import { TRANSACTION_STATUSES, type TransactionStatus } from "../../contracts/money";
import type { EventName } from "../../contracts/events";
import { eventIdFor } from "../../lib/events";
import type { Store } from "../../mixins/db.mixin";
import type { HistoryRecord, TransactionEntity } from "./views";

/** The moves the machine allows, from each status. */
export const NEXT: Readonly<Record<TransactionStatus, readonly TransactionStatus[]>> = {
	Pending: ["Processing"],
	Processing: ["Completed", "Failed"],
	Completed: [],
	Failed: [],
};

/** The statuses with no move out. */
export const FINAL_STATUSES: readonly TransactionStatus[] = TRANSACTION_STATUSES.filter(status => NEXT[status].length === 0);

export const isFinal = (status: TransactionStatus): boolean => FINAL_STATUSES.includes(status);

export const canMove = (from: TransactionStatus, to: TransactionStatus): boolean => NEXT[from]?.includes(to) ?? false;

/** A move the machine forbids: a bug in the caller, never a business outcome. */
export class IllegalMove extends Error {
	constructor(
		readonly from: TransactionStatus,
		readonly to: TransactionStatus,
	) {
		super(`Illegal move ${from} -> ${to}`);
	}
}

/** Replays a recorded history: the state it leads to, or an error naming the first move the machine forbids. */
export function replayHistory(history: HistoryRecord[]): { status: TransactionStatus; reason?: string } {
	if (history[0]?.status !== "Pending") throw new Error("A history starts with Pending");
	let state: { status: TransactionStatus; reason?: string } = { status: "Pending" };
	for (const record of history.slice(1)) {
		if (!canMove(state.status, record.status)) throw new IllegalMove(state.status, record.status);
		state = { status: record.status, ...(record.reason ? { reason: record.reason } : {}) };
	}
	return state;
}

const EVENT_BY_STATUS: Readonly<Record<TransactionStatus, EventName>> = {
	Pending: "transaction.created",
	Processing: "transaction.processing",
	Completed: "transaction.completed",
	Failed: "transaction.failed",
};

/** The event that announces a transaction reaching `status`. */
export const transactionEventName = (status: TransactionStatus): EventName => EVENT_BY_STATUS[status];

/** Stable per (transaction, status): a re-published state change carries the same id, so consumers dedupe. */
export const transactionEventId = (transactionId: string, status: TransactionStatus): string => eventIdFor("transaction-event", transactionId, status);

/** The transaction as transition() leaves it in the store once `record` is recorded (no read-back needed). */
export function afterMove(tx: TransactionEntity, record: HistoryRecord): TransactionEntity {
	const moved: TransactionEntity = {
		...tx,
		status: record.status,
		updatedAt: record.at,
		...(record.reason ? { reason: record.reason } : {}),
		history: [...tx.history, record],
		unpublished: (tx.unpublished ?? 0) + 1,
	};
	if (isFinal(record.status)) delete moved.leaseUntil;
	return moved;
}

/**
 * Moves a transaction from `from` to `to` if it is still in `from`: the
 * recorded move, or null when another writer moved it first. A move the
 * machine forbids throws IllegalMove and writes nothing.
 */
export async function transition(
	store: Store<TransactionEntity>,
	transactionId: string,
	from: TransactionStatus,
	to: TransactionStatus,
	reason?: string,
	at: string = new Date().toISOString(),
): Promise<HistoryRecord | null> {
	if (!canMove(from, to)) throw new IllegalMove(from, to);
	const record: HistoryRecord = { status: to, at, ...(reason ? { reason } : {}) };
	// A final move ends the lease: the sweeper's index then holds only what is in flight.
	const changed = await store.updateOne(
		{ _id: transactionId, status: from },
		{
			$set: { status: to, updatedAt: at, ...(reason ? { reason } : {}) },
			$push: { history: record },
			$inc: { unpublished: 1 },
			...(isFinal(to) ? { $unset: { leaseUntil: true } } : {}),
		},
	);
	return changed === 1 ? record : null;
}
