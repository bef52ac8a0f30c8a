/**
 * The gateway's access-token check: RS256 against a cached JWKS, verified
 * tokens cached until they expire, revoked sessions refused, and lifetimes
 * longer than the configured one refused.
 *
 * The key set is replaced by refreshJwks() (on a rotation event and
 * periodically, driven by the api service) and refetched on an unknown kid
 * (at most once per refetch interval). A key that leaves the JWKS is dropped
 * with every cached token it signed. A failed fetch keeps the last good key
 * set, so the gateway keeps verifying while auth is down.
 */
import type { JSONWebKeySet } from "jose";
import { tokenKid, verifyAccessToken, type AccessClaims, type TokenAudience } from "../../lib/access-tokens";

export interface VerifierOptions extends TokenAudience {
	fetchJwks: () => Promise<JSONWebKeySet>;
	/** The configured access-token lifetime: a token whose exp - iat exceeds it (plus the skew) is refused. */
	maxLifetimeSec: number;
	/** Clock difference tolerated between auth nodes and this one. */
	clockSkewSec?: number;
	refetchIntervalMs?: number;
	maxCachedTokens?: number;
	now?: () => number;
	/** Told of every revocation, however it arrived (event, auth's call, resync): what else holds those sessions ends them (wallet streams). */
	onSessionsRevoked?: (sids: string[]) => void;
}

interface VerifiedToken {
	claims: AccessClaims;
	kid: string;
}

export const DEFAULT_CLOCK_SKEW_SEC = 60;

export class AccessTokenVerifier {
	private jwks: JSONWebKeySet = { keys: [] };
	private kids = new Set<string>();
	private lastFetchAt = -Infinity;
	private fetching?: Promise<void>;
	private queuedRefresh?: Promise<void>;
	private readonly verified = new Map<string, VerifiedToken>();
	private readonly revokedSessions = new Map<string, number>(); // sid -> until (ms)
	private readonly now: () => number;
	private readonly skewSec: number;

	constructor(private readonly opts: VerifierOptions) {
		this.now = opts.now ?? Date.now;
		this.skewSec = opts.clockSkewSec ?? DEFAULT_CLOCK_SKEW_SEC;
	}

	/** Claims of a valid, unrevoked token; null for anything else. */
	async verify(token: string): Promise<AccessClaims | null> {
		let entry = this.verified.get(token);
		if (!entry) {
			entry = (await this.verifyFresh(token)) ?? undefined;
			if (!entry) return null;
			this.remember(token, entry);
		}
		// The key set may have been replaced while the signature was being checked.
		if (!this.kids.has(entry.kid) || entry.claims.exp * 1000 <= this.now()) {
			this.verified.delete(token);
			return null;
		}
		if (this.isRevoked(entry.claims.sid)) return null;
		return entry.claims;
	}

	revokeSessions(sids: string[], untilMs: number): void {
		for (const sid of sids) this.revokedSessions.set(sid, untilMs);
		this.opts.onSessionsRevoked?.(sids);
	}

	/**
	 * Replaces the key set now (a rotation was announced, or the periodic
	 * refresh). A fetch already under way may predate the rotation, so this one
	 * starts after it; callers arriving meanwhile share it. Rejects when the
	 * fetch fails, keeping the last good key set.
	 */
	refreshJwks(): Promise<void> {
		if (!this.fetching) return this.startFetch();
		this.queuedRefresh ??= this.fetching
			.catch(() => undefined)
			.then(() => {
				this.queuedRefresh = undefined;
				return this.fetching ?? this.startFetch();
			});
		return this.queuedRefresh;
	}

	private isRevoked(sid: string): boolean {
		const until = this.revokedSessions.get(sid);
		if (until === undefined) return false;
		if (until <= this.now()) {
			this.revokedSessions.delete(sid);
			return false;
		}
		return true;
	}

	private async verifyFresh(token: string): Promise<VerifiedToken | null> {
		const kid = tokenKid(token);
		if (!kid) return null;
		if (!this.kids.has(kid)) {
			await this.refetchForUnknownKid();
			if (!this.kids.has(kid)) return null;
		}
		let claims: AccessClaims;
		try {
			// verifyAccessToken requires exp and iat (numeric), sub, jti and sid.
			claims = await verifyAccessToken(token, this.jwks, this.opts);
		} catch {
			return null;
		}
		return this.withinLifetime(claims) ? { claims, kid } : null;
	}

	/** Auth never signs longer than the configured lifetime; nor from the future, which would stretch it. */
	private withinLifetime(claims: AccessClaims): boolean {
		return claims.exp - claims.iat <= this.opts.maxLifetimeSec + this.skewSec && claims.iat <= this.now() / 1000 + this.skewSec;
	}

	private async refetchForUnknownKid(): Promise<void> {
		if (this.fetching) return this.fetching;
		if (this.now() - this.lastFetchAt < (this.opts.refetchIntervalMs ?? 10_000)) return;
		return this.startFetch();
	}

	private startFetch(): Promise<void> {
		// A failed fetch counts too: an auth outage must not turn every unknown kid into a call.
		this.lastFetchAt = this.now();
		this.fetching = (async () => {
			try {
				const jwks = await this.opts.fetchJwks();
				if (!Array.isArray(jwks?.keys)) throw new Error("JWKS without a keys array");
				this.replaceJwks(jwks);
			} finally {
				this.fetching = undefined;
			}
		})();
		return this.fetching;
	}

	private replaceJwks(jwks: JSONWebKeySet): void {
		this.jwks = jwks;
		this.kids = new Set(jwks.keys.map(k => k.kid).filter((kid): kid is string => typeof kid === "string"));
		for (const [token, entry] of this.verified) {
			if (!this.kids.has(entry.kid)) this.verified.delete(token);
		}
	}

	private remember(token: string, entry: VerifiedToken): void {
		const max = this.opts.maxCachedTokens ?? 10_000;
		if (this.verified.size >= max) {
			const oldest = this.verified.keys().next().value;
			if (oldest !== undefined) this.verified.delete(oldest);
		}
		this.verified.set(token, entry);
	}
}
