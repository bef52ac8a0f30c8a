/**
 * auth: users, passwords (Argon2id), sessions (refresh-token families),
 * RS256 signing keys and the JWKS. This file is the service's contract and
 * its wiring; the logic is in auth/ (accounts, users, sessions, one-time
 * tokens, signing keys, limits, the user outbox).
 *
 * Emits:    user.signedUp, user.passwordResetRequested (both through the user outbox),
 *           user.emailVerified, user.updated, auth.sessionsRevoked, auth.keysRotated
 * Consumes: auth.keysRotated (reload keys rotated on another node); user.updated on every node (cache cleaning)
 * Cache:    me, getUser, contactOf, exists, per user (scope auth:<userId>)
 * Timers:   the outbox relay, the hourly purge of expired records, the key-rotation
 *           schedule (KEY_ROTATION_DAYS > 0)
 *
 * The gateway verifies access tokens itself (JWKS); actions here receive the
 * verified caller as ctx.meta.user = { id, sid }.
 */
import type { Context } from "moleculer";
import type { CallMeta, SignedInMeta } from "../contracts/gateway";
import {
	USER_BY_ID_CACHE,
	type Contact,
	type DirectoryEntry,
	type IssuedSession,
	type PublicProfile,
	type PublicUser,
	type SessionResult,
} from "../contracts/users";
import type { CacheSettings } from "../lib/cacher";
import type { Config } from "../lib/config";
import { defineService } from "../lib/define-service";
import { forbidden } from "../lib/errors";
import { consumerContract } from "../lib/events";
import { nodeSecrets } from "../lib/secrets";
import { CacheCleaner } from "../mixins/cache-cleaner.mixin";
import { DbMixin } from "../mixins/db.mixin";
import { HealthMixin } from "../mixins/health.mixin";
import { EMAIL, MIDDLE_NAME, NAME, PASSWORD, PASSWORD_CONFIRM, TOKEN, USER_ID } from "./auth/fields";
import type { IssuedToken, TokenPurpose } from "./auth/one-time-tokens";
import { authJobs, type AuthVars } from "./auth/jobs";
import { authParts } from "./auth/parts";
import type { RotationResult } from "./auth/signing-keys";
import { EXTRA_COLLECTIONS, purgeExpired, USERS } from "./auth/stores";
import { toContact, toDirectoryEntry, toPublicProfile, toPublicUser, type NameChanges, type UserEntity } from "./auth/users";

const clientIp = (ctx: Context<unknown, CallMeta>) => ctx.meta.clientIp ?? "unknown";
/** The caller's own user is strict (read right after PUT /users/me); others' profiles and contacts may lag a node by an event. */
const OWN_USER: CacheSettings = { scope: "#user.id", ttl: 600, strict: true };

export default function createAuthService(config: Config) {
	const auth = config.auth;
	const secrets = nodeSecrets(config);

	return defineService<AuthVars>()({
		name: "auth",
		// The DB mixin last: its started() runs first (stopped() last), so the stores are open whenever a job runs.
		mixins: [
			HealthMixin("auth"),
			CacheCleaner({ "user.updated": ["userId"] }),
			...authJobs(auth.keyRotationDays),
			DbMixin(config, "auth", USERS, EXTRA_COLLECTIONS),
		],

		actions: {
			/** 409 if the email exists; logs the user in; emits user.signedUp. */
			signup: {
				params: {
					$$strict: true,
					firstName: NAME,
					middleName: MIDDLE_NAME,
					lastName: NAME,
					email: EMAIL,
					password: PASSWORD,
					passwordConfirm: PASSWORD_CONFIRM,
				},
				async handler(
					ctx: Context<{ firstName: string; middleName?: string; lastName: string; email: string; password: string }, CallMeta>,
				): Promise<SessionResult> {
					const user = await this.accounts.signUp(ctx, ctx.params, clientIp(ctx));
					return { user: toPublicUser(user), session: await this.sessions.start(user) };
				},
			},

			/** 401 "Invalid email or password" for a wrong password and an unknown email alike; 429 past the login guard. */
			login: {
				params: { $$strict: true, email: { type: "string", trim: true, lowercase: true, min: 1, max: 254 }, password: { type: "string", min: 1, max: 128 } },
				async handler(ctx: Context<{ email: string; password: string }, CallMeta>): Promise<SessionResult> {
					const user = await this.accounts.logIn(ctx.params.email, ctx.params.password, clientIp(ctx));
					return { user: toPublicUser(user), session: await this.sessions.start(user) };
				},
			},

			/** Rotates the refresh token; reuse after the grace period revokes the family (emits auth.sessionsRevoked). */
			refresh: {
				params: { $$strict: true, refreshToken: { type: "string", min: 1, max: 200 } },
				handler(ctx: Context<{ refreshToken: string }>): Promise<SessionResult> {
					return this.sessions.rotate(ctx.params.refreshToken);
				},
			},

			/** Revokes the caller's session and the refresh token's family, whatever refresh races it. */
			logout: {
				params: { $$strict: true, refreshToken: { type: "string", max: 200, optional: true } },
				async handler(ctx: Context<{ refreshToken?: string }, CallMeta>): Promise<null> {
					await this.sessions.logOut(ctx.meta.user?.sid, ctx.params.refreshToken, ctx);
					return null;
				},
			},

			/** Ends every session of the caller, on every device. */
			logoutAll: {
				auth: "required",
				params: { $$strict: true },
				async handler(ctx: Context<unknown, SignedInMeta>): Promise<null> {
					await this.sessions.revokeAllOf(ctx.meta.user.id, ctx);
					return null;
				},
			},

			/** Operator (REPL): ends every session of a user. */
			revokeSessionsOf: {
				visibility: "public",
				params: { userId: USER_ID },
				async handler(ctx: Context<{ userId: string }>): Promise<{ revokedFamilies: number }> {
					return { revokedFamilies: await this.sessions.revokeAllOf(ctx.params.userId, ctx) };
				},
			},

			/** The caller, or null without a valid session (the v1 client shows its login page on that). */
			me: {
				cache: OWN_USER,
				async handler(ctx: Context<unknown, CallMeta>): Promise<PublicUser | null> {
					const user = ctx.meta.user ? await this.users.byId(ctx.meta.user.id) : null;
					return user ? toPublicUser(user) : null;
				},
			},

			/** Emits user.emailVerified. */
			verifyEmail: {
				params: { $$strict: true, token: TOKEN },
				async handler(ctx: Context<{ token: string }>): Promise<PublicUser> {
					return toPublicUser(await this.accounts.verifyEmail(ctx, ctx.params.token));
				},
			},

			/** The same answer whether or not the account exists; the reset (user.passwordResetRequested) is issued after it. */
			forgotPassword: {
				params: { $$strict: true, email: EMAIL },
				async handler(ctx: Context<{ email: string }, CallMeta>): Promise<{ message: string }> {
					await this.accounts.forgotPassword(ctx.params.email, clientIp(ctx));
					return { message: "If an account exists for this email, a reset link has been sent" };
				},
			},

			/** Sets the password and revokes every session of the user. */
			resetPassword: {
				params: { $$strict: true, token: TOKEN, password: PASSWORD, passwordConfirm: PASSWORD_CONFIRM },
				async handler(ctx: Context<{ token: string; password: string }>): Promise<PublicUser> {
					return toPublicUser(await this.accounts.resetPassword(ctx, ctx.params.token, ctx.params.password));
				},
			},

			/** Admins only. */
			listUsers: {
				auth: "required",
				params: {
					$$strict: true,
					limit: { type: "number", integer: true, min: 1, max: 100, convert: true, optional: true },
					offset: { type: "number", integer: true, min: 0, max: 1_000_000, convert: true, optional: true },
				},
				async handler(ctx: Context<{ limit?: number; offset?: number }, SignedInMeta>): Promise<PublicUser[]> {
					const caller = await this.users.byId(ctx.meta.user.id);
					if (caller?.role !== "admin") throw forbidden("Only admins can list users");
					return (await this.users.list(ctx.params.limit ?? 20, ctx.params.offset ?? 0)).map(toPublicUser);
				},
			},

			/** Emails starting with the text (literal, case-insensitive), never the caller; limited per user. */
			searchUsers: {
				auth: "required",
				params: { $$strict: true, email: { type: "string", trim: true, min: 3, max: 254 } },
				async handler(ctx: Context<{ email: string }, SignedInMeta>): Promise<DirectoryEntry[]> {
					await this.limits.search(ctx.meta.user.id);
					return (await this.users.searchByEmailPrefix(ctx.params.email, ctx.meta.user.id)).map(toDirectoryEntry);
				},
			},

			/** Another user's profile: never the email. */
			getUser: {
				auth: "required",
				cache: USER_BY_ID_CACHE,
				params: { $$strict: true, id: USER_ID },
				async handler(ctx: Context<{ id: string }>): Promise<PublicProfile> {
					return toPublicProfile(await this.users.get(ctx.params.id));
				},
			},

			/** Operator (REPL `user <email>`): a user by email address. */
			findByEmail: {
				visibility: "public",
				params: { email: { type: "string", min: 3, max: 254 } },
				async handler(ctx: Context<{ email: string }>): Promise<PublicUser> {
					return toPublicUser(await this.users.getByEmail(ctx.params.email.trim().toLowerCase()));
				},
			},

			/** For other services: who to write to (notifications' receipts). */
			contactOf: {
				visibility: "public",
				cache: USER_BY_ID_CACHE,
				params: { id: USER_ID },
				async handler(ctx: Context<{ id: string }>): Promise<Contact> {
					return toContact(await this.users.get(ctx.params.id));
				},
			},

			/** For other services: does this user exist? (transfers check recipients). */
			exists: {
				visibility: "public",
				cache: USER_BY_ID_CACHE,
				params: { id: USER_ID },
				handler(ctx: Context<{ id: string }>): Promise<boolean> {
					return this.users.exists(ctx.params.id);
				},
			},

			updateMe: {
				auth: "required",
				params: { $$strict: true, firstName: { ...NAME, optional: true }, middleName: MIDDLE_NAME, lastName: { ...NAME, optional: true } },
				async handler(ctx: Context<NameChanges, SignedInMeta>): Promise<PublicUser> {
					return toPublicUser(await this.accounts.updateNames(ctx, ctx.meta.user.id, ctx.params));
				},
			},

			// Not cached: it changes with time (a retired key leaves it when its tokens expire, no write to invalidate on).
			jwks: {
				async handler(ctx: Context<unknown, { $responseHeaders?: Record<string, string> }>) {
					ctx.meta.$responseHeaders = { "Cache-Control": "public, max-age=300" };
					return { keys: await this.keys.published() };
				},
			},

			/** Active session revocations, for gateways that start after they were issued. */
			revocations: {
				visibility: "public",
				handler(): Promise<{ sid: string; expiresAt: number }[]> {
					return this.sessions.activeRevocations();
				},
			},

			/** Operator (REPL): the next key starts signing, a new next key is published, the old one retires; emits auth.keysRotated. */
			rotateKeys: {
				visibility: "public",
				handler(ctx: Context): Promise<RotationResult> {
					return this.keys.rotate(ctx);
				},
			},
		},

		events: {
			"auth.keysRotated": {
				params: consumerContract("auth.keysRotated", "currentKid"),
				async handler() {
					await this.keys.load();
				},
			},
		},

		// Internals the tests reach: thin delegations to auth/.
		methods: {
			startSession(user: UserEntity): Promise<IssuedSession> {
				return this.sessions.start(user);
			},
			createOneTimeToken(userId: string, purpose: TokenPurpose, ttlSec: number): Promise<IssuedToken> {
				return this.tokens.create(userId, purpose, ttlSec);
			},
			purgeExpired(): Promise<Record<string, number>> {
				return purgeExpired(this.db);
			},
			rotateIfDue(): Promise<void> {
				return this.keys.rotateIfDue(this.broker);
			},
		},

		created() {
			Object.assign(this, authParts(this, config, secrets));
			Object.defineProperty(this, "signingKey", { get: () => this.keys.current });
		},

		async started() {
			if (secrets.generatedFile) {
				this.logger.warn(
					{ file: secrets.generatedFile },
					"AUTH_SECRET is not set: using the secret generated in DATA_DIR (every node of a cluster needs the same AUTH_SECRET)",
				);
			}
			await this.limits.start();
			await this.keys.ensure();
			const moved = await this.outbox.adoptOlderCounts();
			if (moved > 0) this.logger.info({ users: moved }, "users with events left by an older Mint handed to the outbox relay");
		},

		async stopped() {
			await this.limits.stop();
		},
	});
}
