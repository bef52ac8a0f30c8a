/**
 * How a transaction is stored, and how it is shown: to its parties (the
 * wire, amounts in major units), to the ledger's invariant check and to
 * operators. The wire shapes are contracts (contracts/money.ts).
 */
import type { HistoryView, TransactionFacts, TransactionStatus, TransactionType, TransactionView } from "../../contracts/money";
import { toMajor } from "../../lib/money";
import type { CollectionSpec } from "../../mixins/db/store";
import { isFinal } from "./state-machine";

/** One recorded state change, stored in the transaction's `history` in this shape. */
export type HistoryRecord = HistoryView;

export interface TransactionEntity {
	_id: string;
	type: TransactionType;
	status: TransactionStatus;
	amountMinor: number;
	currency: string;
	userId?: string; // top-up
	fromUserId?: string; // transfer
	toUserId?: string; // transfer
	reason?: string;
	/**
	 * Only for a request with an Idempotency-Key: the key, and what a repeat of it is compared with
	 * (requestHashOf). A transaction without a key is never replayed, so it keeps neither (80 bytes
	 * of each transfer's document). Transactions of older versions may still hold both, and `requestedBy`.
	 */
	idempotencyKey?: string;
	requestHash?: string;
	/**
	 * Until when the process that holds the transaction drives it; then the sweeper may.
	 * Only while it is unfinished: the final move removes it, so its (sparse) index holds the
	 * few transactions in flight, not every transaction ever made.
	 */
	leaseUntil?: number;
	/**
	 * The outbox: state changes recorded in `history` whose events are not yet confirmed published;
	 * absent once they all are (a sparse index holds only what the relay may have to do).
	 */
	unpublished?: number;
	/** Who is a party (the top-up's user; the sender and the recipient): what a user's list is found by (a multikey index). */
	parties: string[];
	history: HistoryRecord[];
	createdAt: string;
	updatedAt: string;
}

/** What a request asks for, before it becomes a transaction, and who asks (the top-up's user or the transfer's sender: the key's scope). */
export type TransactionDraft = Pick<TransactionEntity, "type" | "amountMinor" | "userId" | "fromUserId" | "toUserId"> & { requestedBy: string };

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

export const toHistoryView = (record: HistoryRecord): HistoryView => ({
	status: record.status,
	at: record.at,
	...(record.reason ? { reason: record.reason } : {}),
});

/** The operator's view (REPL `tx <id>`): the wire view plus the recorded history, the lease and the outbox count. */
export const toInspectView = (tx: TransactionEntity) => ({
	...toTransactionView(tx),
	history: tx.history,
	leaseUntil: tx.leaseUntil === undefined ? null : new Date(tx.leaseUntil).toISOString(),
	unpublishedEvents: tx.unpublished ?? 0,
});

/** Every transaction's money facts, and the unfinished ones whose lease has run out (`now`, epoch ms). */
export const toTransactionFacts = (rows: TransactionEntity[], now: number): TransactionFacts => ({
	transactions: rows.map(t => ({
		id: t._id,
		type: t.type,
		status: t.status,
		amountMinor: t.amountMinor,
		userId: t.userId,
		fromUserId: t.fromUserId,
		toUserId: t.toUserId,
	})),
	// An unfinished transaction always has a lease; one without would be stuck for good (the sweeper finds its work by the lease).
	stuck: rows.filter(t => !isFinal(t.status) && (t.leaseUntil ?? 0) < now).map(t => ({ id: t._id, status: t.status, updatedAt: t.updatedAt })),
});

/** A party of a transaction: its top-up user, its sender or its recipient. */
export const isParty = (tx: TransactionEntity, userId: string): boolean => [tx.userId, tx.fromUserId, tx.toUserId].includes(userId);

/** The parties of a transaction to be: its top-up's user, or its sender and recipient. */
export const partiesOf = (draft: Pick<TransactionEntity, "userId" | "fromUserId" | "toUserId">): string[] =>
	[draft.userId, draft.fromUserId, draft.toUserId].filter((id): id is string => id !== undefined);

/**
 * The transactions collection. No index starts with status: NeDB re-indexes every index on each update, and a
 * status shared by most transactions makes that cost grow with them (NeDB indexes a compound index by its first
 * field alone). The sweeper finds its work by the lease, the relay by the outbox count, both sparse (present
 * only while there is work); a user's list by `parties`, newest first, filtered by type, status or both:
 * SQLite and MongoDB read a page of each from its index, however rare the filter's matches among the user's
 * transactions (by `parties` alone, a page of a user's one TopUp among 90,000 transfers read all of them on
 * SQLite: 1.5-2 s). SQLite also keeps each user's transactions counted by type and status, which a list's
 * `total` (partyQuery, filtered or not) sums: at most 8 rows, not a walk over the user's transactions
 * (95,000: 11.5 ms from the index keys; 1.7-2.2 s by type or status).
 */
export const TRANSACTIONS: CollectionSpec = {
	name: "transactions",
	indexes: [
		{ fields: { parties: 1, createdAt: -1, _id: -1 } },
		{ fields: { parties: 1, type: 1, createdAt: -1, _id: -1 } },
		{ fields: { parties: 1, status: 1, createdAt: -1, _id: -1 } },
		{ fields: { parties: 1, type: 1, status: 1, createdAt: -1, _id: -1 } },
		{ fields: { leaseUntil: 1 }, sparse: true },
		{ fields: { unpublished: 1 }, sparse: true },
	],
	counts: [["parties", "type", "status"]],
};

/**
 * The store query for a user's transactions (GET /transactions), optionally of one type and status: by
 * `parties`, one indexed field (an `$or` over the three roles uses no index on the embedded store).
 */
export function partyQuery(userId: string, filter: { type?: TransactionType; status?: TransactionStatus } = {}): Record<string, unknown> {
	const query: Record<string, unknown> = { parties: userId };
	if (filter.type) query.type = filter.type;
	if (filter.status) query.status = filter.status;
	return query;
}
