/**
 * A request on its way out: an action's answer shaped for HTTP (session
 * cookies, status codes, Location and Idempotent-Replayed, the literal
 * `null`), and every error answered once in the SPEC format.
 */
import type { Logger, MetricRegistry } from "moleculer";
import type { SubmitResult } from "../../contracts/money";
import type { SessionResult } from "../../contracts/users";
import type { GatewayContext } from "./gateway";
import { appendSetCookie, clearedSessionCookies, sessionCookies, type Req, type Res, type RoutedReq } from "./http";
import { toHttpError } from "./http-errors";
import { MONEY_SUBMITTING, SESSION_ENDING, SESSION_ISSUING, SIGNUP_LOCATION, STATUS_BY_ACTION, transactionLocation } from "./routes";

/**
 * onAfterCall: what the client gets for an action's answer. Sessions become
 * cookies (the client gets the user), money submissions answer 201 final,
 * 202 still running (Location: where to poll), 200 an idempotent replay.
 */
export function shapeResponse(ctx: GatewayContext, req: RoutedReq, res: Res, data: unknown, secure: boolean): unknown {
	const action = req.$action?.name ?? "";
	if (STATUS_BY_ACTION[action]) ctx.meta.$statusCode = STATUS_BY_ACTION[action];
	if (action === "auth.signup") ctx.meta.$location = SIGNUP_LOCATION;
	if (SESSION_ISSUING.has(action)) {
		const { user, session } = data as SessionResult;
		appendSetCookie(res, sessionCookies(session, secure));
		return user;
	}
	if (MONEY_SUBMITTING.has(action)) {
		const { transaction, replayed, final } = data as SubmitResult;
		ctx.meta.$statusCode = replayed ? 200 : final ? 201 : 202;
		const location = transactionLocation(transaction.id);
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
}

/** Requests answered 500: counted, so an operator sees them without reading logs. */
export const UNEXPECTED_ERRORS_METRIC = {
	type: "counter",
	name: "mint.http.unexpected.errors.total",
	description: "Requests answered 500: an error nothing expected (its log line has the request id)",
} as const;

/** onError: every error, answered once in the SPEC format (api/http-errors.ts) and logged once when it is the server's. */
export function answerError(req: Req, res: Res, err: unknown, ops: { logger: Logger; metrics: MetricRegistry }): void {
	const http = toHttpError(err);
	if (http.status === 500) {
		// Unexpected: the client gets a generic message, the operator the error, its request id and a count.
		ops.logger.error({ err, requestId: req.$requestId }, "request failed unexpectedly");
		ops.metrics.increment(UNEXPECTED_ERRORS_METRIC.name);
	} else if (http.status >= 500) {
		ops.logger.warn({ requestId: req.$requestId, status: http.status, reason: (err as { message?: string })?.message }, "request not served");
	}
	if (res.headersSent) {
		res.end();
		return;
	}
	res.statusCode = http.status;
	for (const [name, value] of Object.entries(http.headers)) res.setHeader(name, value);
	res.setHeader("Content-Type", "application/json; charset=utf-8");
	res.end(JSON.stringify(http.body));
}
