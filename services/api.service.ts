/**
 * api: the moleculer-web gateway, Mint's only HTTP edge.
 *
 * Explicit aliases only (no autoAliases, no $node or CRUD actions). The
 * gateway verifies access tokens itself from the cached JWKS, refreshes
 * sessions silently from the refresh cookie, owns cookies and status codes,
 * and maps every error to the SPEC format once (api/http-errors.ts).
 *
 * Consumes: auth.sessionsRevoked (refuse revoked sessions), auth.keysRotated
 */
import type { Context, ServiceSchema } from "moleculer";
import ApiGateway from "moleculer-web";
import type { Config } from "../lib/config";
import { unauthorized, unavailable } from "../lib/errors";
import { consumerContract } from "../lib/events";
import { NOT_READY_RETRY_AFTER_SEC, liveness, readiness } from "../lib/readiness";
import type { Caller, IssuedSession, PublicUser, SubmitResult } from "../contracts";
import {
	ACCESS_COOKIE,
	REFRESH_COOKIE,
	actionParams,
	answerClientError,
	appendSetCookie,
	bearerTokenOf,
	checkOrigin,
	clearedSessionCookies,
	clientIpOf,
	compileTrustedProxies,
	cookiesOf,
	isTrustedPeer,
	isUnsafeMethod,
	requestIdOf,
	sessionCookies,
	setSecurityHeaders,
	type Req,
	type Res,
} from "./api/http";
import { toHttpError } from "./api/http-errors";
import { jsonBody } from "./api/json-body";
import { AccessTokenVerifier } from "./api/token-verifier";

/** Actions that answer with a new session: the gateway turns it into cookies and answers the user. */
const SESSION_ISSUING = new Set(["auth.signup", "auth.login", "auth.refresh"]);
/** Actions that end sessions: the gateway clears the cookies. */
const SESSION_ENDING = new Set(["auth.logout", "auth.logoutAll", "auth.resetPassword"]);
/** Actions that submit money movements: 201 final, 202 still running, 200 an idempotent replay. */
const MONEY_SUBMITTING = new Set(["transactions.topup", "transactions.transfer"]);
/** Actions that take the refresh token from its cookie rather than doing a silent refresh. */
const USES_REFRESH_COOKIE = new Set(["auth.refresh", "auth.logout"]);
const STATUS_BY_ACTION: Record<string, number> = { "auth.signup": 201, "auth.logout": 204, "auth.logoutAll": 204, "auth.forgotPassword": 202 };

const V1_ALIASES = {
	"POST /auth/signup": "auth.signup",
	"POST /auth/login": "auth.login",
	"POST /auth/logout": "auth.logout",
	"POST /auth/logout-all": "auth.logoutAll",
	"POST /auth/refresh": "auth.refresh",
	"GET /auth/user": "auth.me",
	"POST /auth/verify-email": "auth.verifyEmail",
	"POST /auth/password/forgot": "auth.forgotPassword",
	"POST /auth/password/reset": "auth.resetPassword",
	"GET /auth/health": "auth.health",
	"GET /users": "auth.listUsers",
	"GET /users/search": "auth.searchUsers",
	"PUT /users/me": "auth.updateMe",
	"GET /users/:id": "auth.getUser",
	"GET /wallet/user": "wallet.mine",
	"GET /wallet/health": "wallet.health",
	"POST /transactions/topup": "transactions.topup",
	"POST /transactions/transfer": "transactions.transfer",
	"GET /transactions": "transactions.list",
	"GET /transactions/health": "transactions.health",
	"GET /transactions/:id": "transactions.get",
	"GET /transactions/:id/history": "transactions.history",
	"GET /notifications/health": "notifications.health",
	"GET /health": "api.health",
	"GET /ready": "api.ready",
};

const ROOT_ALIASES = {
	"GET /.well-known/jwks.json": "auth.jwks",
	"GET /health": "api.health",
	"GET /ready": "api.ready",
};

const REVOCATION_RESYNC_MS = 10_000;

/** Services whose health the readiness check asks for, when this node's SERVICES route to them. */
const READINESS_SERVICES = ["auth", "wallet", "transactions", "notifications"];

/** What a node answers while its services are still starting: liveness, and readiness saying so. */
const ANSWERED_WHILE_STARTING = /^(\/api\/v1)?\/(health|ready)$/;

/**
 * Route middleware, first: the server listens before every local service has
 * started (auth may still be generating its keys), and keeps listening while
 * the node stops. Meanwhile requests get 503 with Retry-After.
 */
function whileStarting(this: { broker: { started: boolean; stopping: boolean } }, req: Req, _res: Res, next: (err?: unknown) => void) {
	if (ANSWERED_WHILE_STARTING.test(req.parsedUrl)) return next();
	if (this.broker.stopping) return next(unavailable("Mint is shutting down, try again shortly"));
	if (!this.broker.started) return next(unavailable("Mint is starting, try again shortly", 2));
	next();
}

export default function createApiService(config: Config): ServiceSchema {
	const secure = config.http.cookieSecure;
	const trustProxy = compileTrustedProxies(config.http.trustedProxies);

	const routeDefaults = {
		mappingPolicy: "restrict",
		autoAliases: false,
		mergeParams: false,
		authentication: true,
		authorization: true,
		logging: false,
		bodyParsers: false,
		use: [whileStarting, jsonBody(config.http.bodyLimitBytes)],
		callOptions: { timeout: config.requestTimeoutMs },
		// A web client served from another origin (ALLOWED_ORIGINS) may call with credentials.
		cors: config.http.allowedOrigins.length
			? {
					origin: config.http.allowedOrigins,
					credentials: true,
					methods: ["GET", "POST", "PUT", "DELETE"],
					allowedHeaders: ["Content-Type", "Authorization", "Idempotency-Key", "X-Request-Id"],
					exposedHeaders: ["X-Request-Id", "Idempotent-Replayed", "Retry-After"],
					maxAge: 600,
				}
			: undefined,
		onBeforeCall(this: any, ctx: Context<unknown, any>, _route: unknown, req: Req) {
			const params = actionParams(req, req.method ?? "GET");
			const target = req.$params as Record<string, unknown>;
			for (const key of Object.keys(target)) delete target[key];
			Object.assign(target, params);
			req.$cookies = cookiesOf(req);
			ctx.meta.clientIp = req.$clientIp;
			const idempotencyKey = req.headers["idempotency-key"];
			if (MONEY_SUBMITTING.has(req.$action?.name) && idempotencyKey !== undefined) {
				ctx.meta.idempotencyKey = Array.isArray(idempotencyKey) ? idempotencyKey.join(",") : idempotencyKey;
			}
			if (USES_REFRESH_COOKIE.has(req.$action?.name)) {
				const refreshToken = req.$cookies[REFRESH_COOKIE];
				if (refreshToken) target.refreshToken = refreshToken;
				else if (req.$action.name === "auth.refresh") throw unauthorized("No session");
			}
		},
		onAfterCall(this: any, ctx: Context<unknown, any>, _route: unknown, req: Req, res: Res, data: any) {
			const action: string = req.$action?.name;
			if (STATUS_BY_ACTION[action]) ctx.meta.$statusCode = STATUS_BY_ACTION[action];
			if (action === "auth.signup") ctx.meta.$location = "/api/v1/auth/user";
			if (SESSION_ISSUING.has(action)) {
				const { user, session } = data as { user: PublicUser; session: IssuedSession };
				appendSetCookie(res, sessionCookies(session, secure));
				return user;
			}
			if (MONEY_SUBMITTING.has(action)) {
				const { transaction, replayed, final } = data as SubmitResult;
				ctx.meta.$statusCode = replayed ? 200 : final ? 201 : 202;
				const location = `/api/v1/transactions/${transaction.id}`;
				if (replayed) ctx.meta.$responseHeaders = { "Idempotent-Replayed": "true" };
				else if (final) ctx.meta.$location = location;
				else ctx.meta.$responseHeaders = { Location: location }; // 202: where to poll
				return transaction;
			}
			if (SESSION_ENDING.has(action)) appendSetCookie(res, clearedSessionCookies(secure));
			if (STATUS_BY_ACTION[action] === 204) return null;
			// The v1 client shows its login page on a literal `null` body.
			if (data === null) {
				ctx.meta.$responseType = "application/json; charset=utf-8";
				return Buffer.from("null");
			}
			return data;
		},
	};

	return {
		name: "api",
		mixins: [ApiGateway],

		settings: {
			port: config.port,
			ip: config.host,
			log4XXResponses: false,
			logRequest: null,
			logResponse: null,
			rootCallOptions(this: any, options: Record<string, unknown>, req: Req, res: Res) {
				const requestId = requestIdOf(req);
				options.requestID = requestId;
				req.$requestId = requestId;
				req.$clientIp = clientIpOf(req, trustProxy);
				res.setHeader("X-Request-Id", requestId);
				setSecurityHeaders(res, secure);
				const started = process.hrtime.bigint();
				res.once("finish", () =>
					this.logger.info(
						{
							requestId,
							method: req.method,
							path: (req.url ?? "").split("?")[0],
							status: res.statusCode,
							ms: Number(process.hrtime.bigint() - started) / 1e6,
							ip: req.$clientIp,
						},
						"http request",
					),
				);
			},
			onError(this: any, req: Req, res: Res, err: unknown) {
				const http = toHttpError(err);
				if (http.status === 500) {
					// Unexpected: the client gets a generic message, the operator the error, its request id and a count.
					this.logger.error({ err, requestId: req.$requestId }, "request failed unexpectedly");
					this.broker.metrics.increment("mint.http.unexpected.errors.total");
				} else if (http.status >= 500) {
					this.logger.warn({ requestId: req.$requestId, status: http.status, reason: (err as { message?: string })?.message }, "request not served");
				}
				if (res.headersSent) return res.end();
				res.statusCode = http.status;
				for (const [name, value] of Object.entries(http.headers)) res.setHeader(name, value);
				res.setHeader("Content-Type", "application/json; charset=utf-8");
				res.end(JSON.stringify(http.body));
			},
			routes: [
				{ ...routeDefaults, path: "/api/v1", aliases: V1_ALIASES },
				{ ...routeDefaults, path: "/", aliases: ROOT_ALIASES },
			],
		},

		actions: {
			health: {
				handler(this: any) {
					return liveness(this.broker);
				},
			},

			/** Readiness: this node has started, each service's own health (which touches its database), the transporter, the cache. */
			ready: {
				async handler(this: any, ctx: Context<unknown, any>) {
					const report = await readiness(this.broker, READINESS_SERVICES);
					if (!report.ready) {
						ctx.meta.$statusCode = 503;
						ctx.meta.$responseHeaders = { "Retry-After": String(NOT_READY_RETRY_AFTER_SEC) };
					}
					return report.body;
				},
			},
		},

		events: {
			"auth.sessionsRevoked": {
				params: consumerContract("auth.sessionsRevoked", "sids", "expiresAt"),
				handler(this: any, ctx: Context<{ sids: string[]; expiresAt: number }>) {
					this.verifier.revokeSessions(ctx.params.sids, ctx.params.expiresAt);
				},
			},
			"auth.keysRotated": {
				params: consumerContract("auth.keysRotated", "currentKid"),
				async handler(this: any) {
					// The rotation may have removed a retired key: drop it now, not at the next periodic refresh.
					await this.verifier
						.refreshJwks()
						.catch((err: unknown) => this.logger.warn({ err }, "JWKS refresh after a key rotation failed; keeping the last key set"));
				},
			},
		},

		methods: {
			/** moleculer-web logs a 5xx itself, in loose pieces; onError logs each error once, as one structured line. */
			errorHandler(this: any, req: Req, res: Res, err: unknown) {
				this.sendError(req, res, err);
			},

			/**
			 * moleculer-web answers 403 to any Origin not in the CORS list, which
			 * would refuse browsers' same-origin requests (they send Origin on
			 * POST). Mint grants CORS only to ALLOWED_ORIGINS and otherwise writes
			 * no CORS headers; cross-site writes are stopped by checkOrigin.
			 */
			writeCorsHeaders(this: any, route: any, req: Req, res: Res, isPreFlight: boolean) {
				const origin = String(req.headers.origin ?? "").toLowerCase();
				if (!config.http.allowedOrigins.includes(origin)) return;
				return (ApiGateway as any).methods.writeCorsHeaders.call(this, route, req, res, isPreFlight);
			},

			/** Sets ctx.meta.user from a valid access token, or silently refreshes from the refresh cookie. */
			async authenticate(this: any, ctx: Context<unknown, any>, _route: unknown, req: Req, res: Res): Promise<Caller | null> {
				const cookies = req.$cookies as Record<string, string | undefined>;
				const bearer = bearerTokenOf(req);
				const action: string | undefined = req.$action?.name;
				// A write the browser's cookies authenticate must come from our page (checkOrigin); a stale cookie authenticates nothing.
				const fromOurPage = () => {
					if (isUnsafeMethod(req.method)) checkOrigin(req, config, isTrustedPeer(req, trustProxy));
				};
				const refreshToken = bearer ? undefined : cookies[REFRESH_COOKIE];
				if (refreshToken && USES_REFRESH_COOKIE.has(action ?? "")) fromOurPage();
				const token = bearer ?? cookies[ACCESS_COOKIE];
				// Health checks never depend on auth; anonymous requests need no keys.
				if ((!token && !refreshToken) || action?.startsWith("api.")) return null;
				await this.ensureRevocationsLoaded();

				if (token) {
					const claims = await this.verifier.verify(token);
					if (claims) {
						if (!bearer) fromOurPage();
						return { id: claims.sub, sid: claims.sid };
					}
				}
				if (!refreshToken || USES_REFRESH_COOKIE.has(action ?? "") || SESSION_ISSUING.has(action ?? "")) return null;
				fromOurPage(); // before the silent refresh rotates anything
				try {
					const { user, session } = await ctx.call<{ user: PublicUser; session: IssuedSession }, object>("auth.refresh", { refreshToken });
					appendSetCookie(res, sessionCookies(session, secure));
					return { id: user.id, sid: session.sessionId };
				} catch (err) {
					if ((err as { code?: number }).code !== 401) throw err;
					appendSetCookie(res, clearedSessionCookies(secure));
					return null;
				}
			},

			authorize(this: any, ctx: Context<unknown, any>, _route: unknown, req: Req) {
				if (req.$action?.auth === "required" && !ctx.meta.user) throw unauthorized();
			},

			/**
			 * Revocations arrive as events, but an event emitted before its
			 * emitter has discovered this node is lost (Moleculer events are
			 * fire-and-forget). So the gateway also loads the active list from
			 * auth when it first authenticates and then every
			 * REVOCATION_RESYNC_MS: a missed revocation is honoured within that bound.
			 */
			async ensureRevocationsLoaded(this: any) {
				if (Date.now() - (this.revocationsLoadedAt ?? -Infinity) < REVOCATION_RESYNC_MS) return;
				this.revocationsLoading ??= (async () => {
					try {
						const rows: { sid: string; expiresAt: number }[] = await this.broker.call("auth.revocations", {}, { timeout: 5000 });
						for (const row of rows) this.verifier.revokeSessions([row.sid], row.expiresAt);
						this.revocationsLoadedAt = Date.now();
					} catch (err) {
						// Never loaded: cannot vouch for any session (503). Loaded before: keep the list and the events.
						if (this.revocationsLoadedAt === undefined) throw err;
						this.logger.warn({ err }, "revocation resync failed; keeping the last list");
					} finally {
						this.revocationsLoading = undefined;
					}
				})();
				await this.revocationsLoading;
			},
		},

		created(this: any) {
			this.broker.metrics.register({
				type: "counter",
				name: "mint.http.unexpected.errors.total",
				description: "Requests answered 500: an error nothing expected (its log line has the request id)",
			});
			this.server.on("clientError", answerClientError);
			this.verifier = new AccessTokenVerifier({
				issuer: config.auth.issuer,
				audience: config.auth.audience,
				fetchJwks: () => this.broker.call("auth.jwks", {}, { timeout: 5000 }),
				maxLifetimeSec: config.auth.accessTokenTtlSec,
			});
		},

		started(this: any) {
			const address = this.server.address();
			if (address && typeof address === "object") this.listenPort = address.port;
			// A retired key leaves the JWKS when its tokens expire, with no event: reread it periodically.
			this.jwksRefreshTimer = setInterval(() => {
				if (this.jwksRefreshing) return;
				this.jwksRefreshing = this.verifier
					.refreshJwks()
					.catch((err: unknown) => this.logger.warn({ err }, "periodic JWKS refresh failed; keeping the last key set"))
					.finally(() => {
						this.jwksRefreshing = undefined;
					});
			}, config.auth.jwksRefreshSec * 1000);
			this.jwksRefreshTimer.unref();
		},

		stopped(this: any) {
			clearInterval(this.jwksRefreshTimer);
		},
	} as ServiceSchema;
}
