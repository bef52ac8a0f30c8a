/**
 * wallet: wallets and the ledger. The only writer of balances; balances are
 * integer minor units, changed only by the ledger's compare-and-set
 * (services/wallet/ledger.ts).
 *
 * Emits:    wallet.created, wallet.credited, wallet.debited
 * Consumes: user.signedUp (creates the wallet; a duplicate event creates nothing)
 *
 * Events are published and checked against their contracts in lib/events.ts.
 */
import crypto from "node:crypto";
import type { Context, ServiceSchema } from "moleculer";
import type { Config } from "../lib/config";
import { consumerContract, publish } from "../lib/events";
import { toMajor } from "../lib/money";
import { DbMixin, isDuplicateKeyError } from "../mixins/db.mixin";
import type { Caller } from "../contracts";
import { Ledger, type ApplyResult, type Direction, type LedgerEntry, type WalletDoc } from "./wallet/ledger";
import { checkLedger, type InvariantReport, type TransactionFacts } from "./wallet/invariants";

export type WalletEntity = WalletDoc;

export interface WalletView {
	id: string;
	userId: string;
	balance: number; // major units, for the wire only
	currency: string;
	createdAt: string;
	updatedAt: string;
}

export const toWalletView = (wallet: WalletEntity): WalletView => ({
	id: wallet._id,
	userId: wallet.userId,
	balance: toMajor(wallet.balanceMinor),
	currency: wallet.currency,
	createdAt: wallet.createdAt,
	updatedAt: wallet.updatedAt,
});

/** What callers of credit/debit learn: a result, never an exception, for a business outcome. */
export interface MovementResult {
	outcome: ApplyResult["outcome"];
	walletId: string;
	balanceMinor: number;
}

const MOVEMENT_PARAMS = {
	$$strict: true,
	userId: { type: "string", min: 1, max: 64 },
	txId: { type: "string", min: 1, max: 100 },
	amountMinor: { type: "number", integer: true, positive: true },
} as const;

export default function createWalletService(config: Config): ServiceSchema {
	return {
		name: "wallet",
		mixins: [
			DbMixin(config, "wallet", { name: "wallets", indexes: [{ fields: { userId: 1 }, unique: true }] }, [
				{ name: "entries", indexes: [{ fields: { movement: 1 }, unique: true }, { fields: { walletId: 1 } }, { fields: { txId: 1 } }] },
			]),
		],

		actions: {
			/** GET /wallet/user: the caller's wallet, created now if the signup event has not arrived yet. */
			mine: {
				auth: "required",
				async handler(this: any, ctx: Context<unknown, { user: Caller }>) {
					const wallet = await this.ensureWallet(ctx, ctx.meta.user.id);
					return toWalletView(await this.ledger.settle(wallet._id));
				},
			},

			/** Adds money to a user's wallet, once per (txId, direction). Idempotent: safe to retry. */
			credit: {
				visibility: "public",
				params: { ...MOVEMENT_PARAMS, direction: { type: "enum", values: ["credit", "refund"], optional: true } },
				async handler(this: any, ctx: Context<{ userId: string; txId: string; amountMinor: number; direction?: Direction }>) {
					const { userId, txId, amountMinor, direction = "credit" } = ctx.params;
					return this.move(ctx, userId, txId, direction, amountMinor);
				},
			},

			/** Takes money from a user's wallet once per txId, never below zero. Idempotent: safe to retry. */
			debit: {
				visibility: "public",
				params: MOVEMENT_PARAMS,
				async handler(this: any, ctx: Context<{ userId: string; txId: string; amountMinor: number }>) {
					const { userId, txId, amountMinor } = ctx.params;
					return this.move(ctx, userId, txId, "debit", -amountMinor);
				},
			},

			/** A user's current balance, for request-time checks (not a guarantee: the debit decides). */
			balanceOf: {
				visibility: "public",
				params: { $$strict: true, userId: { type: "string", min: 1, max: 64 } },
				async handler(this: any, ctx: Context<{ userId: string }>) {
					const wallet: WalletEntity | null = await this.adapter.findOne({ userId: ctx.params.userId });
					return wallet ? (await this.ledger.settle(wallet._id)).balanceMinor : 0;
				},
			},

			/**
			 * The ledger invariants (operators: `call wallet.checkInvariants` in the REPL): money
			 * conserved, no negative balance, every movement applied once and matching its
			 * transaction, each balance equal to the sum of its entries, nothing stuck.
			 */
			checkInvariants: {
				visibility: "public",
				async handler(this: any, ctx: Context): Promise<InvariantReport> {
					const facts: TransactionFacts = await ctx.call("transactions.ledgerFacts", {});
					const wallets: WalletEntity[] = [];
					for (const wallet of await this.adapter.find({})) wallets.push(await this.ledger.settle(wallet._id));
					const entries: LedgerEntry[] = await this.stores.entries.find({});
					return checkLedger(wallets, entries, facts);
				},
			},

			health: {
				async handler(this: any) {
					await this.adapter.count({ query: { _id: "health-check" } });
					return { status: "ok", service: "wallet" };
				},
			},
		},

		events: {
			"user.signedUp": {
				params: consumerContract("user.signedUp", "userId"),
				async handler(this: any, ctx: Context<{ userId: string }>) {
					await this.ensureWallet(ctx, ctx.params.userId);
				},
			},
		},

		methods: {
			/** Idempotent: the unique index on userId makes a second insert a no-op, however the calls race. */
			async ensureWallet(this: any, ctx: Context, userId: string): Promise<WalletEntity> {
				const existing = await this.adapter.findOne({ userId });
				if (existing) return existing;
				const now = new Date().toISOString();
				const wallet: WalletEntity = {
					_id: crypto.randomUUID(),
					userId,
					balanceMinor: 0,
					version: 0,
					currency: config.currency,
					createdAt: now,
					updatedAt: now,
				};
				try {
					await this.adapter.insert(wallet);
				} catch (err) {
					if (!isDuplicateKeyError(err)) throw err;
					return this.adapter.findOne({ userId });
				}
				await publish(ctx, "wallet.created", { walletId: wallet._id, userId, currency: wallet.currency });
				return wallet;
			},

			async move(this: any, ctx: Context, userId: string, txId: string, direction: Direction, deltaMinor: number): Promise<MovementResult> {
				const wallet = await this.ensureWallet(ctx, userId);
				const result: ApplyResult = await this.ledger.apply(wallet._id, txId, direction, deltaMinor);
				if (result.outcome === "applied") {
					await publish(ctx, deltaMinor > 0 ? "wallet.credited" : "wallet.debited", {
						walletId: wallet._id,
						userId,
						transactionId: txId,
						direction,
						amountMinor: Math.abs(deltaMinor),
						balanceMinor: result.balanceMinor,
					});
				}
				return { outcome: result.outcome, walletId: wallet._id, balanceMinor: result.balanceMinor };
			},
		},

		started(this: any) {
			this.ledger = new Ledger(this.adapter, this.stores.entries);
		},
	} as ServiceSchema;
}
