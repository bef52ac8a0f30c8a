/**
 * api: the moleculer-web gateway, Mint's only HTTP edge.
 *
 * Explicit aliases only (api/routes.ts: no autoAliases, no $node or CRUD
 * actions). The gateway verifies access tokens itself from the cached JWKS
 * (api/token-verifier.ts), authenticates by Bearer or cookie and refreshes
 * sessions silently from the refresh cookie (api/session-auth.ts), owns
 * cookies and status codes (api/responses.ts), and maps every error to the
 * SPEC format once (api/http-errors.ts). It also serves the pages the
 * links in emails open, the OpenAPI document and its docs page (api/pages.ts),
 * and the users' wallet streams (server-sent events, api/wallet-stream.ts),
 * beside moleculer-web's router.
 *
 * Actions: health (liveness), ready (readiness).
 * Calls: auth.refresh (silent refresh), auth.revocations, auth.jwks, <service>.health (readiness),
 *        wallet.mine (a stream's first event).
 * Consumes: auth.sessionsRevoked (refuse revoked sessions, end their streams), auth.keysRotated (reread the JWKS now);
 *           wallet.credited, wallet.debited, transaction.* (the streams' events; every gateway node hears each one).
 */
import crypto from "node:crypto";
import type { JSONWebKeySet } from "jose";
import type { Context, Service } from "moleculer";
import ApiGateway from "moleculer-web";
import type { EventPayload } from "../contracts/events";
import type { WalletView } from "../contracts/money";
import type { Caller, RevokedSession, SessionResult } from "../contracts/users";
import type { Config } from "../lib/config";
import { defineService } from "../lib/define-service";
import { unauthorized } from "../lib/errors";
import { consumerContract } from "../lib/events";
import { NOT_READY_RETRY_AFTER_SEC, liveness, readiness } from "../lib/readiness";
import { PeriodicJobs, type PeriodicVars } from "../mixins/periodic.mixin";
import { answerFromCache, cachedReadOf, type CachedReadDeps } from "./api/cached-reads";
import { routeThroughMoleculerWeb, writeMoleculerWebCorsHeaders, type CorsRoute, type GatewayContext, type GatewayVars } from "./api/gateway";
import { answerClientError, compileTrustedProxies, cookiesOf, type Req, type Res, type RoutedReq } from "./api/http";
import { jsonBody } from "./api/json-body";
import { pagesRoute } from "./api/pages";
import { beginRequest, notServing, prepareCall, whileStarting } from "./api/requests";
import { UNEXPECTED_ERRORS_METRIC, answerError, shapeResponse } from "./api/responses";
import { ROOT_ALIASES, V1_ALIASES, corsOptions } from "./api/routes";
import { SessionAuth } from "./api/session-auth";
import { AccessTokenVerifier } from "./api/token-verifier";
import { OPEN_STREAMS_METRIC, WalletStreams, isWalletStreamRequest, type StreamCallOptions } from "./api/wallet-stream";

/** Services whose health the readiness check asks for, when this node's SERVICES route to them. */
const READINESS_SERVICES = ["auth", "wallet", "transactions", "notifications"];

/** What the wallet streams are made of. */
const MOVEMENT_FIELDS = ["walletId", "userId", "transactionId", "direction", "amountMinor", "balanceMinor", "version"] as const;
const TRANSACTION_FIELDS = ["transactionId", "type", "status", "amountMinor", "currency", "userId", "fromUserId", "toUserId", "reason"] as const;

interface ApiVars extends GatewayVars, PeriodicVars {
	verifier: AccessTokenVerifier;
	sessions: SessionAuth;
	/** What the cached reads need; undefined with tracing on (api/cached-reads.ts). */
	cachedReads?: CachedReadDeps;
	walletStreams: WalletStreams;
	/** The port the server listens on (PORT=0 lets the system choose). */
	listenPort?: number;
}

type ApiThis = Service & ApiVars;

export default function createApiService(config: Config) {
	const secure = config.http.cookieSecure;
	const trustProxy = compileTrustedProxies(config.http.trustedProxies);
	const cors = corsOptions(config);
	/**
	 * Moleculer gives an emitted event to one node of each group, and a
	 * handler's group is its service's name: of two gateways only one would
	 * hear each transaction.* event. A group of this gateway's own makes every
	 * gateway hear every one (broadcast events, wallet.*, reach each anyway).
	 */
	const streamGroup = `api-streams-${config.nodeId ?? crypto.randomUUID()}`;

	/** CORS headers for ALLOWED_ORIGINS only (the writeCorsHeaders method says why). */
	function writeCorsHeaders(service: ApiThis, corsRoute: CorsRoute, req: Req, res: Res, isPreFlight: boolean): void {
		const origin = String(req.headers.origin ?? "").toLowerCase();
		if (!config.http.allowedOrigins.includes(origin)) return;
		writeMoleculerWebCorsHeaders(service, corsRoute, req, res, isPreFlight);
	}

	/**
	 * GET /api/v1/wallet/stream: what moleculer-web's route and its hooks do
	 * for every other request (request id, starting gate, CORS,
	 * authentication), then the stream; a refusal before it starts is
	 * answered in the SPEC format.
	 */
	async function openWalletStream(service: ApiThis, req: Req, res: Res): Promise<void> {
		const { broker, logger } = service;
		const call: StreamCallOptions = {};
		beginRequest(call, req, res, { trustProxy, secure, logger });
		try {
			const refusal = notServing(broker);
			if (refusal) throw refusal;
			if (cors) writeCorsHeaders(service, { cors }, req, res, false);
			req.$cookies = cookiesOf(req);
			const meta = { clientIp: req.$clientIp };
			const session = await service.sessions.session(req, res, refreshToken =>
				broker.call<SessionResult, { refreshToken: string }>("auth.refresh", { refreshToken }, { ...call, meta }),
			);
			if (!session) throw unauthorized();
			await service.walletStreams.serve(res, session, () =>
				broker.call<WalletView, object>("wallet.mine", {}, { ...call, meta: { ...meta, user: session.caller } }),
			);
		} catch (err) {
			answerError(req, res, err, { logger, metrics: broker.metrics });
		}
	}

	/** What both routes share. moleculer-web calls the hooks with the gateway service as `this`; these need none of it. */
	const route = {
		mappingPolicy: "restrict",
		autoAliases: false,
		mergeParams: false,
		authentication: true,
		authorization: true,
		logging: false,
		bodyParsers: false,
		use: [whileStarting, jsonBody(config.http.bodyLimitBytes)],
		callOptions: { timeout: config.requestTimeoutMs },
		cors,
		onBeforeCall(ctx: GatewayContext, _route: unknown, req: RoutedReq): void {
			prepareCall(ctx, req);
		},
		onAfterCall(ctx: GatewayContext, _route: unknown, req: RoutedReq, res: Res, data: unknown): unknown {
			return shapeResponse(ctx, req, res, data, secure);
		},
	};

	return defineService<ApiVars>()({
		name: "api",
		mixins: [
			ApiGateway,
			PeriodicJobs<ApiThis>([
				{
					// A retired key leaves the JWKS when its tokens expire, with no event: reread it periodically.
					name: "jwks-refresh",
					intervalMs: config.auth.jwksRefreshSec * 1000,
					run() {
						return this.verifier.refreshJwks().catch((err: unknown) => this.logger.warn({ err }, "periodic JWKS refresh failed; keeping the last key set"));
					},
				},
			]),
		],

		settings: {
			port: config.port,
			ip: config.host,
			log4XXResponses: false,
			logRequest: null,
			logResponse: null,
			rootCallOptions(this: Service, options: { requestID?: string }, req: Req, res: Res): void {
				beginRequest(options, req, res, { trustProxy, secure, logger: this.logger });
			},
			onError(this: Service, req: Req, res: Res, err: unknown): void {
				answerError(req, res, err, { logger: this.logger, metrics: this.broker.metrics });
			},
			routes: [
				// Named: moleculer-web treats two unnamed routes with one path as the same route.
				{ ...route, name: "v1", path: "/api/v1", aliases: V1_ALIASES },
				{ ...route, name: "root", path: "/", aliases: ROOT_ALIASES },
				pagesRoute(config),
			],
		},

		actions: {
			health: {
				handler() {
					return liveness(this.broker);
				},
			},

			/** Readiness: this node has started, each service's own health (which touches its database), the transporter, the cache. */
			ready: {
				async handler(ctx: GatewayContext) {
					const report = await readiness(this.broker, READINESS_SERVICES);
					if (!report.ready) {
						ctx.meta.$statusCode = 503;
						ctx.meta.$responseHeaders = { "Retry-After": String(NOT_READY_RETRY_AFTER_SEC) };
					}
					return report.body;
				},
			},

			/** auth, on a revocation: this gateway refuses the sessions before the logout answers (no HTTP route reaches it). */
			denySessions: {
				visibility: "public",
				params: {
					revoked: { type: "array", min: 1, max: 1000, items: { type: "object", props: { sid: "string", expiresAt: "number" } } },
				},
				handler(ctx: Context<{ revoked: RevokedSession[] }>) {
					for (const { sid, expiresAt } of ctx.params.revoked) this.verifier.revokeSessions([sid], expiresAt);
					return { denied: ctx.params.revoked.length };
				},
			},
		},

		events: {
			"auth.sessionsRevoked": {
				params: consumerContract("auth.sessionsRevoked", "sids", "expiresAt"),
				handler(ctx: Context<EventPayload<"auth.sessionsRevoked">>) {
					this.verifier.revokeSessions(ctx.params.sids, ctx.params.expiresAt);
				},
			},
			"wallet.credited": {
				group: streamGroup,
				params: consumerContract("wallet.credited", ...MOVEMENT_FIELDS),
				handler(ctx: Context<EventPayload<"wallet.credited">>) {
					this.walletStreams.balanceChanged(ctx.params);
				},
			},
			"wallet.debited": {
				group: streamGroup,
				params: consumerContract("wallet.debited", ...MOVEMENT_FIELDS),
				handler(ctx: Context<EventPayload<"wallet.debited">>) {
					this.walletStreams.balanceChanged(ctx.params);
				},
			},
			...Object.fromEntries(
				(["transaction.created", "transaction.processing", "transaction.completed", "transaction.failed"] as const).map(name => [
					name,
					{
						group: streamGroup,
						params: consumerContract(name, ...TRANSACTION_FIELDS),
						handler(this: ApiThis, ctx: Context<EventPayload<typeof name>>) {
							this.walletStreams.transactionChanged(ctx.params);
						},
					},
				]),
			),
			"auth.keysRotated": {
				params: consumerContract("auth.keysRotated", "currentKid"),
				async handler() {
					// The rotation may have removed a retired key: drop it now, not at the next periodic refresh.
					await this.verifier
						.refreshJwks()
						.catch((err: unknown) => this.logger.warn({ err }, "JWKS refresh after a key rotation failed; keeping the last key set"));
				},
			},
		},

		methods: {
			/** The server's request listener: the wallet stream and cache hits of cached reads are served here, everything else by moleculer-web's router. */
			async httpHandler(req: Req, res: Res, next?: unknown): Promise<void> {
				if (isWalletStreamRequest(req)) return openWalletStream(this, req, res);
				const read = this.cachedReads ? cachedReadOf(req) : undefined;
				if (read && this.cachedReads && (await answerFromCache(this.cachedReads, read, req, res))) return;
				return routeThroughMoleculerWeb(this, req, res, next);
			},

			/** moleculer-web logs a 5xx itself, in loose pieces; onError logs each error once, as one structured line. */
			errorHandler(req: Req, res: Res, err: unknown): void {
				this.sendError(req, res, err);
			},

			/**
			 * moleculer-web answers 403 to any Origin not in the CORS list, which
			 * would refuse browsers' same-origin requests (they send Origin on
			 * POST). Mint grants CORS only to ALLOWED_ORIGINS and otherwise writes
			 * no CORS headers; cross-site writes are stopped by checkOrigin.
			 */
			writeCorsHeaders(corsRoute: CorsRoute, req: Req, res: Res, isPreFlight: boolean): void {
				writeCorsHeaders(this, corsRoute, req, res, isPreFlight);
			},

			/** Sets ctx.meta.user from a valid access token, or silently refreshes from the refresh cookie. */
			authenticate(ctx: GatewayContext, _route: unknown, req: RoutedReq, res: Res): Promise<Caller | null> {
				return this.sessions.authenticate(req, res, refreshToken => ctx.call<SessionResult, { refreshToken: string }>("auth.refresh", { refreshToken }));
			},

			authorize(ctx: GatewayContext, _route: unknown, req: RoutedReq): void {
				if (req.$action?.auth === "required" && !ctx.meta.user) throw unauthorized();
			},
		},

		created() {
			this.broker.metrics.register(UNEXPECTED_ERRORS_METRIC);
			this.server.on("clientError", answerClientError);
			this.broker.metrics.register(OPEN_STREAMS_METRIC);
			this.walletStreams = new WalletStreams({
				perUser: config.streams.perUser,
				perNode: config.streams.perNode,
				heartbeatMs: config.streams.heartbeatSec * 1000,
				currency: config.currency,
				logger: this.logger,
				counted: open => this.broker.metrics.set(OPEN_STREAMS_METRIC.name, open),
			});
			this.verifier = new AccessTokenVerifier({
				issuer: config.auth.issuer,
				audience: config.auth.audience,
				fetchJwks: () => this.broker.call<JSONWebKeySet, object>("auth.jwks", {}, { timeout: 5000 }),
				maxLifetimeSec: config.auth.accessTokenTtlSec,
				onSessionsRevoked: sids => this.walletStreams.endSessions(sids),
			});
			this.sessions = new SessionAuth({
				verifier: this.verifier,
				loadRevocations: () => this.broker.call<RevokedSession[], object>("auth.revocations", {}, { timeout: 5000 }),
				logger: this.logger,
				config,
				trustProxy,
				secure,
			});
			// With tracing on, every request takes the whole way and is traced (api/cached-reads.ts).
			this.cachedReads = this.broker.isTracingEnabled()
				? undefined
				: {
						broker: this.broker,
						sessions: this.sessions,
						serviceName: this.fullName,
						beginRequest: (req, res) => {
							beginRequest({}, req, res, { trustProxy, secure, logger: this.logger });
							// As moleculer-web's corsHandler writes them for every request of a route.
							if (cors) writeCorsHeaders(this, { cors }, req, res, true);
						},
					};
		},

		started() {
			const address = this.server.address();
			if (address && typeof address === "object") this.listenPort = address.port;
		},

		/** Before moleculer-web closes the server (which waits for every connection): the streams end, telling clients when to come back. */
		stopped() {
			return this.walletStreams.closeAll();
		},
	});
}
