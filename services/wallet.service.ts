/**
 * wallet: wallets and the ledger. The only writer of balances; balances are
 * integer minor units, changed only by the ledger's compare-and-set
 * (services/wallet/ledger.ts), through services/wallet/wallets.ts.
 *
 * Actions:  mine (GET /wallet/user), credit, debit, balanceOf, checkInvariants, health
 * Emits:    wallet.created, wallet.credited, wallet.debited
 * Consumes: user.signedUp (creates the wallet; a duplicate event creates nothing);
 *           wallet.created, wallet.credited, wallet.debited on every node (cache cleaning)
 * Calls:    transactions.ledgerFacts (checkInvariants)
 * Cache:    mine, per user (scope wallet:<userId>); a movement invalidates its user's before it answers
 *
 * Events are published and checked against their contracts in lib/events.ts.
 */
import type { Context } from "moleculer";
import { WALLET_MINE_CACHE, type SignedInMeta } from "../contracts/gateway";
import type { EventPayload } from "../contracts/events";
import type { MovementResult, TransactionFacts, WalletView } from "../contracts/money";
import type { Config } from "../lib/config";
import { defineService } from "../lib/define-service";
import { consumerContract } from "../lib/events";
import { CacheCleaner, type CacheCleanerVars } from "../mixins/cache-cleaner.mixin";
import { DbMixin, type DbVars } from "../mixins/db.mixin";
import { HealthMixin } from "../mixins/health.mixin";
import type { InvariantReport } from "./wallet/invariants";
import type { LedgerEntry, WalletDoc } from "./wallet/ledger";
import { Wallets } from "./wallet/wallets";

/** wallet.credit / wallet.debit: a movement of a transaction, in minor units. */
interface MovementParams {
	userId: string;
	txId: string;
	amountMinor: number;
}

interface CreditParams extends MovementParams {
	/** "refund" gives a failed transfer's debit back (default "credit"). */
	direction?: "credit" | "refund";
}

const MOVEMENT_PARAMS = {
	$$strict: true,
	userId: { type: "string", min: 1, max: 64 },
	txId: { type: "string", min: 1, max: 100 },
	amountMinor: { type: "number", integer: true, positive: true },
} as const;

/** The part of user.signedUp the wallet relies on (checked on arrival). */
type SignedUp = Pick<EventPayload<"user.signedUp">, "eventId" | "occurredAt" | "userId">;

type WalletVars = DbVars<WalletDoc, { entries: LedgerEntry }> &
	CacheCleanerVars & {
		/** Set when the stores are connected (started). */
		wallets: Wallets;
	};

export default function createWalletService(config: Config) {
	return defineService<WalletVars>()({
		name: "wallet",
		mixins: [
			DbMixin(config, "wallet", { name: "wallets", indexes: [{ fields: { userId: 1 }, unique: true }] }, [
				{ name: "entries", indexes: [{ fields: { movement: 1 }, unique: true }, { fields: { walletId: 1 } }] },
			]),
			HealthMixin("wallet"),
			CacheCleaner({ "wallet.created": ["userId"], "wallet.credited": ["userId"], "wallet.debited": ["userId"] }),
		],

		actions: {
			/** GET /wallet/user: the caller's wallet, created now if the signup event has not arrived yet. */
			mine: {
				auth: "required",
				// A balance is never stale: strict (lib/cacher.ts). The gateway reads the same entries (contracts/gateway.ts).
				cache: WALLET_MINE_CACHE,
				handler(ctx: Context<unknown, SignedInMeta>): Promise<WalletView> {
					return this.wallets.view(ctx, ctx.meta.user.id);
				},
			},

			/** Adds money to a user's wallet, once per (txId, direction). Idempotent: safe to retry. */
			credit: {
				visibility: "public",
				params: { ...MOVEMENT_PARAMS, direction: { type: "enum", values: ["credit", "refund"], optional: true } },
				async handler(ctx: Context<CreditParams>): Promise<MovementResult> {
					const { userId, txId, amountMinor, direction = "credit" } = ctx.params;
					try {
						return await this.wallets.move(ctx, userId, txId, direction, amountMinor);
					} finally {
						// Whatever the outcome, even a failure half-way: a retry after a crash between a write and its event cleans what the crash left.
						await this.cleanCache([userId]);
					}
				},
			},

			/** Takes money from a user's wallet once per txId, never below zero. Idempotent: safe to retry. */
			debit: {
				visibility: "public",
				params: MOVEMENT_PARAMS,
				async handler(ctx: Context<MovementParams>): Promise<MovementResult> {
					const { userId, txId, amountMinor } = ctx.params;
					try {
						return await this.wallets.move(ctx, userId, txId, "debit", -amountMinor);
					} finally {
						await this.cleanCache([userId]);
					}
				},
			},

			/** A user's current balance in minor units, for request-time checks (not a guarantee: the debit decides). */
			balanceOf: {
				visibility: "public",
				params: { $$strict: true, userId: { type: "string", min: 1, max: 64 } },
				handler(ctx: Context<{ userId: string }>): Promise<number> {
					return this.wallets.balanceOf(ctx.params.userId);
				},
			},

			/**
			 * The ledger invariants (operators: `call wallet.checkInvariants` in the REPL): money
			 * conserved, no negative balance, every movement applied once and matching its
			 * transaction, each balance equal to the sum of its entries, nothing stuck.
			 */
			checkInvariants: {
				visibility: "public",
				async handler(ctx: Context): Promise<InvariantReport> {
					const facts = await ctx.call<TransactionFacts, object>("transactions.ledgerFacts", {});
					return this.wallets.checkInvariants(facts);
				},
			},
		},

		events: {
			"user.signedUp": {
				params: consumerContract("user.signedUp", "userId"),
				async handler(ctx: Context<SignedUp>) {
					await this.wallets.ensure(ctx, ctx.params.userId);
				},
			},
		},

		started() {
			this.wallets = new Wallets(this.adapter, this.stores.entries, config.currency);
		},
	});
}
