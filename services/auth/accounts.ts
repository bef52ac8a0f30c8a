/**
 * Account flows that touch several of auth's parts at once: signup (limits,
 * password hash, verification token, the welcome event in the outbox),
 * login (the guard counts before the check), email verification, the
 * password-reset pair, and profile changes.
 *
 * Every change others can see of a user is announced by user.updated
 * (broadcast: every auth node drops its cached views of the user, this one
 * before the change is answered).
 */
import crypto from "node:crypto";
import type { USER_CHANGES } from "../../contracts/events";
import type { AuthMetrics } from "../../lib/business-metrics";
import { conflict, unauthorized } from "../../lib/errors";
import { publish } from "../../lib/events";
import type { AuthLimits } from "./limits";
import type { OneTimeTokens } from "./one-time-tokens";
import type { PasswordHasher } from "./passwords";
import type { Sessions } from "./sessions";
import type { Emitter, Log } from "./support";
import type { UserOutbox } from "./user-outbox";
import { EMAIL_TAKEN, newUser, type NameChanges, type SignupFields, type UserEntity, type Users } from "./users";

/** Announces a change of what others see of a user (their cached views). */
export function userUpdated(emitter: Emitter, userId: string, change: (typeof USER_CHANGES)[number]): Promise<unknown> {
	return publish(emitter, "user.updated", { userId, change });
}

export interface AccountDeps {
	users: Users;
	tokens: OneTimeTokens;
	outbox: UserOutbox;
	sessions: Sessions;
	hasher: PasswordHasher;
	limits: AuthLimits;
	settings: { verifyEmailTtlSec: number; passwordResetTtlSec: number };
	/** Publishes what is issued after the request has been answered (the broker). */
	emitter: Emitter;
	log: Log;
	/** Counts signups and logins by result (lib/business-metrics.ts). */
	metrics?: Pick<AuthMetrics, "signedUp" | "loggedIn">;
}

export class Accounts {
	constructor(private readonly deps: AccountDeps) {}

	/** A new user and its welcome event (user.signedUp, through the outbox); 409 when the email is taken. */
	async signUp(emitter: Emitter, fields: SignupFields & { password: string }, clientIp: string): Promise<UserEntity> {
		const { users, tokens, outbox, hasher, limits, settings } = this.deps;
		const { email } = fields;
		await limits.signupFromIp(clientIp);
		// A taken email answers 409 at once, costing no Argon2 work and no point of the email's own limit.
		if (await users.byEmail(email)) throw conflict(EMAIL_TAKEN);
		await limits.signupForEmail(email);
		const userId = crypto.randomUUID();
		const verification = await tokens.create(userId, "verify-email", settings.verifyEmailTtlSec);
		// The welcome event is written with the user, in the same insert: it cannot be lost.
		const welcome = outbox.record("user.signedUp", {
			userId,
			email,
			firstName: fields.firstName,
			lastName: fields.lastName,
			verificationToken: verification.token,
			verificationExpiresAt: new Date(verification.expiresAt).toISOString(),
		});
		const user = newUser(userId, fields, await hasher.hash(fields.password), welcome);
		await users.insert(user);
		this.deps.metrics?.signedUp();
		await outbox.publish(emitter, userId, welcome);
		await userUpdated(emitter, userId, "signedUp");
		this.deps.log.info({ userId }, "user signed up");
		return user;
	}

	/** The user whose password this is; 401 "Invalid email or password" otherwise, for an unknown email in equal time. */
	async logIn(email: string, password: string, clientIp: string): Promise<UserEntity> {
		const { users, hasher, limits, metrics } = this.deps;
		try {
			await limits.login.admit(email, clientIp); // counted before the check
		} catch (err) {
			if ((err as { code?: unknown }).code === 429) metrics?.loggedIn("throttled");
			throw err;
		}
		const user = await users.byEmail(email);
		const ok = user ? await hasher.verify(user.passwordHash, password) : await hasher.verifyNobody(password);
		if (!user || !ok) {
			metrics?.loggedIn("failed");
			throw unauthorized("Invalid email or password");
		}
		await limits.login.succeeded(email, clientIp);
		metrics?.loggedIn("ok");
		return user;
	}

	/** Uses a verification token; emits user.emailVerified. */
	async verifyEmail(emitter: Emitter, token: string): Promise<UserEntity> {
		const userId = await this.deps.tokens.consume(token, "verify-email");
		const user = await this.deps.users.markEmailVerified(userId);
		await userUpdated(emitter, userId, "emailVerified");
		await publish(emitter, "user.emailVerified", { userId, email: user.email });
		return user;
	}

	/**
	 * The same answer, in the same time, whether or not the account exists:
	 * the email (written to the outbox after the answer) is what tells the owner.
	 */
	async forgotPassword(email: string, clientIp: string): Promise<void> {
		await this.deps.limits.resetRequest(clientIp, email);
		const user = await this.deps.users.byEmail(email);
		if (user) {
			setImmediate(() => this.issuePasswordReset(user).catch((err: unknown) => this.deps.log.error({ err, userId: user._id }, "password reset not issued")));
		}
	}

	/** A reset token for the user, written to the outbox with its email (user.passwordResetRequested); it replaces any other. */
	async issuePasswordReset(user: UserEntity): Promise<void> {
		const { tokens, outbox, settings, emitter } = this.deps;
		const reset = await tokens.issueReset(user._id, settings.passwordResetTtlSec);
		const record = outbox.record("user.passwordResetRequested", {
			userId: user._id,
			email: user.email,
			firstName: user.firstName,
			resetToken: reset.token,
			resetExpiresAt: new Date(reset.expiresAt).toISOString(),
		});
		await outbox.append(user._id, record);
		await outbox.publish(emitter, user._id, record);
	}

	/** Uses a reset token: the new password, and every session of the user ends. */
	async resetPassword(emitter: Emitter, token: string, password: string): Promise<UserEntity> {
		const { tokens, users, hasher, sessions } = this.deps;
		const userId = await tokens.consume(token, "password-reset");
		await users.setPasswordHash(userId, await hasher.hash(password));
		await userUpdated(emitter, userId, "password");
		await sessions.revokeAllOf(userId, emitter);
		return users.get(userId);
	}

	/** PUT /users/me: the new names, announced. */
	async updateNames(emitter: Emitter, userId: string, changes: NameChanges): Promise<UserEntity> {
		const user = await this.deps.users.updateNames(userId, changes);
		await userUpdated(emitter, userId, "profile");
		return user;
	}
}
