/**
 * The gateway's access-token check: RS256 against a cached JWKS, refreshed
 * on an unknown kid (at most once per refetch interval), verified tokens
 * cached until they expire, revoked sessions refused.
 */
import type { JSONWebKeySet } from "jose";
import { tokenKid, verifyAccessToken, type AccessClaims, type TokenAudience } from "../auth/tokens";

export interface VerifierOptions extends TokenAudience {
	fetchJwks: () => Promise<JSONWebKeySet>;
	refetchIntervalMs?: number;
	maxCachedTokens?: number;
	now?: () => number;
}

export class AccessTokenVerifier {
	private jwks: JSONWebKeySet = { keys: [] };
	private lastFetchAt = -Infinity;
	private fetching?: Promise<void>;
	private readonly verified = new Map<string, AccessClaims>();
	private readonly revokedSessions = new Map<string, number>(); // sid -> until (ms)
	private readonly now: () => number;

	constructor(private readonly opts: VerifierOptions) {
		this.now = opts.now ?? Date.now;
	}

	/** Claims of a valid, unrevoked token; null for anything else. */
	async verify(token: string): Promise<AccessClaims | null> {
		let claims = this.verified.get(token);
		if (!claims) {
			claims = (await this.verifyFresh(token)) ?? undefined;
			if (!claims) return null;
			this.remember(token, claims);
		}
		if (claims.exp * 1000 <= this.now()) {
			this.verified.delete(token);
			return null;
		}
		if (this.isRevoked(claims.sid)) return null;
		return claims;
	}

	revokeSessions(sids: string[], untilMs: number): void {
		for (const sid of sids) this.revokedSessions.set(sid, untilMs);
	}

	/** Forces the next unknown kid to refetch (a key rotation was announced). */
	invalidateJwks(): void {
		this.lastFetchAt = -Infinity;
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

	private async verifyFresh(token: string): Promise<AccessClaims | null> {
		const kid = tokenKid(token);
		if (!kid) return null;
		if (!this.knows(kid)) {
			await this.refetch();
			if (!this.knows(kid)) return null;
		}
		try {
			return await verifyAccessToken(token, this.jwks, this.opts);
		} catch {
			return null;
		}
	}

	private knows(kid: string): boolean {
		return this.jwks.keys.some(k => k.kid === kid);
	}

	private async refetch(): Promise<void> {
		if (this.fetching) return this.fetching;
		if (this.now() - this.lastFetchAt < (this.opts.refetchIntervalMs ?? 10_000)) return;
		// A failed fetch counts too: an auth outage must not turn every unknown kid into a call.
		this.lastFetchAt = this.now();
		this.fetching = (async () => {
			try {
				this.jwks = await this.opts.fetchJwks();
			} finally {
				this.fetching = undefined;
			}
		})();
		return this.fetching;
	}

	private remember(token: string, claims: AccessClaims): void {
		const max = this.opts.maxCachedTokens ?? 10_000;
		if (this.verified.size >= max) {
			const oldest = this.verified.keys().next().value;
			if (oldest !== undefined) this.verified.delete(oldest);
		}
		this.verified.set(token, claims);
	}
}
