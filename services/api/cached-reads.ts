/**
 * Reads the gateway answers itself when the cache holds them: today
 * `GET /api/v1/wallet/user`, the read a wallet's client repeats most.
 *
 * Through moleculer-web a cache hit still costs two action calls (`api.rest`,
 * then `wallet.mine`), each through Moleculer's whole middleware chain:
 * about twice the CPU of the hit itself (README, Benchmarks), and on a
 * cluster a remote call to the wallet's node. Here, before routing, the
 * gateway verifies the access token, peeks at the very entry wallet.mine
 * would answer from (lib/cacher.ts: same key, same scope token, so a write
 * that answered has already killed it), and writes it as moleculer-web would:
 * the same status, headers and body, the same request id, security headers,
 * CORS and access-log line. Anything else goes the whole way, untouched: no
 * valid access token (a silent refresh, a 401), a miss, a body, a node
 * starting or stopping, the cache unavailable.
 *
 * Such an answer counts as an `api.rest` request (Moleculer's request
 * counter and timer, which the dashboards' HTTP panels and the error-rate
 * alert divide by) and as a hit of wallet.mine (`mint.cache.lookups.total`).
 * It makes no span: with tracing on (ZIPKIN_URL, TRACING=console) every
 * request takes the whole way, so that each one is traced.
 */
import { METRIC, type ServiceBroker } from "moleculer";
import { WALLET_MINE_CACHE } from "../../contracts/gateway";
import { peekCache, type CacheSettings } from "../../lib/cacher";
import type { Req, Res } from "./http";
import { notServing } from "./requests";
import type { SessionAuth } from "./session-auth";

/** A read answered from the cache: the action whose entries it reads, and that action's cache settings. */
export interface CachedRead {
	action: string;
	cache: CacheSettings;
}

/** The route they are on (api.service.ts). */
const ROUTE_PATH = "/api/v1";

/** By path, as moleculer-web matches an alias (any case, an optional trailing slash); GET only. */
const CACHED_READS = new Map<string, CachedRead>([[`${ROUTE_PATH}/wallet/user`, { action: "wallet.mine", cache: WALLET_MINE_CACHE }]]);

/** The cached read this request is, if it is one: a GET of such a path, without a body (moleculer-web would parse one). */
export function cachedReadOf(req: Req): CachedRead | undefined {
	if (req.method !== "GET" || req.headers["transfer-encoding"] !== undefined) return undefined;
	const length = req.headers["content-length"];
	if (length !== undefined && length !== "0") return undefined;
	const path = (req.url ?? "").split("?")[0].toLowerCase();
	return CACHED_READS.get(path.endsWith("/") ? path.slice(0, -1) : path);
}

export interface CachedReadDeps {
	broker: ServiceBroker;
	sessions: Pick<SessionAuth, "accessSession">;
	/** The gateway service's full name: its requests are counted as `<name>.rest`. */
	serviceName: string;
	/** What moleculer-web's route does first for every request: request id, security headers, access log, CORS. */
	beginRequest(req: Req, res: Res): void;
}

/** Answers the read from the cache and returns true, or returns false having written nothing: then it takes the whole way. */
export async function answerFromCache(deps: CachedReadDeps, read: CachedRead, req: Req, res: Res): Promise<boolean> {
	const { broker } = deps;
	const labels = { service: deps.serviceName, action: `${deps.serviceName}.rest`, caller: null, type: "local" };
	const timeEnd = broker.metrics.timer(METRIC.MOLECULER_REQUEST_TIME, labels);
	if (notServing(broker)) return false;
	let hit: { value: unknown } | undefined;
	try {
		const session = await deps.sessions.accessSession(req);
		if (!session) return false;
		hit = await peekCache(broker, read.action, read.cache, { meta: { user: session.caller }, params: {} });
	} catch {
		// Whatever failed (the revocation list not loaded yet...) fails again the whole way, and is answered there.
		return false;
	}
	if (hit === undefined) return false;
	// The URL within the route, as moleculer-web leaves it for the access-log line.
	req.url = (req.url ?? "").slice(ROUTE_PATH.length);
	deps.beginRequest(req, res);
	res.statusCode = 200;
	res.setHeader("Content-Type", "application/json; charset=utf-8");
	res.end(JSON.stringify(hit.value));
	broker.metrics.increment(METRIC.MOLECULER_REQUEST_TOTAL, labels);
	timeEnd();
	return true;
}
