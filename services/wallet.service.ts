/**
 * wallet: wallets and (from the money-movement issue on) the ledger. The only
 * writer of balances; balances are integer minor units.
 *
 * Emits:    wallet.created
 * Consumes: user.signedUp (creates the wallet; a duplicate event creates nothing)
 *
 * Event params are validated without `$$strict: "remove"`: in one process
 * every local handler shares the same payload object, and stripping fields
 * here would take them from the other consumers too.
 */
import crypto from "node:crypto";
import type { Context, ServiceSchema } from "moleculer";
import type { Config } from "../lib/config";
import { EVENT_ENVELOPE, newEvent } from "../lib/events";
import { toMajor } from "../lib/money";
import { DbMixin, isDuplicateKeyError } from "../mixins/db.mixin";
import type { Caller } from "./auth.service";

export interface WalletEntity {
	_id: string;
	userId: string;
	balanceMinor: number;
	currency: string;
	createdAt: string;
	updatedAt: string;
}

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

export default function createWalletService(config: Config): ServiceSchema {
	return {
		name: "wallet",
		mixins: [DbMixin(config, "wallet", { name: "wallets", indexes: [{ fields: { userId: 1 }, unique: true }] })],

		actions: {
			/** GET /wallet/user: the caller's wallet, created now if the signup event has not arrived yet. */
			mine: {
				auth: "required",
				async handler(this: any, ctx: Context<unknown, { user: Caller }>) {
					return toWalletView(await this.ensureWallet(ctx, ctx.meta.user.id));
				},
			},

			health: {
				handler() {
					return { status: "ok", service: "wallet" };
				},
			},
		},

		events: {
			"user.signedUp": {
				params: { ...EVENT_ENVELOPE, userId: { type: "uuid" } },
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
				await ctx.emit("wallet.created", newEvent({ walletId: wallet._id, userId, currency: wallet.currency }));
				return wallet;
			},
		},
	} as ServiceSchema;
}
