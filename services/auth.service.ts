/**
 * auth: users, passwords (Argon2id), sessions (refresh-token families),
 * RS256 signing keys and the JWKS.
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
import { conflict, notFound, tooManyRequests, unauthorized, validationError } from "../lib/errors";
import { consumerContract, publish } from "../lib/events";
import { DbMixin, isDuplicateKeyError, type Store } from "../mixins/db.mixin";
import { seal, unseal } from "../lib/sealing";
import { nodeSecrets } from "../lib/secrets";
import { currentKey, generateKey, openSigningKey, publishedKeys, type SigningKey, type StoredKey } from "./auth/keys";
import Redis from "ioredis";
import { MemoryFailureThrottle, PasswordHasher, RedisFailureThrottle, type FailureThrottle } from "./auth/passwords";
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

interface SessionEntity {
	_id: string; // sha256 of the refresh token
	familyId: string;
	userId: string;
	createdAt: number;
	expiresAt: number;
	rotatedAt: number | null;
	revokedAt: number | null;
}

interface OneTimeTokenEntity {
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

/** How long an outbox event may wait before the relay sends it again (and how often the relay looks). */
const OUTBOX_RELAY_MS = 5000;

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

export default function createAuthService(config: Config): ServiceSchema {
	const auth = config.auth;
	const secrets = nodeSecrets(config);
	const hasher = new PasswordHasher(auth.argon2);
	let throttle: FailureThrottle;

	return {
		name: "auth",
		mixins: [
			DbMixin(config, "auth", { name: "users", indexes: [{ fields: { email: 1 }, unique: true }] }, [
				{ name: "sessions", indexes: [{ fields: { familyId: 1 } }, { fields: { userId: 1 } }] },
				{ name: "oneTimeTokens" },
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
				async handler(this: any, ctx: Context<any>) {
					const { firstName, middleName, lastName, email, password } = ctx.params;
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
					return { user: toPublicUser(user), session: await this.startSession(user._id) };
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
					const ipKey = `ip:${ctx.meta.clientIp ?? "unknown"}`;
					const accountKey = `account:${email}`;
					for (const [key, max] of [
						[ipKey, auth.loginMaxFailuresPerIp],
						[accountKey, auth.loginMaxFailuresPerAccount],
					] as const) {
						const decision = await throttle.check(key, max);
						if (decision.blocked) throw tooManyRequests(decision.retryAfterSec, "Too many failed logins, try again later");
					}
					const user: UserEntity | null = await this.adapter.findOne({ email });
					const ok = user ? await hasher.verify(user.passwordHash, password) : await hasher.verifyNobody(password);
					if (!user || !ok) {
						await Promise.all([throttle.fail(ipKey), throttle.fail(accountKey)]);
						throw unauthorized("Invalid email or password");
					}
					await throttle.clear(accountKey);
					return { user: toPublicUser(user), session: await this.startSession(user._id) };
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
				async handler(this: any, ctx: Context<{ email: string }>) {
					const user: UserEntity | null = await this.adapter.findOne({ email: ctx.params.email });
					if (user) {
						const reset = await this.createOneTimeToken(user._id, "password-reset", auth.passwordResetTtlSec);
						const record = this.outboxRecord("user.passwordResetRequested", {
							userId: user._id,
							email: user.email,
							firstName: user.firstName,
							resetToken: reset.token,
							resetExpiresAt: new Date(reset.expiresAt).toISOString(),
						});
						await this.adapter.updateMany({ _id: user._id }, { $push: { outbox: record }, $inc: { pendingEvents: 1 } });
						await this.publishFromOutbox(ctx, user._id, record);
					}
					// The same answer whether or not the account exists.
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
					const sessions: SessionEntity[] = await this.stores.sessions.find({ query: { userId, revokedAt: null } });
					await this.revokeFamilies(ctx, [...new Set(sessions.map(s => s.familyId))]);
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
				async handler(this: any, ctx: Context<{ limit?: number; offset?: number }>) {
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
				params: { $$strict: true, email: { type: "string", trim: true, min: 2, max: 254 } },
				async handler(this: any, ctx: Context<{ email: string }, { user: Caller }>) {
					const pattern = new RegExp(escapeRegExp(ctx.params.email.toLowerCase()), "i");
					const users: UserEntity[] = await this.adapter.find({
						query: { email: { $regex: pattern }, _id: { $ne: ctx.meta.user.id } },
						sort: ["email"],
						limit: 20,
					});
					return users.map(toPublicUser);
				},
			},

			getUser: {
				auth: "required",
				params: { $$strict: true, id: { type: "string", min: 1, max: 64 } },
				async handler(this: any, ctx: Context<{ id: string }>) {
					const user = await this.adapter.findOne({ _id: ctx.params.id });
					if (!user) throw notFound("User not found");
					return toPublicUser(user);
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

			async startSession(this: any, userId: string, familyId: string = crypto.randomUUID(), refreshToken = randomToken()): Promise<IssuedSession> {
				const now = Date.now();
				const refreshExpiresAt = now + auth.refreshTokenTtlSec * 1000;
				await this.stores.sessions.insert({
					_id: hashToken(refreshToken),
					familyId,
					userId,
					createdAt: now,
					expiresAt: refreshExpiresAt,
					rotatedAt: null,
					revokedAt: null,
				} satisfies SessionEntity);
				return this.issueAccess(userId, familyId, refreshToken, refreshExpiresAt);
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
				const user: UserEntity | null = await this.adapter.findOne({ _id: row.userId });
				if (!user) throw unauthorized("Session expired");
				const existing: SessionEntity | null = await this.stores.sessions.findOne({ _id: hashToken(successor) });
				if (existing) {
					if (existing.revokedAt) throw unauthorized("Session expired");
					return { user: toPublicUser(user), session: await this.issueAccess(user._id, row.familyId, successor, existing.expiresAt) };
				}
				try {
					return { user: toPublicUser(user), session: await this.startSession(user._id, row.familyId, successor) };
				} catch (err) {
					if (!isDuplicateKeyError(err)) throw err;
					// A racing request created the same successor first.
					return this.continueSession(row, successor);
				}
			},

			async revokeFamilies(this: any, emitter: { emit(name: string, payload: unknown): unknown }, familyIds: string[]) {
				if (familyIds.length === 0) return;
				const now = Date.now();
				const expiresAt = now + (auth.accessTokenTtlSec + 60) * 1000;
				for (const familyId of familyIds) {
					await this.stores.sessions.updateMany({ familyId, revokedAt: null }, { $set: { revokedAt: now } });
					await this.stores.revocations.removeMany({ _id: familyId });
					await this.stores.revocations.insert({ _id: familyId, expiresAt } satisfies RevocationEntity);
				}
				await publish(emitter, "auth.sessionsRevoked", { sids: familyIds, expiresAt });
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
				const won = await this.stores.oneTimeTokens.updateMany({ _id: id, purpose, usedAt: null }, { $set: { usedAt: Date.now() } });
				if (won !== 1) throw invalid();
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
			// Login failures are counted cluster-wide in Redis when there is one, else in this process.
			this.redis = config.redisUrl ? new Redis(config.redisUrl, { maxRetriesPerRequest: 2, lazyConnect: true }) : undefined;
			throttle = this.redis ? new RedisFailureThrottle(this.redis, auth.loginWindowSec) : new MemoryFailureThrottle(auth.loginWindowSec);
		},

		async started(this: any) {
			if (secrets.generatedFile) {
				this.logger.warn({ file: secrets.generatedFile }, "AUTH_SECRET is not set: using the secret generated in DATA_DIR (every node of a cluster needs the same AUTH_SECRET)");
			}
			await this.redis?.connect();
			await this.ensureKeys();
			this.outboxTimer = setInterval(() => this.relayOutbox().catch((err: unknown) => this.logger.error({ err }, "outbox relay failed")), OUTBOX_RELAY_MS);
			this.outboxTimer.unref();
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
			await this.redis?.quit();
		},
	} as ServiceSchema;
}
