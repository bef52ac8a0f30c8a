/**
 * The ledger: how a wallet's balance changes, exactly once per movement,
 * with single-document conditional updates only (correct on NeDB and MongoDB
 * alike, no multi-document transactions).
 *
 * Every movement is a ledger entry with two unique keys:
 *   _id      = `<walletId>:<seq>`   the wallet's next sequence number
 *   movement = `<txId>:<direction>` (e.g. `tx1:debit`): applied once, ever
 * The wallet document holds `balanceMinor` and `version` = the last sequence
 * applied to it. Applying a movement:
 *   1. roll forward: an entry at `version + 1` that is logged but not yet
 *      applied is applied first (a crash between steps 3 and 4 heals here);
 *   2. a movement already in the ledger is a no-op (retries, duplicates);
 *   3. insert the entry at `version + 1` only if the balance stays >= 0; a
 *      unique-key clash means another writer won: re-read and go again;
 *   4. compare-and-set the wallet on `version`: `$inc` balance and version.
 * The sequence makes the balance after each entry well defined, so a balance
 * can never go below zero and can always be recomputed from the entries.
 * Most movements take a shortcut through these steps: steps 3 and 4 straight
 * on the wallet as read, since the insert at `version + 1` succeeds only if
 * that read is current and nothing is left to roll forward or already
 * recorded; any clash falls back to steps 1-4 (Ledger.apply).
 */
import type { Direction } from "../../contracts/money";
import { assertMinor } from "../../lib/money";
import { isDuplicateKeyError, type Store } from "../../mixins/db.mixin";

export interface WalletDoc {
	_id: string;
	userId: string;
	balanceMinor: number;
	version: number;
	currency: string;
	createdAt: string;
	updatedAt: string;
}

export interface LedgerEntry {
	_id: string; // walletId:seq
	walletId: string;
	seq: number;
	/** `<txId>:<direction>`, unique: the transaction and the direction, kept in this one field (Ledger.movementOf reads them back). */
	movement: string;
	deltaMinor: number; // signed
	balanceAfterMinor: number;
	at: string;
}

/** One movement's outcome (what wallet.credit/debit answer as MovementResult), with its entry when there is one. */
export type ApplyResult =
	| { outcome: "applied"; entry: LedgerEntry; balanceMinor: number }
	| { outcome: "already-applied"; entry: LedgerEntry; balanceMinor: number }
	| { outcome: "insufficient-funds"; balanceMinor: number };

export class WalletNotFound extends Error {}

const MAX_ATTEMPTS = 1000;

export class Ledger {
	constructor(
		private readonly wallets: Store<WalletDoc>,
		private readonly entries: Store<LedgerEntry>,
		private readonly now: () => Date = () => new Date(),
	) {}

	static movementKey(txId: string, direction: Direction): string {
		return `${txId}:${direction}`;
	}

	/** The transaction and the direction of an entry's movement (a txId may hold a colon; a direction never does). */
	static movementOf(entry: Pick<LedgerEntry, "movement">): { txId: string; direction: Direction } {
		const colon = entry.movement.lastIndexOf(":");
		return { txId: entry.movement.slice(0, colon), direction: entry.movement.slice(colon + 1) as Direction };
	}

	/**
	 * Applies a signed amount to a wallet once per (txId, direction). `known`
	 * is the wallet as the caller just read it, if it did.
	 *
	 * First the direct way: the entry at the read version's next seq, its
	 * balance from the read balance. Its insert succeeding proves the read was
	 * current: no entry held that seq, so the version was the read one, and
	 * with it the balance. A clash on either unique key (a concurrent writer,
	 * an entry logged but not applied, the movement already recorded), or a
	 * balance that would go below zero, takes the careful way, which settles
	 * the wallet first.
	 */
	async apply(walletId: string, txId: string, direction: Direction, deltaMinor: number, known?: WalletDoc): Promise<ApplyResult> {
		assertMinor(deltaMinor);
		if (deltaMinor === 0) throw new RangeError("A movement must move money");
		const movement = Ledger.movementKey(txId, direction);
		const wallet = known?._id === walletId ? known : await this.wallets.findOne({ _id: walletId });
		if (!wallet) throw new WalletNotFound(`No wallet ${walletId}`);
		const entry = this.entryAfter(wallet, movement, deltaMinor);
		if (entry.balanceAfterMinor >= 0 && (await this.logged(entry))) {
			await this.advance(wallet, entry);
			return { outcome: "applied", entry, balanceMinor: entry.balanceAfterMinor };
		}
		return this.applyCarefully(walletId, movement, deltaMinor);
	}

	/** The careful way: settle, look the movement up, then log and apply it, again while other writers win. */
	private async applyCarefully(walletId: string, movement: string, deltaMinor: number): Promise<ApplyResult> {
		for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
			const wallet = await this.settle(walletId);
			const existing = await this.entries.findOne({ movement });
			if (existing) {
				if (existing.walletId !== walletId || existing.deltaMinor !== deltaMinor) {
					throw new Error(`Movement ${movement} was recorded with another wallet or amount`);
				}
				// Logged by a writer that has not applied it yet: settle() will on the next pass.
				if (existing.seq > wallet.version) continue;
				return { outcome: "already-applied", entry: existing, balanceMinor: wallet.balanceMinor };
			}
			const entry = this.entryAfter(wallet, movement, deltaMinor);
			if (entry.balanceAfterMinor < 0) return { outcome: "insufficient-funds", balanceMinor: wallet.balanceMinor };
			// A clash: another writer took this seq or this movement.
			if (!(await this.logged(entry))) continue;
			await this.advance(wallet, entry);
			return { outcome: "applied", entry, balanceMinor: entry.balanceAfterMinor };
		}
		throw new Error(`Wallet ${walletId} too contended to apply ${movement}`);
	}

	/** The entry that would follow the wallet's version. */
	private entryAfter(wallet: WalletDoc, movement: string, deltaMinor: number): LedgerEntry {
		const seq = wallet.version + 1;
		return {
			_id: `${wallet._id}:${seq}`,
			walletId: wallet._id,
			seq,
			movement,
			deltaMinor,
			balanceAfterMinor: wallet.balanceMinor + deltaMinor,
			at: this.now().toISOString(),
		};
	}

	/** Logs an entry: false when one of its unique keys (seq, movement) is taken. */
	private async logged(entry: LedgerEntry): Promise<boolean> {
		try {
			await this.entries.insert(entry);
			return true;
		} catch (err) {
			if (isDuplicateKeyError(err)) return false;
			throw err;
		}
	}

	/** The wallet with every logged entry applied (heals a writer that died between insert and update); `known` saves the first read. */
	async settle(walletId: string, known?: WalletDoc): Promise<WalletDoc> {
		for (let read = known?._id === walletId ? known : null; ; read = null) {
			const wallet = read ?? (await this.wallets.findOne({ _id: walletId }));
			if (!wallet) throw new WalletNotFound(`No wallet ${walletId}`);
			const pending = await this.entries.findOne({ _id: `${walletId}:${wallet.version + 1}` });
			if (!pending) return wallet;
			await this.advance(wallet, pending);
		}
	}

	/** The one write to a balance: a compare-and-set on the wallet's version. */
	private async advance(wallet: WalletDoc, entry: LedgerEntry): Promise<boolean> {
		const changed = await this.wallets.updateOne(
			{ _id: wallet._id, version: entry.seq - 1 },
			{ $inc: { balanceMinor: entry.deltaMinor, version: 1 }, $set: { updatedAt: entry.at } },
		);
		return changed === 1;
	}
}
