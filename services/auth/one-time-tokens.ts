/**
 * One-time tokens: email verification and password reset. Stored only as
 * hashes; each works once (a compare-and-set on usedAt lets exactly one
 * request through). A user has at most one live reset token: the user
 * document holds its hash (resetTokenId), so issuing another replaces it and
 * the new password clears it (users.ts setPasswordHash).
 *
 * A token is never spent without its effect. Its use is a claim (usedAt),
 * and the effect, done by the caller after consume(), shows on the user
 * document: the email verified, the reset token gone (in the same write as
 * the new password). A claim whose effect never showed (its process died in
 * between, or the write failed) lapses after USE_LEASE_MS, and the token
 * works again, once, for its holder.
 */
import { validationError } from "../../lib/errors";
import type { Store } from "../../mixins/db.mixin";
import { hashToken, randomToken } from "./tokens";
import type { UserEntity } from "./users";

export interface OneTimeTokenEntity {
	_id: string; // sha256 of the token
	purpose: "verify-email" | "password-reset";
	userId: string;
	expiresAt: number;
	usedAt: number | null;
}

export type TokenPurpose = OneTimeTokenEntity["purpose"];

/** A token in clear, for the email that carries it: never stored like this. */
export interface IssuedToken {
	token: string;
	/** Epoch milliseconds. */
	expiresAt: number;
}

/** How long a use holds a token: a use still unfinished after this is taken for dead. */
export const USE_LEASE_MS = 60_000;

const invalid = () => validationError([{ path: "token", message: "The token is invalid or has expired" }], "Invalid or expired token");

export class OneTimeTokens {
	/** The stores are read on use (see stores.ts). */
	constructor(private readonly db: { oneTimeTokens: Store<OneTimeTokenEntity>; users: Store<UserEntity> }) {}

	async create(userId: string, purpose: TokenPurpose, ttlSec: number): Promise<IssuedToken> {
		const token = randomToken();
		const expiresAt = Date.now() + ttlSec * 1000;
		await this.db.oneTimeTokens.insert({ _id: hashToken(token), purpose, userId, expiresAt, usedAt: null });
		return { token, expiresAt };
	}

	/** A reset token that becomes the user's one live reset token (any earlier one stops working). */
	async issueReset(userId: string, ttlSec: number): Promise<IssuedToken> {
		const reset = await this.create(userId, "password-reset", ttlSec);
		await this.db.users.updateOne({ _id: userId }, { $set: { resetTokenId: hashToken(reset.token) } });
		return reset;
	}

	/**
	 * Uses a token once; the user it was for. 400 "Invalid or expired token" for anything else.
	 * The caller then applies its effect (users.markEmailVerified, users.setPasswordHash): both are
	 * single-document writes, safe to repeat.
	 */
	async consume(token: string, purpose: TokenPurpose): Promise<string> {
		const id = hashToken(token);
		const now = Date.now();
		const row = await this.db.oneTimeTokens.findOne({ _id: id, purpose });
		if (!row || row.expiresAt <= now) throw invalid();
		if (row.usedAt !== null && (now - row.usedAt < USE_LEASE_MS || (await this.effectShown(row)))) throw invalid();
		// Only the user's latest reset token is live (and none once the new password is set).
		if (purpose === "password-reset" && !(await this.db.users.findOne({ _id: row.userId, resetTokenId: id }))) throw invalid();
		// A retryable write: its outcome is known even across a failover, and a lost claim lapses anyway.
		const won = await this.db.oneTimeTokens.updateOne({ _id: id, purpose, usedAt: row.usedAt }, { $set: { usedAt: now } });
		if (won !== 1) throw invalid();
		return row.userId;
	}

	/** Whether a used token's effect is on its user's document. */
	private async effectShown(row: OneTimeTokenEntity): Promise<boolean> {
		const user = await this.db.users.findOne({ _id: row.userId });
		if (!user) return true;
		return row.purpose === "verify-email" ? user.emailVerifiedAt !== null : user.resetTokenId !== row._id;
	}
}
