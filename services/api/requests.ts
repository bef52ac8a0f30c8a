/**
 * A request on its way in: its id, client IP, security headers and log
 * line as it arrives (rootCallOptions), the 503 while the node starts or
 * stops (a route middleware), and the action's params and meta just before
 * the call (onBeforeCall).
 */
import type { Logger, ServiceBroker } from "moleculer";
import { unauthorized, unavailable } from "../../lib/errors";
import { traceIdOf } from "../../lib/request-context";
import type { GatewayContext } from "./gateway";
import {
	REFRESH_COOKIE,
	actionParams,
	clientIpOf,
	cookiesOf,
	requestIdOf,
	setSecurityHeaders,
	traceParentOf,
	type Req,
	type Res,
	type RoutedReq,
	type TrustProxy,
} from "./http";
import { MONEY_SUBMITTING, USES_REFRESH_COOKIE } from "./routes";

/**
 * Every request, before routing: a request id (the caller's when sane) that
 * becomes the call's requestID and the X-Request-Id header, the client IP,
 * the security headers, and one structured log line when the answer is sent.
 */
export function beginRequest(
	options: { requestID?: string; parentSpan?: { id: string; traceID: string; sampled: boolean } },
	req: Req,
	res: Res,
	opts: { trustProxy: TrustProxy; secure: boolean; logger: Logger },
): void {
	const requestId = requestIdOf(req);
	options.requestID = requestId;
	// A request that joined its caller's trace (traceparent) hangs its first span under the caller's.
	const parent = traceParentOf(req);
	if (parent?.traceId === requestId) options.parentSpan = { id: parent.parentId, traceID: requestId, sampled: true };
	req.$requestId = requestId;
	req.$clientIp = clientIpOf(req, opts.trustProxy);
	res.setHeader("X-Request-Id", requestId);
	setSecurityHeaders(res, opts.secure);
	const started = process.hrtime.bigint();
	res.once("finish", () =>
		opts.logger.info(
			{
				requestId,
				traceId: traceIdOf(requestId),
				method: req.method,
				path: (req.url ?? "").split("?")[0],
				status: res.statusCode,
				ms: Number(process.hrtime.bigint() - started) / 1e6,
				ip: req.$clientIp,
			},
			"http request",
		),
	);
}

/** What a node answers while its services are still starting: liveness, and readiness saying so. */
const ANSWERED_WHILE_STARTING = /^(\/api\/v1)?\/(health|ready)$/;

/**
 * Route middleware, first: the server listens before every local service has
 * started (auth may still be generating its keys), and keeps listening while
 * the node stops. Meanwhile requests get 503 with Retry-After.
 * moleculer-web calls route middlewares with the gateway service as `this`.
 */
export function whileStarting(
	this: { broker: Pick<ServiceBroker, "started" | "stopping"> },
	req: Req & { parsedUrl: string },
	_res: Res,
	next: (err?: unknown) => void,
): void {
	next(ANSWERED_WHILE_STARTING.test(req.parsedUrl) ? undefined : notServing(this.broker));
}

/** Why this node serves no requests now (it is starting or stopping), or undefined when it does. */
export function notServing(broker: Pick<ServiceBroker, "started" | "stopping">): Error | undefined {
	if (broker.stopping) return unavailable("Mint is shutting down, try again shortly");
	if (!broker.started) return unavailable("Mint is starting, try again shortly", 2);
	return undefined;
}

/**
 * Just before the call: the action's params (body or query, plus path
 * params; never both merged), the cookies, the client IP and idempotency key
 * as meta, and the refresh token from its cookie for the actions that use it.
 */
export function prepareCall(ctx: GatewayContext, req: RoutedReq): void {
	const params = actionParams(req, req.method ?? "GET");
	// moleculer-web calls the action with this very object: replace its contents.
	const target = req.$params;
	for (const key of Object.keys(target)) delete target[key];
	Object.assign(target, params);
	const cookies = cookiesOf(req);
	req.$cookies = cookies;
	ctx.meta.clientIp = req.$clientIp;
	const action = req.$action?.name ?? "";
	const idempotencyKey = req.headers["idempotency-key"];
	if (MONEY_SUBMITTING.has(action) && idempotencyKey !== undefined) {
		ctx.meta.idempotencyKey = Array.isArray(idempotencyKey) ? idempotencyKey.join(",") : idempotencyKey;
	}
	if (USES_REFRESH_COOKIE.has(action)) {
		const refreshToken = cookies[REFRESH_COOKIE];
		if (refreshToken) target.refreshToken = refreshToken;
		else if (action === "auth.refresh") throw unauthorized("No session");
	}
}
