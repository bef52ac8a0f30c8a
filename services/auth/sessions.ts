/**
 * Sessions: a login starts a family (its refresh tokens rotate within it);
 * the family id is the access token's sid.
 *
 * Revoking a family or all of a user's (logout, logout-all, reset, reuse, an
 * operator) always wins over a refresh racing it: every new refresh token is
 * written first, then its family and user are read again, and a family
 * revoked, past its absolute lifetime or older than the user's session epoch
 * takes the new token down with it (assertFamilyLive). Revocations write the
 * family (or the epoch) first, so whichever way the two interleave, the
 * refresh's token cannot outlive the revocation.
 */
import crypto from "node:crypto";
import type { IssuedSession, RevokedSession, SessionResult } from "../../contracts/users";
import type { TokenAudience } from "../../lib/access-tokens";
import { unauthorized } from "../../lib/errors";
import { publish } from "../../lib/events";
import { isDuplicateKeyError, type Store } from "../../mixins/db.mixin";
import type { SigningKey } from "./keys";
import type { Emitter, Log } from "./support";
import { hashToken, randomToken, signAccessToken, successorToken } from "./tokens";
import { toPublicUser, type UserEntity } from "./users";

/** A session: one login and the refresh tokens that succeed each other from it. */
export interface FamilyEntity {
	_id: string; // the family id: the access token's sid
	userId: string;
	/** The user's sessionEpoch when the family started. */
	epoch: number;
	createdAt: number;
	/** The absolute end of the session (SESSION_MAX_AGE_SEC after login), however often it is refreshed. */
	absoluteExpiresAt: number;
	revokedAt: number | null;
}

/** One refresh token of a family. */
export interface SessionEntity {
	_id: string; // sha256 of the refresh token
	familyId: string;
	userId: string;
	createdAt: number;
	expiresAt: number;
	rotatedAt: number | null;
	revokedAt: number | null;
}

/** A revoked family, announced to gateways until its last access token has expired. */
export interface RevocationEntity {
	_id: string; // session (family) id
	expiresAt: number;
}

export interface SessionStores {
	users: Store<UserEntity>;
	families: Store<FamilyEntity>;
	sessions: Store<SessionEntity>;
	revocations: Store<RevocationEntity>;
}

export interface SessionSettings extends TokenAudience {
	accessTokenTtlSec: number;
	refreshTokenTtlSec: number;
	refreshGraceSec: number;
	sessionMaxAgeSec: number;
}

export interface SessionDeps {
	db: SessionStores;
	settings: SessionSettings;
	/** The key access tokens are signed with now. */
	signer: { readonly current: SigningKey };
	/** Derives refresh-token successors (AUTH_SECRET). */
	secret: string;
	/** Where revocations found by a refresh (reuse, a dead family) are announced. */
	emitter: Emitter;
	/**
	 * Hands a revocation to every gateway and waits for them (bounded), so a
	 * logout answers only once no gateway accepts the session any more.
	 * The broadcast event and the gateways' resync stay the fallback.
	 */
	tellGateways?(revoked: RevokedSession[]): Promise<void>;
	log: Log;
}

const expired = () => unauthorized("Session expired");

export class Sessions {
	constructor(private readonly deps: SessionDeps) {}

	private get db() {
		return this.deps.db;
	}

	private get settings() {
		return this.deps.settings;
	}

	/** A login: a new family under the user's current session epoch, and its first refresh token. */
	async start(user: UserEntity): Promise<IssuedSession> {
		const now = Date.now();
		const family: FamilyEntity = {
			_id: crypto.randomUUID(),
			userId: user._id,
			epoch: user.sessionEpoch ?? 0,
			createdAt: now,
			absoluteExpiresAt: now + this.settings.sessionMaxAgeSec * 1000,
			revokedAt: null,
		};
		await this.db.families.insert(family);
		const refreshToken = randomToken();
		const expiresAt = await this.insertRefreshToken(family, refreshToken, now);
		await this.assertFamilyLive(family._id, user._id, hashToken(refreshToken));
		return this.issueAccess(user._id, family._id, refreshToken, expiresAt);
	}

	/**
	 * Rotation with reuse detection. The first use of a refresh token
	 * marks it rotated (compare-and-set) and creates its successor;
	 * uses within the grace period get the same successor; a later use
	 * is reuse and revokes the whole family.
	 */
	async rotate(refreshToken: string): Promise<SessionResult> {
		const now = Date.now();
		const id = hashToken(refreshToken);
		let row = await this.db.sessions.findOne({ _id: id });
		if (!row || row.revokedAt || row.expiresAt <= now) throw expired();
		const successor = successorToken(refreshToken, this.deps.secret);
		if (row.rotatedAt === null) {
			const won = await this.db.sessions.updateOne({ _id: id, rotatedAt: null }, { $set: { rotatedAt: now } });
			if (won === 1) return this.continueSession(row, successor);
			row = await this.db.sessions.findOne({ _id: id });
		}
		if (row && row.rotatedAt !== null && now - row.rotatedAt <= this.settings.refreshGraceSec * 1000) {
			return this.continueSession(row, successor);
		}
		this.deps.log.warn({ userId: row?.userId, familyId: row?.familyId }, "refresh token reused: revoking its family");
		if (row) await this.revokeFamilies([row.familyId]);
		throw expired();
	}

	/** A logout: revokes the access token's session and the refresh token's family (usually the same one). */
	async logOut(sid: string | undefined, refreshToken: string | undefined, emitter: Emitter): Promise<void> {
		const families = new Set<string>();
		if (sid) families.add(sid);
		if (refreshToken) {
			const row = await this.db.sessions.findOne({ _id: hashToken(refreshToken) });
			if (row) families.add(row.familyId);
		}
		await this.revokeFamilies([...families], emitter);
	}

	/**
	 * Revokes session families: the family records first (what a racing refresh reads), then their tokens; gateways are told.
	 * Every write is safe to repeat and to race (two nodes revoking one family): the revocation is one upsert that keeps
	 * the later end (MongoDB itself retries an upsert that lost the race to insert that `_id`).
	 */
	async revokeFamilies(familyIds: string[], emitter: Emitter = this.deps.emitter): Promise<void> {
		if (familyIds.length === 0) return;
		const now = Date.now();
		const expiresAt = now + (this.settings.accessTokenTtlSec + 60) * 1000;
		for (const familyId of familyIds) {
			await this.db.families.updateOne({ _id: familyId, revokedAt: null }, { $set: { revokedAt: now } });
			// Every refresh token of the family: many documents, and the filter skips those already revoked.
			await this.db.sessions.updateMany({ familyId, revokedAt: null }, { $set: { revokedAt: now } });
			await this.db.revocations.updateOne({ _id: familyId }, { $max: { expiresAt } }, { upsert: true });
		}
		await publish(emitter, "auth.sessionsRevoked", { sids: familyIds, expiresAt });
		await this.deps.tellGateways?.(familyIds.map(sid => ({ sid, expiresAt })));
	}

	/**
	 * Every session of a user (logout-all, password reset, an operator):
	 * the epoch moves first, so a login or refresh racing this cannot
	 * keep a family; then the families known now are revoked and announced.
	 * Returns how many families were revoked.
	 */
	async revokeAllOf(userId: string, emitter: Emitter = this.deps.emitter): Promise<number> {
		await this.db.users.updateOne({ _id: userId }, { $inc: { sessionEpoch: 1 } });
		const families = await this.db.families.find({ query: { userId, revokedAt: null } });
		await this.revokeFamilies(
			families.map(f => f._id),
			emitter,
		);
		return families.length;
	}

	/** Revocations still in force, for gateways that start after they were issued. */
	async activeRevocations(now = Date.now()): Promise<{ sid: string; expiresAt: number }[]> {
		const rows = await this.db.revocations.find({ query: { expiresAt: { $gt: now } } });
		return rows.map(r => ({ sid: r._id, expiresAt: r.expiresAt }));
	}

	/** A refresh token row of the family; it expires with the token's TTL or the session's end, whichever comes first. */
	private async insertRefreshToken(family: FamilyEntity, refreshToken: string, now = Date.now()): Promise<number> {
		const expiresAt = Math.min(now + this.settings.refreshTokenTtlSec * 1000, family.absoluteExpiresAt);
		await this.db.sessions.insert({
			_id: hashToken(refreshToken),
			familyId: family._id,
			userId: family.userId,
			createdAt: now,
			expiresAt,
			rotatedAt: null,
			revokedAt: null,
		});
		return expiresAt;
	}

	/**
	 * Read after a refresh token was written: a family revoked meanwhile,
	 * past its absolute end, or older than the user's session epoch takes
	 * the new token down with it.
	 */
	private async assertFamilyLive(familyId: string, userId: string, tokenId: string): Promise<void> {
		const now = Date.now();
		const [family, user] = await Promise.all([this.db.families.findOne({ _id: familyId }), this.db.users.findOne({ _id: userId })]);
		const live = !!family && !!user && family.revokedAt === null && family.absoluteExpiresAt > now && family.epoch === (user.sessionEpoch ?? 0);
		if (live) return;
		await this.db.sessions.updateOne({ _id: tokenId, revokedAt: null }, { $set: { revokedAt: now } });
		if (family && family.revokedAt === null) await this.revokeFamilies([familyId]);
		throw expired();
	}

	private async issueAccess(userId: string, familyId: string, refreshToken: string, refreshExpiresAtMs: number): Promise<IssuedSession> {
		const { issuer, audience, accessTokenTtlSec } = this.settings;
		const access = await signAccessToken(this.deps.signer.current, { userId, sessionId: familyId }, { issuer, audience, ttlSec: accessTokenTtlSec });
		return {
			sessionId: familyId,
			accessToken: access.token,
			accessExpiresAt: access.expiresAt,
			refreshToken,
			refreshExpiresAt: Math.floor(refreshExpiresAtMs / 1000),
		};
	}

	private async continueSession(row: SessionEntity, successor: string): Promise<SessionResult> {
		const [user, family] = await Promise.all([this.db.users.findOne({ _id: row.userId }), this.db.families.findOne({ _id: row.familyId })]);
		// Sessions from before families existed have none: they log in again.
		if (!user || !family) throw expired();
		const successorId = hashToken(successor);
		const existing = await this.db.sessions.findOne({ _id: successorId });
		if (existing?.revokedAt) throw expired();
		let expiresAt: number;
		if (existing) expiresAt = existing.expiresAt;
		else {
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
	}
}
