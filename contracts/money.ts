/** What crosses a service boundary about money: transactions, wallets and the ledger's facts. Amounts inside are integer minor units. */

export const TRANSACTION_TYPES = ["TopUp", "Transfer"] as const;
export type TransactionType = (typeof TRANSACTION_TYPES)[number];

export const TRANSACTION_STATUSES = ["Pending", "Processing", "Completed", "Failed"] as const;
export type TransactionStatus = (typeof TRANSACTION_STATUSES)[number];

/** The ways a wallet's balance moves (ledger entries, wallet events). */
export const MOVEMENT_DIRECTIONS = ["credit", "debit", "refund"] as const;
export type Direction = (typeof MOVEMENT_DIRECTIONS)[number];

/** A transaction on the wire: amounts in major units. */
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

/** One recorded state change of a transaction (GET /transactions/:id/history). */
export interface HistoryView {
	status: TransactionStatus;
	at: string;
	reason?: string;
}

/** What topup/transfer return to the gateway, which turns it into 200/201/202. */
export interface SubmitResult {
	transaction: TransactionView;
	replayed: boolean;
	final: boolean;
}

/** A wallet on the wire (GET /wallet/user). */
export interface WalletView {
	id: string;
	userId: string;
	/** Major units, for the wire only. */
	balance: number;
	currency: string;
	createdAt: string;
	updatedAt: string;
}

/** What wallet.credit / wallet.debit take: applied once per (transaction id, direction). */
export interface MovementRequest {
	userId: string;
	txId: string;
	amountMinor: number;
}

/** What wallet.credit / wallet.debit answer: a result, never an exception, for a business outcome. */
export interface MovementResult {
	outcome: "applied" | "already-applied" | "insufficient-funds";
	walletId: string;
	balanceMinor: number;
}

/** A transaction as the ledger's invariant check needs it (transactions.ledgerFacts). */
export interface TransactionFact {
	id: string;
	type: TransactionType;
	status: TransactionStatus;
	amountMinor: number;
	userId?: string;
	fromUserId?: string;
	toUserId?: string;
}

/** What the transactions service reports for the ledger invariants. */
export interface TransactionFacts {
	transactions: TransactionFact[];
	/** Pending/Processing transactions older than the sweeper's age. */
	stuck: { id: string; status: string; updatedAt: string }[];
}
