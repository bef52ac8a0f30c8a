/**
 * One-time tokens: email verification and password reset. Stored only as
 * hashes; each works once (a compare-and-set on usedAt lets exactly one
 * request through). A user has at most one live reset token: the user
 * document holds its hash (resetTokenId), so issuing another replaces it and
 * using it clears it.
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
		await this.db.users.updateMany({ _id: userId }, { $set: { resetTokenId: hashToken(reset.token) } });
		return reset;
	}

	/** Uses a token once; the user it was for. 400 "Invalid or expired token" for anything else. */
	async consume(token: string, purpose: TokenPurpose): Promise<string> {
		const id = hashToken(token);
		const row = await this.db.oneTimeTokens.findOne({ _id: id, purpose });
		if (!row || row.usedAt !== null || row.expiresAt <= Date.now()) throw invalid();
		// Only the user's latest reset token is live.
		if (purpose === "password-reset" && !(await this.db.users.findOne({ _id: row.userId, resetTokenId: id }))) throw invalid();
		const won = await this.db.oneTimeTokens.updateMany({ _id: id, purpose, usedAt: null }, { $set: { usedAt: Date.now() } });
		if (won !== 1) throw invalid();
		if (purpose === "password-reset") await this.db.users.updateMany({ _id: row.userId, resetTokenId: id }, { $unset: { resetTokenId: true } });
		return row.userId;
	}
}
