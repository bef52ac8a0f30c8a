/**
 * How the gateway shapes an action's answer and an error, without a broker:
 * the status codes, Location and Idempotent-Replayed, session cookies, the
 * literal `null`, and the one SPEC error answer with its log line and count.
 */
import type { GatewayContext, GatewayMeta } from "../../services/api/gateway";
import type { Req, Res, RoutedReq } from "../../services/api/http";
import { UNEXPECTED_ERRORS_METRIC, answerError, shapeResponse } from "../../services/api/responses";

const reqFor = (action: string) => ({ $action: { name: action }, $params: {}, $requestId: "req-1", headers: {} }) as unknown as RoutedReq;

/** A response that records what was set on it. */
function fakeRes(opts: { headersSent?: boolean } = {}) {
	const headers = new Map<string, unknown>();
	const res = {
		statusCode: 200,
		headersSent: opts.headersSent ?? false,
		body: undefined as string | undefined,
		getHeader: (name: string) => headers.get(name.toLowerCase()),
		setHeader: (name: string, value: unknown) => headers.set(name.toLowerCase(), value),
		end: jest.fn((body?: string): void => {
			res.body = body;
		}),
	};
	const setCookies = () => ((headers.get("set-cookie") as string[] | undefined) ?? []).map(c => c.split(";")[0]);
	return { res, asRes: res as unknown as Res, headers, setCookies };
}

function shape(action: string, data: unknown) {
	const meta: GatewayMeta = {};
	const { asRes, setCookies } = fakeRes();
	const body = shapeResponse({ meta } as GatewayContext, reqFor(action), asRes, data, true);
	return { body, meta, setCookies: setCookies() };
}

const USER = { id: "user-1", firstName: "Ada" };
const SESSION = { sessionId: "sid-1", accessToken: "access", accessExpiresAt: 2e9, refreshToken: "refresh", refreshExpiresAt: 2e9 };
const TRANSACTION = { id: "tx-1", status: "completed" };

describe("shapeResponse", () => {
	it("answers a signup 201 with Location, the user as the body and the session as cookies", () => {
		const { body, meta, setCookies } = shape("auth.signup", { user: USER, session: SESSION });
		expect(body).toEqual(USER);
		expect(meta).toEqual({ $statusCode: 201, $location: "/api/v1/auth/user" });
		expect(setCookies).toEqual(["access.token=access", "refresh.token=refresh"]);
	});

	it("answers a login or a refresh 200 with the user, never the tokens in the body", () => {
		for (const action of ["auth.login", "auth.refresh"]) {
			const { body, meta, setCookies } = shape(action, { user: USER, session: SESSION });
			expect(body).toEqual(USER);
			expect(meta.$statusCode).toBeUndefined();
			expect(setCookies).toHaveLength(2);
		}
	});

	it("answers a money submission 201 when final, 202 with where to poll while running, 200 on a replay", () => {
		const final = shape("transactions.topup", { transaction: TRANSACTION, replayed: false, final: true });
		expect([final.body, final.meta]).toEqual([TRANSACTION, { $statusCode: 201, $location: "/api/v1/transactions/tx-1" }]);

		const running = shape("transactions.transfer", { transaction: TRANSACTION, replayed: false, final: false });
		expect([running.body, running.meta]).toEqual([TRANSACTION, { $statusCode: 202, $responseHeaders: { Location: "/api/v1/transactions/tx-1" } }]);

		const replayed = shape("transactions.transfer", { transaction: TRANSACTION, replayed: true, final: true });
		expect([replayed.body, replayed.meta]).toEqual([TRANSACTION, { $statusCode: 200, $responseHeaders: { "Idempotent-Replayed": "true" } }]);
	});

	it("answers a logout 204 with no body and cleared cookies; a password reset clears them too", () => {
		const logout = shape("auth.logout", { ok: true });
		expect([logout.body, logout.meta.$statusCode, logout.setCookies]).toEqual([null, 204, ["access.token=", "refresh.token="]]);
		const reset = shape("auth.resetPassword", { ok: true });
		expect([reset.body, reset.meta.$statusCode, reset.setCookies]).toEqual([{ ok: true }, undefined, ["access.token=", "refresh.token="]]);
	});

	it("answers a forgotten-password request 202", () => {
		expect(shape("auth.forgotPassword", { ok: true }).meta.$statusCode).toBe(202);
	});

	it("sends a null answer as the literal JSON `null` (the v1 client shows its login page on it)", () => {
		const { body, meta } = shape("auth.me", null);
		expect(Buffer.isBuffer(body) && body.toString()).toBe("null");
		expect(meta.$responseType).toBe("application/json; charset=utf-8");
	});

	it("passes any other answer through untouched", () => {
		const wallet = { id: "w-1", balance: 10 };
		expect(shape("wallet.mine", wallet)).toEqual({ body: wallet, meta: {}, setCookies: [] });
	});
});

describe("answerError", () => {
	function answer(err: unknown, opts: { headersSent?: boolean } = {}) {
		const ops = { logger: { error: jest.fn(), warn: jest.fn() }, metrics: { increment: jest.fn() } };
		const out = fakeRes(opts);
		answerError({ $requestId: "req-1" } as Req, out.asRes, err, ops as never);
		return { ...out, ops };
	}

	it("answers an unexpected error a generic 500, logging it with the request id and counting it", () => {
		const err = new Error("EIO: disk on fire");
		const { res, headers, ops } = answer(err);
		expect([res.statusCode, JSON.parse(res.body!)]).toEqual([500, { error: { message: "Internal server error", status: 500 } }]);
		expect(headers.get("content-type")).toBe("application/json; charset=utf-8");
		expect(ops.logger.error).toHaveBeenCalledWith({ err, requestId: "req-1" }, "request failed unexpectedly");
		expect(ops.metrics.increment).toHaveBeenCalledWith(UNEXPECTED_ERRORS_METRIC.name);
	});

	it("warns once for a request not served (503), without counting it as unexpected", () => {
		const { res, headers, ops } = answer({ name: "MintError", code: 503, type: "SERVICE_UNAVAILABLE", message: "Mint is starting" });
		expect([res.statusCode, headers.get("retry-after")]).toEqual([503, "5"]);
		expect(ops.logger.warn).toHaveBeenCalledWith({ requestId: "req-1", status: 503, reason: "Mint is starting" }, "request not served");
		expect(ops.metrics.increment).not.toHaveBeenCalled();
	});

	it("logs nothing for a client error", () => {
		const { res, ops } = answer({ code: 404 });
		expect(res.statusCode).toBe(404);
		expect(ops.logger.error).not.toHaveBeenCalled();
		expect(ops.logger.warn).not.toHaveBeenCalled();
	});

	it("only ends a response whose headers are already sent", () => {
		const { res } = answer(new Error("late"), { headersSent: true });
		expect(res.statusCode).toBe(200);
		expect(res.end).toHaveBeenCalledWith();
	});
});
