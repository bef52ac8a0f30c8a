/**
 * The gateway's cached reads (services/api/cached-reads.ts) on their own:
 * which requests are one, and that anything short of a hit on a serving node
 * writes nothing, leaving the request to moleculer-web. Their answers through
 * a whole Mint: test/http/cache.http.test.ts (and test/cluster/cache.test.ts).
 */
import { METRIC, type ServiceBroker } from "moleculer";
import { WALLET_MINE_CACHE } from "../../contracts/gateway";
import { answerFromCache, cachedReadOf, type CachedReadDeps } from "../../services/api/cached-reads";
import type { Req, Res } from "../../services/api/http";

const req = (method: string, url: string, headers: Record<string, string> = {}) => ({ method, url, headers }) as unknown as Req;

describe("cachedReadOf", () => {
	it("is GET /api/v1/wallet/user, as moleculer-web matches its alias, with no body", () => {
		for (const url of ["/api/v1/wallet/user", "/API/V1/WALLET/USER", "/api/v1/wallet/user/", "/api/v1/wallet/user?x=1", "/api/v1/wallet/user/?a"]) {
			expect(cachedReadOf(req("GET", url))).toEqual({ action: "wallet.mine", cache: WALLET_MINE_CACHE });
		}
		expect(cachedReadOf(req("GET", "/api/v1/wallet/user", { "content-length": "0" }))?.action).toBe("wallet.mine");
	});

	it("is nothing else: another method or path, a body", () => {
		for (const [method, url] of [
			["POST", "/api/v1/wallet/user"],
			["HEAD", "/api/v1/wallet/user"],
			["GET", "/api/v1/wallet/users"],
			["GET", "/api/v1/wallet/user//"],
			["GET", "/wallet/user"],
			["GET", "/api/v1/wallet/stream"],
		]) {
			expect(cachedReadOf(req(method, url))).toBeUndefined();
		}
		expect(cachedReadOf(req("GET", "/api/v1/wallet/user", { "content-length": "2" }))).toBeUndefined();
		expect(cachedReadOf(req("GET", "/api/v1/wallet/user", { "transfer-encoding": "chunked" }))).toBeUndefined();
	});
});

describe("answerFromCache", () => {
	const read = { action: "wallet.mine", cache: WALLET_MINE_CACHE };
	const caller = { id: "u1", sid: "s1" };

	function setup(opts: { started?: boolean; stopping?: boolean; session?: () => Promise<unknown>; peek?: () => Promise<unknown> }) {
		const written: { headers: Record<string, unknown>; body?: string; status?: number } = { headers: {} };
		const res = {
			statusCode: 0,
			setHeader: (name: string, value: unknown) => (written.headers[name] = value),
			end(this: { statusCode: number }, body: string) {
				written.body = body;
				written.status = this.statusCode;
			},
		} as unknown as Res;
		const counted: [string, unknown][] = [];
		const peek = jest.fn(opts.peek ?? (() => Promise.resolve({ value: { balance: 1.5 } })));
		const broker = {
			started: opts.started ?? true,
			stopping: opts.stopping ?? false,
			cacher: { peek },
			metrics: { timer: () => () => 0, increment: (name: string, labels: unknown) => counted.push([name, labels]) },
		} as unknown as ServiceBroker;
		const begun: Req[] = [];
		const deps: CachedReadDeps = {
			broker,
			sessions: { accessSession: jest.fn(opts.session ?? (() => Promise.resolve({ caller, accessExpiresAt: Date.now() + 60_000 }))) } as never,
			serviceName: "api",
			beginRequest: r => void begun.push(r),
		};
		return { res, written, counted, peek, deps, begun };
	}

	it("a hit: written as moleculer-web writes an object, counted as an api.rest request, the access log begun with the path within the route", async () => {
		const { res, written, counted, peek, deps, begun } = setup({});
		const request = req("GET", "/api/v1/wallet/user?x=1");
		expect(await answerFromCache(deps, read, request, res)).toBe(true);
		expect(peek).toHaveBeenCalledWith("wallet.mine", WALLET_MINE_CACHE, { meta: { user: caller }, params: {} }, false);
		expect(written).toEqual({ status: 200, headers: { "Content-Type": "application/json; charset=utf-8" }, body: '{"balance":1.5}' });
		expect(counted).toEqual([[METRIC.MOLECULER_REQUEST_TOTAL, { service: "api", action: "api.rest", caller: null, type: "local" }]]);
		expect(begun).toEqual([request]);
		expect(request.url).toBe("/wallet/user?x=1");
	});

	it.each([
		["the node is starting", { started: false }],
		["the node is stopping", { stopping: true }],
		["no valid access token", { session: () => Promise.resolve(null) }],
		["the session cannot be checked", { session: () => Promise.reject(new Error("revocations not loaded")) }],
		["a miss", { peek: () => Promise.resolve(undefined) }],
	])("%s: nothing written, nothing counted, the request left as it came", async (_why, opts) => {
		const { res, written, counted, deps, begun } = setup(opts);
		const request = req("GET", "/api/v1/wallet/user");
		expect(await answerFromCache(deps, read, request, res)).toBe(false);
		expect([written, counted, begun, request.url]).toEqual([{ headers: {} }, [], [], "/api/v1/wallet/user"]);
	});
});
