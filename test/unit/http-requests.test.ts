/**
 * A request on its way in, without a broker: the action's params and meta
 * just before the call, and the 503 while the node starts or stops.
 */
import type { GatewayContext, GatewayMeta } from "../../services/api/gateway";
import type { Req, Res, RoutedReq } from "../../services/api/http";
import { prepareCall, whileStarting } from "../../services/api/requests";

function routedReq(opts: { method?: string; action: string; headers?: Record<string, string | string[]>; $params?: Record<string, unknown> }): RoutedReq {
	return {
		method: opts.method ?? "POST",
		headers: opts.headers ?? {},
		$action: { name: opts.action },
		$params: opts.$params ?? {},
		$clientIp: "198.51.100.7",
	} as unknown as RoutedReq;
}

function prepare(req: RoutedReq) {
	const meta: GatewayMeta = {};
	prepareCall({ meta } as GatewayContext, req);
	return meta;
}

describe("prepareCall", () => {
	it("replaces moleculer-web's params in place: body and path params, never the query", () => {
		const $params = { body: { amount: 5, id: "from-body" }, query: { amount: 999 }, params: { id: "from-path" } };
		const req = routedReq({ action: "transactions.topup", $params });
		const meta = prepare(req);
		expect(req.$params).toBe($params);
		expect(req.$params).toEqual({ amount: 5, id: "from-path" });
		expect(meta).toEqual({ clientIp: "198.51.100.7" });
	});

	it("passes the Idempotency-Key of a money submission as meta, and of nothing else", () => {
		expect(prepare(routedReq({ action: "transactions.transfer", headers: { "idempotency-key": "k-1" } })).idempotencyKey).toBe("k-1");
		expect(prepare(routedReq({ action: "transactions.topup", headers: { "idempotency-key": ["a", "b"] } })).idempotencyKey).toBe("a,b");
		expect(prepare(routedReq({ action: "auth.updateMe", headers: { "idempotency-key": "k-1" } })).idempotencyKey).toBeUndefined();
	});

	it("hands auth.refresh and auth.logout the refresh cookie's token, whatever the body says", () => {
		for (const action of ["auth.refresh", "auth.logout"]) {
			const req = routedReq({ action, headers: { cookie: "refresh.token=from-cookie" }, $params: { body: { refreshToken: "from-body" } } });
			prepare(req);
			expect(req.$params.refreshToken).toBe("from-cookie");
			expect(req.$cookies).toEqual({ "refresh.token": "from-cookie" });
		}
	});

	it("refuses a refresh without the refresh cookie (401), and lets a logout without it through", () => {
		expect(() => prepare(routedReq({ action: "auth.refresh" }))).toThrow(expect.objectContaining({ code: 401, message: "No session" }));
		expect(() => prepare(routedReq({ action: "auth.logout" }))).not.toThrow();
	});
});

describe("whileStarting", () => {
	function run(broker: { started: boolean; stopping: boolean }, parsedUrl: string) {
		const next = jest.fn();
		whileStarting.call({ broker }, { parsedUrl } as Req & { parsedUrl: string }, {} as Res, next);
		return next.mock.calls[0][0] as { code?: number; message?: string; data?: { retryAfter?: number } } | undefined;
	}

	it("answers 503 while the node starts (retry in 2 s) or stops, except liveness and readiness", () => {
		const starting = { started: false, stopping: false };
		expect(run(starting, "/api/v1/wallet/user")).toMatchObject({ code: 503, message: "Mint is starting, try again shortly", data: { retryAfter: 2 } });
		expect(run({ started: true, stopping: true }, "/api/v1/auth/login")).toMatchObject({ code: 503, message: "Mint is shutting down, try again shortly" });
		for (const path of ["/health", "/ready", "/api/v1/health", "/api/v1/ready"]) expect(run(starting, path)).toBeUndefined();
	});

	it("lets every request through once the node has started", () => {
		expect(run({ started: true, stopping: false }, "/api/v1/wallet/user")).toBeUndefined();
	});
});
