/**
 * What the wallet service does, without a broker: a user's wallet (created
 * once, however the signup event and requests race), movements of money
 * through the ledger with their events, balances, and the ledger invariants.
 * Events go out through lib/events' publish() on the emitter handed in (the
 * action's or event handler's context).
 */
import crypto from "node:crypto";
import type { Direction, MovementResult, TransactionFacts, WalletView } from "../../contracts/money";
import { publish } from "../../lib/events";
import { KeyedQueue } from "../../lib/keyed-queue";
import { toMajor } from "../../lib/money";
import { isDuplicateKeyError, type Store } from "../../mixins/db.mixin";
import { checkLedger, type InvariantReport } from "./invariants";
import { Ledger, type LedgerEntry, type WalletDoc } from "./ledger";

/** Where events are published: a Moleculer context. */
export type Emitter = Parameters<typeof publish>[0];

export const toWalletView = (wallet: WalletDoc): WalletView => ({
	id: wallet._id,
	userId: wallet.userId,
	balance: toMajor(wallet.balanceMinor),
	currency: wallet.currency,
	createdAt: wallet.createdAt,
	updatedAt: wallet.updatedAt,
});

export class Wallets {
	readonly ledger: Ledger;
	/** Each user's movements, one after another on this node (lib/keyed-queue.ts says why). */
	private readonly movements = new KeyedQueue();

	constructor(
		private readonly wallets: Store<WalletDoc>,
		private readonly entries: Store<LedgerEntry>,
		private readonly currency: string,
		private readonly now: () => Date = () => new Date(),
	) {
		this.ledger = new Ledger(wallets, entries, now);
	}

	/**
	 * The user's wallet, created now if it does not exist yet (announced by
	 * wallet.created). Idempotent: the unique index on userId makes a second
	 * insert a no-op, however the calls race.
	 */
	async ensure(events: Emitter, userId: string): Promise<WalletDoc> {
		const existing = await this.wallets.findOne({ userId });
		if (existing) return existing;
		const now = this.now().toISOString();
		const wallet: WalletDoc = {
			_id: crypto.randomUUID(),
			userId,
			balanceMinor: 0,
			version: 0,
			currency: this.currency,
			createdAt: now,
			updatedAt: now,
		};
		try {
			await this.wallets.insert(wallet);
		} catch (err) {
			if (!isDuplicateKeyError(err)) throw err;
			// Another call created it first; that one announces it.
			const winner = await this.wallets.findOne({ userId });
			if (!winner) throw err;
			return winner;
		}
		await publish(events, "wallet.created", { walletId: wallet._id, userId, currency: wallet.currency });
		return wallet;
	}

	/** The user's wallet as the wire shows it, every logged movement applied. */
	async view(events: Emitter, userId: string): Promise<WalletView> {
		const wallet = await this.ensure(events, userId);
		return toWalletView(await this.ledger.settle(wallet._id, wallet));
	}

	/**
	 * Moves a signed amount once per (txId, direction), never below zero, and
	 * announces it (wallet.credited / wallet.debited) when it was applied now.
	 * A user's movements on this node run one at a time (a user has one
	 * wallet), each reading the wallet once its turn has come: on this node
	 * that read is current, and the ledger's direct way holds.
	 */
	async move(events: Emitter, userId: string, txId: string, direction: Direction, deltaMinor: number): Promise<MovementResult> {
		const { wallet, result } = await this.movements.run(userId, async () => {
			const wallet = await this.ensure(events, userId);
			return { wallet, result: await this.ledger.apply(wallet._id, txId, direction, deltaMinor, wallet) };
		});
		if (result.outcome === "applied") {
			await publish(events, deltaMinor > 0 ? "wallet.credited" : "wallet.debited", {
				walletId: wallet._id,
				userId,
				transactionId: txId,
				direction,
				amountMinor: Math.abs(deltaMinor),
				balanceMinor: result.balanceMinor,
				// The ledger's sequence: a later movement of the wallet has a higher one, however the events are delivered.
				version: result.entry.seq,
			});
		}
		return { outcome: result.outcome, walletId: wallet._id, balanceMinor: result.balanceMinor };
	}

	/** A user's current balance in minor units; 0 without a wallet (none is created). */
	async balanceOf(userId: string): Promise<number> {
		const wallet = await this.wallets.findOne({ userId });
		return wallet ? (await this.ledger.settle(wallet._id, wallet)).balanceMinor : 0;
	}

	/** The ledger invariants over every wallet (settled first) and entry, against the transactions' facts. */
	async checkInvariants(facts: TransactionFacts): Promise<InvariantReport> {
		const wallets: WalletDoc[] = [];
		for (const wallet of await this.wallets.find({})) wallets.push(await this.ledger.settle(wallet._id, wallet));
		const entries = await this.entries.find({});
		return checkLedger(wallets, entries, facts);
	}
}
