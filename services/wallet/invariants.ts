/**
 * The ledger invariants, as a pure function of what the wallet service owns
 * (wallets, entries) and what the transactions service reports. Meant for a
 * quiet system: a transaction in flight shows up as a violation until it ends.
 */
import type { TransactionFact, TransactionFacts } from "../../contracts/money";
import { type LedgerEntry, Ledger, type WalletDoc } from "./ledger";

export interface InvariantReport {
	ok: boolean;
	violations: string[];
	totals: { balancesMinor: number; completedTopUpsMinor: number; wallets: number; entries: number; transactions: number };
}

export function checkLedger(wallets: WalletDoc[], entries: LedgerEntry[], facts: TransactionFacts): InvariantReport {
	const violations: string[] = [];
	const userOfWallet = new Map(wallets.map(w => [w._id, w.userId]));
	const balancesMinor = wallets.reduce((sum, w) => sum + w.balanceMinor, 0);
	const completedTopUpsMinor = facts.transactions.filter(t => t.type === "TopUp" && t.status === "Completed").reduce((sum, t) => sum + t.amountMinor, 0);

	if (balancesMinor !== completedTopUpsMinor) {
		violations.push(`money not conserved: balances ${balancesMinor} != completed top-ups ${completedTopUpsMinor}`);
	}

	const entriesByWallet = groupBy(entries, e => e.walletId);
	for (const wallet of wallets) {
		if (wallet.balanceMinor < 0) violations.push(`wallet ${wallet._id} has a negative balance ${wallet.balanceMinor}`);
		const own = (entriesByWallet.get(wallet._id) ?? []).sort((a, b) => a.seq - b.seq);
		const sum = own.reduce((s, e) => s + e.deltaMinor, 0);
		if (sum !== wallet.balanceMinor) violations.push(`wallet ${wallet._id}: balance ${wallet.balanceMinor} != sum of entries ${sum}`);
		if (own.length !== wallet.version || own.some((e, i) => e.seq !== i + 1)) {
			violations.push(`wallet ${wallet._id}: version ${wallet.version} but entries ${own.map(e => e.seq).join(",")}`);
		}
	}

	const movements = entries.map(e => ({ ...Ledger.movementOf(e), entry: e }));
	const movementsByTx = groupBy(movements, m => m.txId);
	const known = new Set(facts.transactions.map(t => t.id));
	for (const txId of movementsByTx.keys()) if (!known.has(txId)) violations.push(`entries for unknown transaction ${txId}`);

	for (const tx of facts.transactions) {
		const moves = (movementsByTx.get(tx.id) ?? []).map(({ direction, entry }) => `${direction}:${userOfWallet.get(entry.walletId)}:${entry.deltaMinor}`).sort();
		const expected = expectedMoves(tx, moves);
		if (expected && !sameList(moves, expected)) {
			violations.push(`transaction ${tx.id} (${tx.type} ${tx.status}) moved [${moves.join(" ")}], expected [${expected.join(" ")}]`);
		}
	}

	for (const stuck of facts.stuck) violations.push(`transaction ${stuck.id} stuck in ${stuck.status} since ${stuck.updatedAt}`);

	return {
		ok: violations.length === 0,
		violations,
		totals: { balancesMinor, completedTopUpsMinor, wallets: wallets.length, entries: entries.length, transactions: facts.transactions.length },
	};
}

/** The movements a finished transaction must have left; undefined while it is in flight. */
function expectedMoves(tx: TransactionFact, actual: string[]): string[] | undefined {
	const a = tx.amountMinor;
	if (tx.type === "TopUp") {
		if (tx.status === "Completed") return [`credit:${tx.userId}:${a}`];
		if (tx.status === "Failed") return [];
		return undefined;
	}
	if (tx.status === "Completed") return [`credit:${tx.toUserId}:${a}`, `debit:${tx.fromUserId}:${-a}`].sort();
	if (tx.status === "Failed") {
		// Failed before the debit, or debited and refunded: never one without the other.
		const refunded = [`debit:${tx.fromUserId}:${-a}`, `refund:${tx.fromUserId}:${a}`].sort();
		return actual.length === 0 ? [] : refunded;
	}
	return undefined;
}

function groupBy<T>(items: T[], key: (item: T) => string): Map<string, T[]> {
	const groups = new Map<string, T[]>();
	for (const item of items) {
		const k = key(item);
		const list = groups.get(k);
		if (list) list.push(item);
		else groups.set(k, [item]);
	}
	return groups;
}

const sameList = (a: string[], b: string[]) => a.length === b.length && a.every((x, i) => x === b[i]);
