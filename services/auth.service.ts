/**
 * auth: users, passwords (Argon2id), sessions (refresh-token families),
 * RS256 signing keys and the JWKS.
 *
 * Sessions: a login starts a family (its refresh tokens rotate within it);
 * revoking a family or all of a user's (logout, logout-all, reset, reuse,
 * an operator) always wins over a refresh racing it: every new refresh token
 * is written first, then its family and user are read again, and a family
 * revoked, past its absolute lifetime or older than the user's session epoch
 * takes the new token down with it.
 *
 * Emits:   user.signedUp, user.passwordResetRequested, user.emailVerified,
 *          auth.sessionsRevoked, auth.keysRotated
 * Consumes: auth.keysRotated (reload keys rotated on another node)
 *
 * The gateway verifies access tokens itself (JWKS); actions here receive the
 * verified caller as ctx.meta.user = { id, sid }.
 */
import crypto from "node:crypto";
import type { Context, ServiceSchema } from "moleculer";
import type { Config } from "../lib/config";
import { conflict, forbidden, notFound, unauthorized, validationError } from "../lib/errors";
import { consumerContract, publish } from "../lib/events";
import { createLimiter, takePoints } from "../lib/limits";
import { DbMixin, isDuplicateKeyError, type Store } from "../mixins/db.mixin";
import { seal, unseal } from "../lib/sealing";
import { nodeSecrets } from "../lib/secrets";
import { currentKey, generateKey, openSigningKey, publishedKeys, type SigningKey, type StoredKey } from "./auth/keys";
import Redis from "ioredis";
import { LoginGuard } from "./auth/login-guard";
import { PasswordHasher } from "./auth/passwords";
import { hashToken, randomToken, signAccessToken, successorToken } from "./auth/tokens";

export interface UserEntity {
	_id: string;
	firstName: string;
	middleName?: string;
	lastName: string;
	email: string;
	passwordHash: string;
	role: "user" | "admin";
	emailVerifiedAt: string | null;
	createdAt: string;
	updatedAt: string;
	/** Incremented by logout-all and password reset: families started under an older epoch are dead. */
	sessionEpoch?: number;
	/** The one live password-reset token (its hash): issuing another replaces it, using it clears it. */
	resetTokenId?: string;
	/** The outbox: events about this user not yet confirmed published (payload sealed: it carries tokens). */
	outbox?: OutboxRecord[];
	pendingEvents?: number;
}

interface OutboxRecord {
	eventId: string;
	occurredAt: string;
	name: "user.signedUp" | "user.passwordResetRequested";
	sealedPayload: string;
}

export interface PublicUser {
	id: string;
	firstName: string;
	middleName?: string;
	lastName: string;
	email: string;
	emailVerifiedAt: string | null;
	role: "user" | "admin";
	createdAt: string;
	updatedAt: string;
}

/** A session: one login and the refresh tokens that succeed each other from it. */
interface FamilyEntity {
	_id: string; // the family id: the access token's sid
	userId: string;
	/** The user's sessionEpoch when the family started. */
	epoch: number;
	createdAt: number;
	/** The absolute end of the session (SESSION_MAX_AGE_SEC after login), however often it is refreshed. */
	absoluteExpiresAt: number;
	revokedAt: number | null;
}

/** Another user as anyone signed in sees them: never the email. */
export interface PublicProfile {
	id: string;
	firstName: string;
	middleName?: string;
	lastName: string;
	createdAt: string;
}

/** A search result: enough to pick a recipient by email. */
export interface DirectoryEntry {
	id: string;
	firstName: string;
	middleName?: string;
	lastName: string;
	email: string;
}

interface SessionEntity {
	_id: string; // sha256 of the refresh token
	familyId: string;
	userId: string;
	createdAt: number;
	expiresAt: number;
	rotatedAt: number | null;
	revokedAt: number | null;
}

export interface OneTimeTokenEntity {
	_id: string; // sha256 of the token
	purpose: "verify-email" | "password-reset";
	userId: string;
	expiresAt: number;
	usedAt: number | null;
}

interface RevocationEntity {
	_id: string; // session (family) id
	expiresAt: number;
}

export interface IssuedSession {
	sessionId: string; // the refresh-token family, the access token's sid
	accessToken: string;
	accessExpiresAt: number; // epoch seconds
	refreshToken: string;
	refreshExpiresAt: number; // epoch seconds
}

export interface Caller {
	id: string;
	sid: string;
}

// Names: any printable text (people's names hold digits, punctuation, every script), but no control
// characters and no markup brackets.
const NAME_TEXT = /^[^\p{C}<>]*$/u;
const NAME = { type: "string", trim: true, min: 1, max: 100, pattern: NAME_TEXT } as const;
const MIDDLE_NAME = { type: "string", trim: true, max: 100, optional: true, pattern: NAME_TEXT } as const;
/**
 * The WHATWG "valid email address" (what browsers accept), with a dot in the
 * domain: ASCII only, so no account can look like another's through
 * homoglyphs or invisible characters (a Cyrillic "а", a zero-width space).
 */
const EMAIL_ADDRESS = /^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$/;
const EMAIL = {
	type: "string",
	trim: true,
	lowercase: true,
	max: 254,
	pattern: EMAIL_ADDRESS,
	messages: { stringPattern: "The '{field}' field must be a valid email address." },
} as const;
const PASSWORD = { type: "string", min: 8, max: 128 } as const;
const TOKEN = { type: "string", min: 10, max: 200, pattern: /^[A-Za-z0-9_-]+$/ } as const;

export function toPublicUser(user: UserEntity): PublicUser {
	return {
		id: user._id,
		firstName: user.firstName,
		...(user.middleName ? { middleName: user.middleName } : {}),
		lastName: user.lastName,
		email: user.email,
		emailVerifiedAt: user.emailVerifiedAt ?? null,
		role: user.role,
		createdAt: user.createdAt,
		updatedAt: user.updatedAt,
	};
}

const names = (user: UserEntity) => ({ firstName: user.firstName, ...(user.middleName ? { middleName: user.middleName } : {}), lastName: user.lastName });
export const toPublicProfile = (user: UserEntity): PublicProfile => ({ id: user._id, ...names(user), createdAt: user.createdAt });
export const toDirectoryEntry = (user: UserEntity): DirectoryEntry => ({ id: user._id, ...names(user), email: user.email });

/** How often expired sessions, one-time tokens and revocations are purged. */
const PURGE_INTERVAL_MS = 3_600_000;
const SEARCH_RESULTS = 10;

/** How long an outbox event may wait before the relay sends it again (and how often the relay looks). */
const OUTBOX_RELAY_MS = 5000;

export default function createAuthService(config: Config): ServiceSchema {
	const auth = config.auth;
	const secrets = nodeSecrets(config);
	const hasher = new PasswordHasher(auth.argon2);
	// Counted in Redis when REDIS_URL is set (shared by every auth node), else in this process: see created().
	let loginGuard: LoginGuard;
	let limiters: Record<"signupsPerIp" | "signupsPerEmail" | "resetsPerEmail" | "resetsPerIp" | "searchesPerUser", ReturnType<typeof createLimiter>>;

	return {
		name: "auth",
		mixins: [
			DbMixin(config, "auth", { name: "users", indexes: [{ fields: { email: 1 }, unique: true }] }, [
				{ name: "sessions", indexes: [{ fields: { familyId: 1 } }, { fields: { userId: 1 } }] },
				{ name: "families", indexes: [{ fields: { userId: 1 } }] },
				{ name: "oneTimeTokens", indexes: [{ fields: { userId: 1 } }] },
				{ name: "signingKeys" },
				{ name: "revocations" },
			]),
		],

		actions: {
			signup: {
				params: {
					$$strict: true,
					firstName: NAME,
					middleName: MIDDLE_NAME,
					lastName: NAME,
					email: EMAIL,
					password: PASSWORD,
					passwordConfirm: { type: "equal", field: "password", strict: true },
				},
				async handler(this: any, ctx: Context<any, { clientIp?: string }>) {
					const { firstName, middleName, lastName, email, password } = ctx.params;
					const tooMany = "Too many signups, try again later";
					await takePoints([[limiters.signupsPerIp, ctx.meta.clientIp ?? "unknown"]], tooMany);
					// A taken email answers 409 at once, costing no Argon2 work and no point of the email's own limit.
					if (await this.adapter.findOne({ email })) throw conflict("An account with this email already exists");
					await takePoints([[limiters.signupsPerEmail, email]], tooMany);
					const now = new Date().toISOString();
					const userId = crypto.randomUUID();
					const verification = await this.createOneTimeToken(userId, "verify-email", auth.verifyEmailTtlSec);
					// The welcome event is written with the user, in the same insert: it cannot be lost.
					const welcome = this.outboxRecord("user.signedUp", {
						userId,
						email,
						firstName,
						lastName,
						verificationToken: verification.token,
						verificationExpiresAt: new Date(verification.expiresAt).toISOString(),
					});
					const user: UserEntity = {
						_id: userId,
						firstName,
						...(middleName ? { middleName } : {}),
						lastName,
						email,
						passwordHash: await hasher.hash(password),
						role: "user",
						emailVerifiedAt: null,
						createdAt: now,
						updatedAt: now,
						outbox: [welcome],
						pendingEvents: 1,
					};
					try {
						await this.adapter.insert(user);
					} catch (err) {
						if (isDuplicateKeyError(err)) throw conflict("An account with this email already exists");
						throw err;
					}
					await this.publishFromOutbox(ctx, userId, welcome);
					this.logger.info({ userId: user._id }, "user signed up");
					return { user: toPublicUser(user), session: await this.startSession(user) };
				},
			},

			login: {
				params: {
					$$strict: true,
					email: { type: "string", trim: true, lowercase: true, min: 1, max: 254 },
					password: { type: "string", min: 1, max: 128 },
				},
				async handler(this: any, ctx: Context<any, any>) {
					const { email, password } = ctx.params;
					const ip = ctx.meta.clientIp ?? "unknown";
					await loginGuard.admit(email, ip); // counted before the check
					const user: UserEntity | null = await this.adapter.findOne({ email });
					const ok = user ? await hasher.verify(user.passwordHash, password) : await hasher.verifyNobody(password);
					if (!user || !ok) throw unauthorized("Invalid email or password");
					await loginGuard.succeeded(email, ip);
					return { user: toPublicUser(user), session: await this.startSession(user) };
				},
			},

			refresh: {
				params: { $$strict: true, refreshToken: { type: "string", min: 1, max: 200 } },
				async handler(this: any, ctx: Context<{ refreshToken: string }>) {
					return this.rotateRefreshToken(ctx.params.refreshToken);
				},
			},

			logout: {
				params: { $$strict: true, refreshToken: { type: "string", max: 200, optional: true } },
				async handler(this: any, ctx: Context<{ refreshToken?: string }, { user?: Caller }>) {
					const families = new Set<string>();
					if (ctx.meta.user?.sid) families.add(ctx.meta.user.sid);
					if (ctx.params.refreshToken) {
						const row: SessionEntity | null = await this.stores.sessions.findOne({ _id: hashToken(ctx.params.refreshToken) });
						if (row) families.add(row.familyId);
					}
					await this.revokeFamilies(ctx, [...families]);
					return null;
				},
			},

			/** Ends every session of the caller, on every device. */
			logoutAll: {
				auth: "required",
				params: { $$strict: true },
				async handler(this: any, ctx: Context<unknown, { user: Caller }>) {
					await this.revokeAllSessionsOf(ctx, ctx.meta.user.id);
					return null;
				},
			},

			/** Operator (REPL): ends every session of a user. */
			revokeSessionsOf: {
				visibility: "public",
				params: { userId: { type: "string", min: 1, max: 64 } },
				async handler(this: any, ctx: Context<{ userId: string }>) {
					return { revokedFamilies: await this.revokeAllSessionsOf(ctx, ctx.params.userId) };
				},
			},

			me: {
				async handler(this: any, ctx: Context<unknown, { user?: Caller }>) {
					if (!ctx.meta.user) return null;
					const user = await this.adapter.findOne({ _id: ctx.meta.user.id });
					return user ? toPublicUser(user) : null;
				},
			},

			verifyEmail: {
				params: { $$strict: true, token: TOKEN },
				async handler(this: any, ctx: Context<{ token: string }>) {
					const userId = await this.consumeOneTimeToken(ctx.params.token, "verify-email");
					const now = new Date().toISOString();
					await this.adapter.updateMany({ _id: userId, emailVerifiedAt: null }, { $set: { emailVerifiedAt: now, updatedAt: now } });
					const user: UserEntity = await this.adapter.findOne({ _id: userId });
					await publish(ctx, "user.emailVerified", { userId, email: user.email });
					return toPublicUser(user);
				},
			},

			forgotPassword: {
				params: { $$strict: true, email: EMAIL },
				async handler(this: any, ctx: Context<{ email: string }, { clientIp?: string }>) {
					await takePoints(
						[
							[limiters.resetsPerIp, ctx.meta.clientIp ?? "unknown"],
							[limiters.resetsPerEmail, ctx.params.email],
						],
						"Too many reset requests, try again later",
					);
					const user: UserEntity | null = await this.adapter.findOne({ email: ctx.params.email });
					// The same answer, in the same time, whether or not the account exists: the email
					// (written to the outbox after the answer) is what tells the owner.
					if (user) {
						setImmediate(() => this.issuePasswordReset(user).catch((err: unknown) => this.logger.error({ err, userId: user._id }, "password reset not issued")));
					}
					return { message: "If an account exists for this email, a reset link has been sent" };
				},
			},

			resetPassword: {
				params: {
					$$strict: true,
					token: TOKEN,
					password: PASSWORD,
					passwordConfirm: { type: "equal", field: "password", strict: true },
				},
				async handler(this: any, ctx: Context<{ token: string; password: string }>) {
					const userId = await this.consumeOneTimeToken(ctx.params.token, "password-reset");
					const now = new Date().toISOString();
					await this.adapter.updateMany({ _id: userId }, { $set: { passwordHash: await hasher.hash(ctx.params.password), updatedAt: now } });
					await this.revokeAllSessionsOf(ctx, userId);
					const user: UserEntity = await this.adapter.findOne({ _id: userId });
					return toPublicUser(user);
				},
			},

			listUsers: {
				auth: "required",
				params: {
					$$strict: true,
					limit: { type: "number", integer: true, min: 1, max: 100, convert: true, optional: true },
					offset: { type: "number", integer: true, min: 0, max: 1_000_000, convert: true, optional: true },
				},
				async handler(this: any, ctx: Context<{ limit?: number; offset?: number }, { user: Caller }>) {
					const caller: UserEntity | null = await this.adapter.findOne({ _id: ctx.meta.user.id });
					if (caller?.role !== "admin") throw forbidden("Only admins can list users");
					const users: UserEntity[] = await this.adapter.find({
						sort: ["createdAt", "_id"],
						limit: ctx.params.limit ?? 20,
						offset: ctx.params.offset ?? 0,
					});
					return users.map(toPublicUser);
				},
			},

			searchUsers: {
				auth: "required",
				params: { $$strict: true, email: { type: "string", trim: true, min: 3, max: 254 } },
				async handler(this: any, ctx: Context<{ email: string }, { user: Caller }>) {
					await takePoints([[limiters.searchesPerUser, ctx.meta.user.id]], "Too many searches, try again in a minute");
					// Emails are stored lower-cased: a range on the text is a literal, case-insensitive prefix match (no pattern).
					const prefix = ctx.params.email.toLowerCase();
					const users: UserEntity[] = await this.adapter.find({
						query: { email: { $gte: prefix, $lt: `${prefix}\uffff` }, _id: { $ne: ctx.meta.user.id } },
						sort: ["email"],
						limit: SEARCH_RESULTS,
					});
					return users.map(toDirectoryEntry);
				},
			},

			getUser: {
				auth: "required",
				params: { $$strict: true, id: { type: "string", min: 1, max: 64 } },
				async handler(this: any, ctx: Context<{ id: string }>) {
					const user = await this.adapter.findOne({ _id: ctx.params.id });
					if (!user) throw notFound("User not found");
					return toPublicProfile(user);
				},
			},

			/** Operator (REPL `user <email>`): a user by email address. */
			findByEmail: {
				visibility: "public",
				params: { email: { type: "string", min: 3, max: 254 } },
				async handler(this: any, ctx: Context<{ email: string }>) {
					const user: UserEntity | null = await this.adapter.findOne({ email: ctx.params.email.trim().toLowerCase() });
					if (!user) throw notFound("User not found");
					return toPublicUser(user);
				},
			},

			/** For other services: who to write to (notifications' receipts). */
			contactOf: {
				visibility: "public",
				params: { id: { type: "string", min: 1, max: 64 } },
				async handler(this: any, ctx: Context<{ id: string }>) {
					const user: UserEntity | null = await this.adapter.findOne({ _id: ctx.params.id });
					if (!user) throw notFound("User not found");
					return { id: user._id, email: user.email, firstName: user.firstName, lastName: user.lastName };
				},
			},

			/** For other services: does this user exist? (transfers check recipients). */
			exists: {
				visibility: "public",
				params: { id: { type: "string", min: 1, max: 64 } },
				async handler(this: any, ctx: Context<{ id: string }>) {
					return (await this.adapter.count({ query: { _id: ctx.params.id } })) === 1;
				},
			},

			updateMe: {
				auth: "required",
				params: {
					$$strict: true,
					firstName: { ...NAME, optional: true },
					middleName: MIDDLE_NAME,
					lastName: { ...NAME, optional: true },
				} as any,
				async handler(this: any, ctx: Context<Partial<Pick<UserEntity, "firstName" | "middleName" | "lastName">>, { user: Caller }>) {
					const { firstName, middleName, lastName } = ctx.params;
					if (firstName === undefined && middleName === undefined && lastName === undefined) {
						throw validationError([{ path: "", message: "Send at least one of firstName, middleName, lastName" }]);
					}
					const set: Record<string, string> = { updatedAt: new Date().toISOString() };
					const unset: Record<string, true> = {};
					if (firstName !== undefined) set.firstName = firstName;
					if (lastName !== undefined) set.lastName = lastName;
					if (middleName !== undefined) {
						if (middleName === "") unset.middleName = true;
						else set.middleName = middleName;
					}
					await this.adapter.updateMany(
						{ _id: ctx.meta.user.id },
						Object.keys(unset).length ? { $set: set, $unset: unset } : { $set: set },
					);
					const user = await this.adapter.findOne({ _id: ctx.meta.user.id });
					if (!user) throw notFound("User not found");
					return toPublicUser(user);
				},
			},

			jwks: {
				async handler(this: any, ctx: Context<unknown, any>) {
					ctx.meta.$responseHeaders = { "Cache-Control": "public, max-age=300" };
					return { keys: publishedKeys(await this.stores.signingKeys.find({})) };
				},
			},

			/** Active session revocations, for gateways that start after they were issued. */
			revocations: {
				visibility: "public",
				async handler(this: any) {
					const rows: RevocationEntity[] = await this.stores.revocations.find({ query: { expiresAt: { $gt: Date.now() } } });
					return rows.map(r => ({ sid: r._id, expiresAt: r.expiresAt }));
				},
			},

			/** Operator action (REPL): the next key starts signing, a new next key is published, the old one retires. */
			rotateKeys: {
				visibility: "public",
				async handler(this: any, ctx: Context) {
					return this.rotateSigningKeys(ctx);
				},
			},

			health: {
				async handler(this: any) {
					await this.adapter.count({ query: { _id: "health-check" } });
					return { status: "ok", service: "auth" };
				},
			},
		},

		events: {
			"auth.keysRotated": {
				params: consumerContract("auth.keysRotated", "currentKid"),
				async handler(this: any) {
					await this.loadKeys();
				},
			},
		},

		methods: {
			outboxRecord(this: any, name: OutboxRecord["name"], payload: object): OutboxRecord {
				return { eventId: crypto.randomUUID(), occurredAt: new Date().toISOString(), name, sealedPayload: seal(JSON.stringify(payload), secrets.current) };
			},

			/**
			 * Publishes an outbox event, then removes it from the user (compare-and-set
			 * on its presence). A failure leaves it for the relay; the caller goes on.
			 */
			async publishFromOutbox(this: any, emitter: { emit(name: string, payload: unknown): unknown }, userId: string, record: OutboxRecord): Promise<boolean> {
				try {
					await publish(emitter, record.name, JSON.parse(unseal(record.sealedPayload, secrets.unsealWith)), { eventId: record.eventId, occurredAt: record.occurredAt });
				} catch (err) {
					this.logger.warn({ err, userId, event: record.name }, "event not published yet; the outbox relay will retry");
					return false;
				}
				await this.adapter.updateMany({ _id: userId, "outbox.eventId": record.eventId }, { $pull: { outbox: { eventId: record.eventId } }, $inc: { pendingEvents: -1 } });
				return true;
			},

			/** The outbox relay: events left behind by a failed publish or a crash go out again (same event ids). */
			async relayOutbox(this: any): Promise<number> {
				const quietBefore = new Date(Date.now() - OUTBOX_RELAY_MS).toISOString();
				const users: UserEntity[] = await this.adapter.find({ query: { pendingEvents: { $gt: 0 } }, limit: 500 });
				let published = 0;
				for (const user of users) {
					for (const record of user.outbox ?? []) {
						if (record.occurredAt < quietBefore && (await this.publishFromOutbox(this.broker, user._id, record))) published++;
					}
				}
				if (published) this.logger.warn({ published }, "outbox relay published pending user events");
				return published;
			},

			/** A login: a new family under the user's current session epoch, and its first refresh token. */
			async startSession(this: any, user: UserEntity): Promise<IssuedSession> {
				const now = Date.now();
				const family: FamilyEntity = {
					_id: crypto.randomUUID(),
					userId: user._id,
					epoch: user.sessionEpoch ?? 0,
					createdAt: now,
					absoluteExpiresAt: now + auth.sessionMaxAgeSec * 1000,
					revokedAt: null,
				};
				await this.stores.families.insert(family);
				const refreshToken = randomToken();
				const expiresAt = await this.insertRefreshToken(family, refreshToken, now);
				await this.assertFamilyLive(family._id, user._id, hashToken(refreshToken));
				return this.issueAccess(user._id, family._id, refreshToken, expiresAt);
			},

			/** A refresh token row of the family; it expires with the token's TTL or the session's end, whichever comes first. */
			async insertRefreshToken(this: any, family: FamilyEntity, refreshToken: string, now = Date.now()): Promise<number> {
				const expiresAt = Math.min(now + auth.refreshTokenTtlSec * 1000, family.absoluteExpiresAt);
				await this.stores.sessions.insert({
					_id: hashToken(refreshToken),
					familyId: family._id,
					userId: family.userId,
					createdAt: now,
					expiresAt,
					rotatedAt: null,
					revokedAt: null,
				} satisfies SessionEntity);
				return expiresAt;
			},

			/**
			 * Read after a refresh token was written: a family revoked meanwhile,
			 * past its absolute end, or older than the user's session epoch takes
			 * the new token down with it. Revocations write the family (or the
			 * epoch) first, so whichever way a refresh and a revocation
			 * interleave, the refresh's token cannot outlive the revocation.
			 */
			async assertFamilyLive(this: any, familyId: string, userId: string, tokenId: string): Promise<void> {
				const now = Date.now();
				const [family, user]: [FamilyEntity | null, UserEntity | null] = await Promise.all([
					this.stores.families.findOne({ _id: familyId }),
					this.adapter.findOne({ _id: userId }),
				]);
				const live = !!family && !!user && family.revokedAt === null && family.absoluteExpiresAt > now && family.epoch === (user.sessionEpoch ?? 0);
				if (live) return;
				await this.stores.sessions.updateMany({ _id: tokenId, revokedAt: null }, { $set: { revokedAt: now } });
				if (family && family.revokedAt === null) await this.revokeFamilies(this.broker, [familyId]);
				throw unauthorized("Session expired");
			},

			async issueAccess(this: any, userId: string, familyId: string, refreshToken: string, refreshExpiresAtMs: number): Promise<IssuedSession> {
				const access = await signAccessToken(this.signingKey as SigningKey, { userId, sessionId: familyId }, { ...auth, ttlSec: auth.accessTokenTtlSec });
				return {
					sessionId: familyId,
					accessToken: access.token,
					accessExpiresAt: access.expiresAt,
					refreshToken,
					refreshExpiresAt: Math.floor(refreshExpiresAtMs / 1000),
				};
			},

			/**
			 * Rotation with reuse detection. The first use of a refresh token
			 * marks it rotated (compare-and-set) and creates its successor;
			 * uses within the grace period get the same successor; a later use
			 * is reuse and revokes the whole family.
			 */
			async rotateRefreshToken(this: any, refreshToken: string) {
				const now = Date.now();
				const id = hashToken(refreshToken);
				let row: SessionEntity | null = await this.stores.sessions.findOne({ _id: id });
				if (!row || row.revokedAt || row.expiresAt <= now) throw unauthorized("Session expired");
				const successor = successorToken(refreshToken, secrets.current);
				if (row.rotatedAt === null) {
					const won = await this.stores.sessions.updateMany({ _id: id, rotatedAt: null }, { $set: { rotatedAt: now } });
					if (won === 1) return this.continueSession(row, successor);
					row = await this.stores.sessions.findOne({ _id: id });
				}
				if (row && row.rotatedAt !== null && now - row.rotatedAt <= auth.refreshGraceSec * 1000) {
					return this.continueSession(row, successor);
				}
				this.logger.warn({ userId: row?.userId, familyId: row?.familyId }, "refresh token reused: revoking its family");
				if (row) await this.revokeFamilies(this.broker, [row.familyId]);
				throw unauthorized("Session expired");
			},

			async continueSession(this: any, row: SessionEntity, successor: string) {
				const [user, family]: [UserEntity | null, FamilyEntity | null] = await Promise.all([
					this.adapter.findOne({ _id: row.userId }),
					this.stores.families.findOne({ _id: row.familyId }),
				]);
				// Sessions from before families existed have none: they log in again.
				if (!user || !family) throw unauthorized("Session expired");
				const successorId = hashToken(successor);
				const existing: SessionEntity | null = await this.stores.sessions.findOne({ _id: successorId });
				let expiresAt = existing?.expiresAt;
				if (existing?.revokedAt) throw unauthorized("Session expired");
				if (!existing) {
					try {
						expiresAt = await this.insertRefreshToken(family, successor);
					} catch (err) {
						if (!isDuplicateKeyError(err)) throw err;
						// A racing request created the same successor first.
						return this.continueSession(row, successor);
					}
				}
				await this.assertFamilyLive(family._id, user._id, successorId);
				return { user: toPublicUser(user), session: await this.issueAccess(user._id, family._id, successor, expiresAt) };
			},

			/** Revokes session families: the family records first (what a racing refresh reads), then their tokens; gateways are told. */
			async revokeFamilies(this: any, emitter: { emit(name: string, payload: unknown): unknown }, familyIds: string[]) {
				if (familyIds.length === 0) return;
				const now = Date.now();
				const expiresAt = now + (auth.accessTokenTtlSec + 60) * 1000;
				for (const familyId of familyIds) {
					await this.stores.families.updateMany({ _id: familyId, revokedAt: null }, { $set: { revokedAt: now } });
					await this.stores.sessions.updateMany({ familyId, revokedAt: null }, { $set: { revokedAt: now } });
					await this.stores.revocations.removeMany({ _id: familyId });
					await this.stores.revocations.insert({ _id: familyId, expiresAt } satisfies RevocationEntity);
				}
				await publish(emitter, "auth.sessionsRevoked", { sids: familyIds, expiresAt });
			},

			/**
			 * Every session of a user (logout-all, password reset, an operator):
			 * the epoch moves first, so a login or refresh racing this cannot
			 * keep a family; then the families known now are revoked and announced.
			 */
			async revokeAllSessionsOf(this: any, emitter: { emit(name: string, payload: unknown): unknown }, userId: string): Promise<number> {
				await this.adapter.updateMany({ _id: userId }, { $inc: { sessionEpoch: 1 } });
				const families: FamilyEntity[] = await this.stores.families.find({ query: { userId, revokedAt: null } });
				await this.revokeFamilies(emitter, families.map(f => f._id));
				return families.length;
			},

			/** A reset token for the user, written to the outbox with its email; it replaces any other (the user holds the live one). */
			async issuePasswordReset(this: any, user: UserEntity): Promise<void> {
				const reset = await this.createOneTimeToken(user._id, "password-reset", auth.passwordResetTtlSec);
				await this.adapter.updateMany({ _id: user._id }, { $set: { resetTokenId: hashToken(reset.token) } });
				const record = this.outboxRecord("user.passwordResetRequested", {
					userId: user._id,
					email: user.email,
					firstName: user.firstName,
					resetToken: reset.token,
					resetExpiresAt: new Date(reset.expiresAt).toISOString(),
				});
				await this.adapter.updateMany({ _id: user._id }, { $push: { outbox: record }, $inc: { pendingEvents: 1 } });
				await this.publishFromOutbox(this.broker, user._id, record);
			},

			/** Expired one-time tokens, refresh tokens, families and revocations go. */
			async purgeExpired(this: any): Promise<Record<string, number>> {
				const now = Date.now();
				return {
					oneTimeTokens: await this.stores.oneTimeTokens.removeMany({ expiresAt: { $lt: now } }),
					sessions: await this.stores.sessions.removeMany({ expiresAt: { $lt: now } }),
					families: await this.stores.families.removeMany({ absoluteExpiresAt: { $lt: now } }),
					revocations: await this.stores.revocations.removeMany({ expiresAt: { $lt: now } }),
				};
			},

			async createOneTimeToken(this: any, userId: string, purpose: OneTimeTokenEntity["purpose"], ttlSec: number) {
				const token = randomToken();
				const expiresAt = Date.now() + ttlSec * 1000;
				await this.stores.oneTimeTokens.insert({ _id: hashToken(token), purpose, userId, expiresAt, usedAt: null } satisfies OneTimeTokenEntity);
				return { token, expiresAt };
			},

			/** Single use: the compare-and-set on usedAt lets exactly one request through. */
			async consumeOneTimeToken(this: any, token: string, purpose: OneTimeTokenEntity["purpose"]): Promise<string> {
				const id = hashToken(token);
				const invalid = () => validationError([{ path: "token", message: "The token is invalid or has expired" }], "Invalid or expired token");
				const row: OneTimeTokenEntity | null = await this.stores.oneTimeTokens.findOne({ _id: id, purpose });
				if (!row || row.usedAt !== null || row.expiresAt <= Date.now()) throw invalid();
				// Only the user's latest reset token is live.
				if (purpose === "password-reset" && !(await this.adapter.findOne({ _id: row.userId, resetTokenId: id }))) throw invalid();
				const won = await this.stores.oneTimeTokens.updateMany({ _id: id, purpose, usedAt: null }, { $set: { usedAt: Date.now() } });
				if (won !== 1) throw invalid();
				if (purpose === "password-reset") await this.adapter.updateMany({ _id: row.userId, resetTokenId: id }, { $unset: { resetTokenId: true } });
				return row.userId;
			},

			/**
			 * Rotation is a compare-and-set on the next key's state, so nodes
			 * (or a schedule and an operator) rotating at once cannot leave two
			 * signing keys: the loser of the race reloads and reports the winner's key.
			 */
			async rotateSigningKeys(this: any, emitter: { emit(name: string, payload: unknown): unknown }, onlyIfCurrentIs?: string) {
				const store: Store<StoredKey> = this.stores.signingKeys;
				const fresh = await generateKey(auth.keyBits, secrets.current); // slow: before the critical step
				const now = Date.now();
				const keys = await store.find({ sort: ["createdAt"] });
				const previous = currentKey(keys);
				// A scheduled rotation whose key was already rotated by someone else is done.
				const stillDue = onlyIfCurrentIs === undefined || previous?._id === onlyIfCurrentIs;
				const next = stillDue ? keys.find(k => k.state === "next") : undefined;
				const won = next ? await store.updateMany({ _id: next._id, state: "next" }, { $set: { state: "current", activatedAt: now } }) : 0;
				if (next && won === 1) {
					await store.updateMany(
						{ state: "current", _id: { $ne: next._id } },
						{ $set: { state: "retired", expiresAt: now + (auth.accessTokenTtlSec + 60) * 1000 } },
					);
					await store.insert(fresh);
					await store.removeMany({ state: "retired", expiresAt: { $lte: now } });
				}
				await this.loadKeys();
				if (won === 1) {
					this.logger.info({ currentKid: this.signingKey.kid, retiredKid: previous?._id }, "signing keys rotated");
					await publish(emitter, "auth.keysRotated", { retiredKid: previous?._id ?? null, currentKid: this.signingKey.kid });
				}
				return { rotated: won === 1, currentKid: this.signingKey.kid, published: publishedKeys(await store.find({})).map(k => k.kid) };
			},

			/** KEY_ROTATION_DAYS > 0: rotate when the signing key is that old (checked hourly; safe on several nodes). */
			async rotateIfDue(this: any) {
				const current = currentKey(await this.stores.signingKeys.find({}));
				if (current && Date.now() - (current.activatedAt ?? Date.now()) >= auth.keyRotationDays * 86_400_000) {
					await this.rotateSigningKeys(this.broker, current._id);
				}
			},

			/** Makes sure a current and a next key exist, then loads the signing key. */
			async ensureKeys(this: any) {
				const store: Store<StoredKey> = this.stores.signingKeys;
				let keys = await store.find({});
				if (!currentKey(keys)) {
					const key = await generateKey(auth.keyBits, secrets.current);
					await store.insert({ ...key, state: "current", activatedAt: Date.now() });
				}
				keys = await store.find({});
				if (!keys.some(k => k.state === "next")) await store.insert(await generateKey(auth.keyBits, secrets.current));
				await this.loadKeys();
			},

			async loadKeys(this: any) {
				const keys: StoredKey[] = await this.stores.signingKeys.find({});
				const current = currentKey(keys);
				if (!current) throw new Error("No current signing key");
				this.signingKey = openSigningKey(current, secrets.unsealWith);
			},
		},

		created(this: any) {
			// Limits are counted cluster-wide in Redis when there is one, else in this process.
			this.redis = config.redisUrl ? new Redis(config.redisUrl, { maxRetriesPerRequest: 2, lazyConnect: true }) : undefined;
			loginGuard = new LoginGuard({ maxPerPair: auth.loginMaxFailuresPerAccount, maxPerIp: auth.loginMaxFailuresPerIp, windowSec: auth.loginWindowSec }, this.redis);
			const hourly = (name: keyof typeof auth.limits) => createLimiter({ name, points: auth.limits[name], durationSec: 3600 }, this.redis);
			limiters = {
				signupsPerIp: hourly("signupsPerIp"),
				signupsPerEmail: hourly("signupsPerEmail"),
				resetsPerEmail: hourly("resetsPerEmail"),
				resetsPerIp: hourly("resetsPerIp"),
				searchesPerUser: createLimiter({ name: "searchesPerUser", points: auth.limits.searchesPerUser, durationSec: 60 }, this.redis),
			};
		},

		async started(this: any) {
			if (secrets.generatedFile) {
				this.logger.warn({ file: secrets.generatedFile }, "AUTH_SECRET is not set: using the secret generated in DATA_DIR (every node of a cluster needs the same AUTH_SECRET)");
			}
			await this.redis?.connect();
			await this.ensureKeys();
			this.outboxTimer = setInterval(() => this.relayOutbox().catch((err: unknown) => this.logger.error({ err }, "outbox relay failed")), OUTBOX_RELAY_MS);
			this.outboxTimer.unref();
			const purge = () => this.purgeExpired().catch((err: unknown) => this.logger.error({ err }, "purging expired records failed"));
			void purge();
			this.purgeTimer = setInterval(purge, PURGE_INTERVAL_MS);
			this.purgeTimer.unref();
			if (auth.keyRotationDays > 0) {
				this.rotationTimer = setInterval(
					() => this.rotateIfDue().catch((err: unknown) => this.logger.error({ err }, "scheduled key rotation failed")),
					3_600_000,
				);
				this.rotationTimer.unref();
			}
		},

		async stopped(this: any) {
			clearInterval(this.rotationTimer);
			clearInterval(this.outboxTimer);
			clearInterval(this.purgeTimer);
			await this.redis?.quit();
		},
	} as ServiceSchema;
}
