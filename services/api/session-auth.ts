/**
 * Who is calling: an access token from the Authorization header (Bearer) or
 * from its cookie, verified here from the cached JWKS, with revoked sessions
 * refused; otherwise a silent refresh from the refresh cookie. A write that
 * a cookie authenticates must come from our own page (checkOrigin); a stale
 * cookie authenticates nothing, so its request is not Origin-checked.
 */
import type { Logger } from "moleculer";
import type { Caller, RevokedSession, SessionResult } from "../../contracts/users";
import type { AccessClaims } from "../../lib/access-tokens";
import type { Config } from "../../lib/config";
import {
	ACCESS_COOKIE,
	REFRESH_COOKIE,
	appendSetCookie,
	bearerTokenOf,
	checkOrigin,
	clearedSessionCookies,
	cookiesOf,
	isTrustedPeer,
	isUnsafeMethod,
	sessionCookies,
	type Req,
	type Res,
	type RoutedReq,
	type TrustProxy,
} from "./http";
import { SESSION_ISSUING, USES_REFRESH_COOKIE } from "./routes";
import type { AccessTokenVerifier } from "./token-verifier";

/** How often the revocation list is reloaded from auth, whatever events arrived. */
export const REVOCATION_RESYNC_MS = 10_000;

export interface SessionAuthOptions {
	verifier: Pick<AccessTokenVerifier, "verify" | "revokeSessions">;
	/** The active revocations (auth.revocations). */
	loadRevocations(): Promise<RevokedSession[]>;
	logger: Pick<Logger, "warn">;
	/** For the Origin check: the allowed origins. */
	config: Config;
	trustProxy: TrustProxy;
	/** Cookies with the Secure attribute. */
	secure: boolean;
	resyncMs?: number;
	now?: () => number;
}

/** An authenticated caller, and when the access token that vouches for them expires (epoch ms). */
export interface AuthenticatedSession {
	caller: Caller;
	accessExpiresAt: number;
}

/** A silent refresh: auth.refresh with the refresh cookie's token, called in the request's context. */
export type RefreshSession = (refreshToken: string) => Promise<SessionResult>;

const sessionOf = (claims: AccessClaims): AuthenticatedSession => ({ caller: { id: claims.sub, sid: claims.sid }, accessExpiresAt: claims.exp * 1000 });

export class SessionAuth {
	private revocationsLoadedAt?: number;
	private revocationsLoading?: Promise<void>;
	private readonly now: () => number;

	constructor(private readonly opts: SessionAuthOptions) {
		this.now = opts.now ?? Date.now;
	}

	/** The caller a valid access token names, or the one a silent refresh yields (setting its cookies); null for anonymous. */
	async authenticate(req: RoutedReq, res: Res, refreshSession: RefreshSession): Promise<Caller | null> {
		return (await this.session(req, res, refreshSession))?.caller ?? null;
	}

	/** As authenticate, with when the access token that vouches for the caller expires: what outlives a request (a wallet stream) ends then. */
	async session(req: Req, res: Res, refreshSession: RefreshSession): Promise<AuthenticatedSession | null> {
		const { verifier, secure } = this.opts;
		const cookies = req.$cookies ?? {};
		const bearer = bearerTokenOf(req);
		const action = req.$action?.name ?? "";
		// A write the browser's cookies authenticate must come from our page (checkOrigin); a stale cookie authenticates nothing.
		const fromOurPage = () => {
			if (isUnsafeMethod(req.method)) checkOrigin(req, this.opts.config, isTrustedPeer(req, this.opts.trustProxy));
		};
		const refreshToken = bearer ? undefined : cookies[REFRESH_COOKIE];
		if (refreshToken && USES_REFRESH_COOKIE.has(action)) fromOurPage();
		const token = bearer ?? cookies[ACCESS_COOKIE];
		// Health checks never depend on auth; anonymous requests need no keys.
		if ((!token && !refreshToken) || action.startsWith("api.")) return null;
		await this.ensureRevocationsLoaded();

		if (token) {
			const claims = await verifier.verify(token);
			if (claims) {
				if (!bearer) fromOurPage();
				return sessionOf(claims);
			}
		}
		if (!refreshToken || USES_REFRESH_COOKIE.has(action) || SESSION_ISSUING.has(action)) return null;
		fromOurPage(); // before the silent refresh rotates anything
		try {
			const { user, session } = await refreshSession(refreshToken);
			appendSetCookie(res, sessionCookies(session, secure));
			return { caller: { id: user.id, sid: session.sessionId }, accessExpiresAt: session.accessExpiresAt * 1000 };
		} catch (err) {
			if ((err as { code?: number }).code !== 401) throw err;
			appendSetCookie(res, clearedSessionCookies(secure));
			return null;
		}
	}

	/**
	 * For a read (GET) only: the session a valid, unrevoked access token
	 * names (Bearer, else its cookie), or null, with no silent refresh. What
	 * the gateway's cached reads take (api/cached-reads.ts); a null sends the
	 * request the whole way, through session().
	 */
	async accessSession(req: Req): Promise<AuthenticatedSession | null> {
		if (req.method !== "GET") return null;
		const token = bearerTokenOf(req) ?? (req.$cookies ?? cookiesOf(req))[ACCESS_COOKIE];
		if (!token) return null;
		await this.ensureRevocationsLoaded();
		const claims = await this.opts.verifier.verify(token);
		return claims ? sessionOf(claims) : null;
	}

	/**
	 * Revocations arrive as events, but an event emitted before its
	 * emitter has discovered this node is lost (Moleculer events are
	 * fire-and-forget). So the gateway also loads the active list from
	 * auth when it first authenticates and then every
	 * REVOCATION_RESYNC_MS: a missed revocation is honoured within that bound.
	 */
	async ensureRevocationsLoaded(): Promise<void> {
		if (this.now() - (this.revocationsLoadedAt ?? -Infinity) < (this.opts.resyncMs ?? REVOCATION_RESYNC_MS)) return;
		this.revocationsLoading ??= (async () => {
			try {
				const rows = await this.opts.loadRevocations();
				for (const row of rows) this.opts.verifier.revokeSessions([row.sid], row.expiresAt);
				this.revocationsLoadedAt = this.now();
			} catch (err) {
				// Never loaded: cannot vouch for any session (503). Loaded before: keep the list and the events.
				if (this.revocationsLoadedAt === undefined) throw err;
				this.opts.logger.warn({ err }, "revocation resync failed; keeping the last list");
			} finally {
				this.revocationsLoading = undefined;
			}
		})();
		await this.revocationsLoading;
	}
}
