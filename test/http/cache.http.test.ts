/**
 * The cache on the embedded default (one process, memory cacher): the reads
 * that dominate are served from it, every change invalidates exactly what it
 * affects before it is answered, and hits and misses are counted per action.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { ServiceBroker } from "moleculer";
import { checkEvent } from "../../lib/events";
import { CACHE_LOOKUPS_METRIC } from "../../lib/cacher";
import { signup, type Session } from "../helpers/http";
import { actionRuns, startTestMint, waitFor, type TestMint } from "../helpers/mint";
import { topUp, transfer } from "../helpers/money";

type Result = "hit" | "miss" | "unavailable";

/** How many lookups of this action had this result, so far. */
function lookups(broker: ServiceBroker, action: string, result: Result): number {
	return (broker.metrics.getMetric(CACHE_LOOKUPS_METRIC)?.get({ action, result }) as { value?: number } | null)?.value ?? 0;
}

/** What a block of reads did to one action's counts. */
async function countsOf(broker: ServiceBroker, action: string, reads: () => Promise<unknown>): Promise<Record<Result, number>> {
	const before = { hit: lookups(broker, action, "hit"), miss: lookups(broker, action, "miss"), unavailable: lookups(broker, action, "unavailable") };
	await reads();
	return {
		hit: lookups(broker, action, "hit") - before.hit,
		miss: lookups(broker, action, "miss") - before.miss,
		unavailable: lookups(broker, action, "unavailable") - before.unavailable,
	};
}

const ORIGIN = "https://app.example.com";
let mint: TestMint;
const userUpdates: Record<string, unknown>[] = [];
beforeAll(async () => {
	mint = await startTestMint({ ALLOWED_ORIGINS: ORIGIN });
	// The helper's recorder predates user.updated: record it here (a broadcast reaches every subscriber).
	await mint.broker.createService({
		name: "user-updates",
		events: { "user.updated": (ctx: { params: Record<string, unknown> }) => void userUpdates.push(ctx.params) },
	});
});
afterAll(() => mint.stop());

const wallet = (s: Session) => mint.http.get("/api/v1/wallet/user").set("Cookie", s.cookie);
const me = (s: Session) => mint.http.get("/api/v1/auth/user").set("Cookie", s.cookie);

describe("GET /wallet/user through the cache", () => {
	it("is a hit when nothing changed, and shows a transfer's balances right after its 201 while another user's entry stays cached", async () => {
		const [alice, bob, carol] = [await signup(mint), await signup(mint), await signup(mint)];
		expect((await topUp(mint, alice, 50)).status).toBe(201);
		const filled = await countsOf(mint.broker, "wallet.mine", async () => {
			for (const s of [alice, bob, carol]) expect((await wallet(s)).status).toBe(200);
		});
		expect(filled).toEqual({ hit: 0, miss: 3, unavailable: 0 });
		const again = await countsOf(mint.broker, "wallet.mine", async () => {
			expect((await wallet(alice)).body.balance).toBe(50);
			expect((await wallet(carol)).body.balance).toBe(0);
		});
		expect(again).toEqual({ hit: 2, miss: 0, unavailable: 0 });

		const sent = await transfer(mint, alice, 12.5, bob.user.id);
		expect([sent.status, sent.body.status]).toEqual([201, "Completed"]);

		expect(await countsOf(mint.broker, "wallet.mine", async () => expect((await wallet(carol)).body.balance).toBe(0))).toMatchObject({ hit: 1, miss: 0 });
		expect(await countsOf(mint.broker, "wallet.mine", async () => expect((await wallet(alice)).body.balance).toBe(37.5))).toMatchObject({ hit: 0, miss: 1 });
		expect(await countsOf(mint.broker, "wallet.mine", async () => expect((await wallet(bob)).body.balance).toBe(12.5))).toMatchObject({ hit: 0, miss: 1 });
		// And cached again.
		expect(await countsOf(mint.broker, "wallet.mine", async () => expect((await wallet(alice)).body.balance).toBe(37.5))).toMatchObject({ hit: 1 });
	});

	it("a query string is not a new entry of an action without params", async () => {
		const dave = await signup(mint);
		await wallet(dave);
		const counts = await countsOf(mint.broker, "wallet.mine", async () => {
			for (const q of ["a=1", "b=2", "_=3"]) expect((await mint.http.get(`/api/v1/wallet/user?${q}`).set("Cookie", dave.cookie)).status).toBe(200);
		});
		expect(counts).toEqual({ hit: 3, miss: 0, unavailable: 0 });
	});
});

describe("GET /wallet/user answered by the gateway on a hit (api/cached-reads.ts)", () => {
	const bearer = (s: Session) => mint.http.get("/api/v1/wallet/user").set("Authorization", `Bearer ${s.access}`);
	/** A response's headers but those that differ between any two answers. */
	const comparable = (headers: Record<string, string>) => {
		const { date: _date, "x-request-id": _id, ...rest } = headers;
		return rest;
	};

	it("without calling wallet.mine: the status, headers and body the action's answer had, and one access-log line", async () => {
		const alice = await signup(mint);
		expect((await topUp(mint, alice, 20)).status).toBe(201);
		const api = mint.broker.getLocalService("api") as unknown as { logger: { info: (...args: unknown[]) => void } };
		const logged = jest.spyOn(api.logger, "info");
		try {
			const before = { wallet: actionRuns(mint.broker, "wallet.mine"), rest: actionRuns(mint.broker, "api.rest") };
			const whole = await bearer(alice).set("Origin", ORIGIN);
			expect(actionRuns(mint.broker, "wallet.mine")).toBe(before.wallet + 1);
			const hits = lookups(mint.broker, "wallet.mine", "hit");
			const answered = await bearer(alice).set("Origin", ORIGIN);
			expect(actionRuns(mint.broker, "wallet.mine")).toBe(before.wallet + 1);
			expect(lookups(mint.broker, "wallet.mine", "hit")).toBe(hits + 1);
			// Both counted as the gateway's requests, as the dashboards and the error-rate alert count them.
			expect(actionRuns(mint.broker, "api.rest")).toBe(before.rest + 2);

			expect([answered.status, answered.body]).toEqual([200, whole.body]);
			expect(answered.body.balance).toBe(20);
			expect(answered.text).toBe(whole.text);
			expect(comparable(answered.headers)).toEqual(comparable(whole.headers));
			expect(answered.headers["access-control-allow-origin"]).toBe(ORIGIN);
			expect(answered.headers["x-request-id"]).toMatch(/^[0-9a-f-]{36}$/);
			expect(answered.headers["x-request-id"]).not.toBe(whole.headers["x-request-id"]);
			const lines = logged.mock.calls.filter(call => call[1] === "http request").map(call => call[0] as { requestId: string; status: number; path: string });
			expect(lines.map(l => [l.requestId, l.status, l.path])).toEqual([
				// The path within the route, as moleculer-web leaves it for the line (README, Logs).
				[whole.headers["x-request-id"], 200, "/wallet/user"],
				[answered.headers["x-request-id"], 200, "/wallet/user"],
			]);
		} finally {
			logged.mockRestore();
		}
	});

	it("by its cookie too, in any case and with a trailing slash or a query string; a body, a HEAD or another path takes the whole way", async () => {
		const bob = await signup(mint);
		expect((await wallet(bob)).status).toBe(200);
		const wholeWay = async (send: () => Promise<{ status: number }>) => {
			const before = actionRuns(mint.broker, "wallet.mine");
			const res = await send();
			return { status: res.status, wholeWay: actionRuns(mint.broker, "wallet.mine") - before };
		};
		for (const path of ["/api/v1/wallet/user", "/API/v1/Wallet/User", "/api/v1/wallet/user/", "/api/v1/wallet/user?x=1"]) {
			expect(await wholeWay(() => mint.http.get(path).set("Cookie", bob.cookie))).toEqual({ status: 200, wholeWay: 0 });
		}
		expect(await wholeWay(() => mint.http.get("/api/v1/wallet/user").set("Cookie", bob.cookie).set("Content-Type", "application/json").send("{}"))).toEqual({
			status: 200,
			wholeWay: 1,
		});
		// HEAD is no alias of moleculer-web's: not found, as before.
		expect(await wholeWay(() => mint.http.head("/api/v1/wallet/user").set("Cookie", bob.cookie))).toEqual({ status: 404, wholeWay: 0 });
		expect(await wholeWay(() => mint.http.get("/wallet/user").set("Cookie", bob.cookie))).toEqual({ status: 404, wholeWay: 0 });
	});

	it("an invalid or revoked access token is never answered from the cache: a silent refresh, or a 401, the whole way", async () => {
		const carol = await signup(mint);
		expect((await bearer(carol)).status).toBe(200);
		expect((await bearer(carol)).status).toBe(200);
		// A bad access cookie beside a good refresh cookie: refreshed silently (new cookies), the balance answered.
		const refreshed = await mint.http.get("/api/v1/wallet/user").set("Cookie", `access.token=${carol.access}x; refresh.token=${carol.refresh}`);
		expect(refreshed.status).toBe(200);
		expect(refreshed.body.balance).toBe(0);
		expect(String(refreshed.headers["set-cookie"])).toContain("access.token=");
		// Logged out: the session is revoked, its still-unexpired access token refused though its wallet is cached.
		expect((await mint.http.post("/api/v1/auth/logout").set("Authorization", `Bearer ${carol.access}`)).status).toBe(204);
		const refused = await bearer(carol);
		expect([refused.status, refused.body.error?.status]).toEqual([401, 401]);
		expect((await mint.http.get("/api/v1/wallet/user")).status).toBe(401);
	});
});

describe("with tracing on", () => {
	it("every GET /wallet/user takes the whole way, so that each one is traced: a hit is wallet.mine's own", async () => {
		const spans: { name: string; traceId: string }[] = [];
		const collector = http.createServer((req, res) => {
			let body = "";
			req.on("data", chunk => (body += chunk));
			req.on("end", () => {
				spans.push(...JSON.parse(body));
				res.writeHead(202).end();
			});
		});
		await new Promise<void>(resolve => collector.listen(0, "127.0.0.1", resolve));
		const traced = await startTestMint({ ZIPKIN_URL: `http://127.0.0.1:${(collector.address() as AddressInfo).port}` });
		try {
			const dan = await signup(traced);
			const read = () => traced.http.get("/api/v1/wallet/user").set("Authorization", `Bearer ${dan.access}`);
			expect((await read()).status).toBe(200);
			const before = { runs: actionRuns(traced.broker, "wallet.mine"), hits: lookups(traced.broker, "wallet.mine", "hit") };
			const hit = await read();
			expect(hit.status).toBe(200);
			expect([actionRuns(traced.broker, "wallet.mine"), lookups(traced.broker, "wallet.mine", "hit")]).toEqual([before.runs + 1, before.hits + 1]);
			const traceId = String(hit.headers["x-request-id"]).replaceAll("-", "");
			const names = await waitFor(() => {
				const ofHit = spans.filter(span => span.traceId === traceId).map(span => span.name);
				return ofHit.includes("action 'wallet.mine'") ? ofHit : undefined;
			}, 5000);
			expect(names.length).toBeGreaterThanOrEqual(2);
		} finally {
			await traced.stop();
			await new Promise(resolve => collector.close(resolve));
		}
	});
});

describe("transactions through the cache", () => {
	it("the list, a transaction and its history show a transfer right after its 201, for both parties", async () => {
		const [erin, frank] = [await signup(mint), await signup(mint)];
		const topped = await topUp(mint, erin, 20);
		const list = (s: Session, query = "") => mint.http.get(`/api/v1/transactions${query}`).set("Cookie", s.cookie);
		// Fill every entry the transfer must invalidate, and check they are hits.
		for (const read of [() => list(erin), () => list(erin, "?type=Transfer"), () => list(frank)]) await read();
		await mint.http.get(`/api/v1/transactions/${topped.body.id}/history`).set("Cookie", erin.cookie);
		const cached = await countsOf(mint.broker, "transactions.list", async () => {
			expect((await list(erin)).body.total).toBe(1);
			expect((await list(erin, "?type=Transfer")).body.total).toBe(0);
			expect((await list(frank)).body.total).toBe(0);
		});
		expect(cached).toMatchObject({ hit: 3, miss: 0 });

		const sent = await transfer(mint, erin, 5, frank.user.id);
		expect(sent.status).toBe(201);
		expect((await list(erin)).body.transactions.map((t: { id: string; status: string }) => [t.id, t.status])).toEqual([
			[sent.body.id, "Completed"],
			[topped.body.id, "Completed"],
		]);
		expect((await list(erin, "?type=Transfer")).body.total).toBe(1);
		expect((await list(frank)).body.transactions.map((t: { id: string }) => t.id)).toEqual([sent.body.id]);
		for (const party of [erin, frank]) {
			const history = await mint.http.get(`/api/v1/transactions/${sent.body.id}/history`).set("Cookie", party.cookie);
			expect(history.body.map((h: { status: string }) => h.status)).toEqual(["Pending", "Processing", "Completed"]);
			expect((await mint.http.get(`/api/v1/transactions/${sent.body.id}`).set("Cookie", party.cookie)).body.status).toBe("Completed");
		}
	});

	it("a hit never skips validation: an extra or invalid param is still refused", async () => {
		const gina = await signup(mint);
		expect((await mint.http.get("/api/v1/transactions?limit=5").set("Cookie", gina.cookie)).status).toBe(200);
		expect((await mint.http.get("/api/v1/transactions?limit=5").set("Cookie", gina.cookie)).status).toBe(200);
		expect((await mint.http.get("/api/v1/transactions?limit=5&extra=1").set("Cookie", gina.cookie)).status).toBe(400);
		expect((await mint.http.get("/api/v1/transactions?limit=500").set("Cookie", gina.cookie)).status).toBe(400);
	});

	it("another user's transaction is a 404, cached or not", async () => {
		const [hank, ivy] = [await signup(mint), await signup(mint)];
		const topped = await topUp(mint, hank, 1);
		expect((await mint.http.get(`/api/v1/transactions/${topped.body.id}`).set("Cookie", hank.cookie)).status).toBe(200);
		expect((await mint.http.get(`/api/v1/transactions/${topped.body.id}`).set("Cookie", hank.cookie)).status).toBe(200);
		expect((await mint.http.get(`/api/v1/transactions/${topped.body.id}`).set("Cookie", ivy.cookie)).status).toBe(404);
	});
});

describe("a transfer's recipient check through the cache", () => {
	it("asks auth.exists once per recipient: later transfers read its entry (callCached), and an unknown recipient is still a 404", async () => {
		const [lena, mo] = [await signup(mint), await signup(mint)];
		expect((await topUp(mint, lena, 5)).status).toBe(201);
		const runs = actionRuns(mint.broker, "auth.exists");
		const hits = lookups(mint.broker, "auth.exists", "hit");
		for (let i = 0; i < 3; i++) expect((await transfer(mint, lena, 1, mo.user.id)).status).toBe(201);
		expect([actionRuns(mint.broker, "auth.exists") - runs, lookups(mint.broker, "auth.exists", "hit") - hits]).toEqual([1, 2]);
		const unknown = "00000000-0000-4000-8000-000000000000";
		for (let i = 0; i < 2; i++) expect((await transfer(mint, lena, 1, unknown)).status).toBe(404);
		expect((await mint.http.get("/api/v1/wallet/user").set("Cookie", lena.cookie)).body.balance).toBe(2);
	});
});

describe("users through the cache", () => {
	it("PUT /users/me is seen at once by the owner and by others; a verification changes the own view at once", async () => {
		const [jack, kim] = [await signup(mint), await signup(mint)];
		const profile = () => mint.http.get(`/api/v1/users/${jack.user.id}`).set("Cookie", kim.cookie);
		await me(jack);
		await profile();
		expect(await countsOf(mint.broker, "auth.me", () => me(jack))).toMatchObject({ hit: 1 });
		expect(await countsOf(mint.broker, "auth.getUser", () => profile())).toMatchObject({ hit: 1 });

		const put = await mint.http.put("/api/v1/users/me").set("Cookie", jack.cookie).send({ firstName: "Jacques" });
		expect(put.status).toBe(200);
		expect((await me(jack)).body).toMatchObject({ firstName: "Jacques", updatedAt: put.body.updatedAt });
		expect((await profile()).body.firstName).toBe("Jacques");
		expect(userUpdates).toContainEqual(expect.objectContaining({ userId: jack.user.id, change: "profile" }));

		const token = (await waitFor(() => mint.events.find(e => e.name === "user.signedUp" && e.params.userId === jack.user.id))).params.verificationToken;
		expect((await me(jack)).body.emailVerifiedAt).toBeNull();
		expect((await mint.http.post("/api/v1/auth/verify-email").send({ token })).status).toBe(200);
		expect((await me(jack)).body.emailVerifiedAt).toEqual(expect.any(String));
	});

	it("user.updated is published for signup, profile, verification and reset, and meets its contract", async () => {
		const lena = await signup(mint);
		await mint.http.put("/api/v1/users/me").set("Cookie", lena.cookie).send({ lastName: "Other" });
		const verification = (await waitFor(() => mint.events.find(e => e.name === "user.signedUp" && e.params.userId === lena.user.id))).params;
		expect((await mint.http.post("/api/v1/auth/verify-email").send({ token: verification.verificationToken })).status).toBe(200);
		expect((await mint.http.post("/api/v1/auth/password/forgot").send({ email: lena.person.email })).status).toBe(202);
		const reset = (await waitFor(() => mint.events.find(e => e.name === "user.passwordResetRequested" && e.params.userId === lena.user.id))).params;
		const password = "a new password 123";
		expect((await mint.http.post("/api/v1/auth/password/reset").send({ token: reset.resetToken, password, passwordConfirm: password })).status).toBe(200);
		const changes = userUpdates.filter(e => e.userId === lena.user.id);
		expect(changes.map(e => e.change)).toEqual(["signedUp", "profile", "emailVerified", "password"]);
		for (const event of changes) expect(checkEvent("user.updated", event)).toBe(true);
		expect(checkEvent("user.updated", { ...changes[0], change: "deleted" })).not.toBe(true);
	});
});

describe("metrics", () => {
	it("hits and misses are counted per action, beside Moleculer's own cacher counters", async () => {
		const metric = mint.broker.metrics.getMetric(CACHE_LOOKUPS_METRIC);
		expect(metric?.labelNames).toEqual(["action", "result"]);
		const actions = new Set(metric!.snapshot().map((item: any) => item.labels.action as string));
		for (const action of ["wallet.mine", "transactions.list", "transactions.get", "transactions.history", "auth.me", "auth.getUser"])
			expect(actions).toContain(action);
		for (const name of ["moleculer.cacher.get.total", "moleculer.cacher.found.total", "moleculer.cacher.set.total", "moleculer.cacher.del.total"]) {
			expect(mint.broker.metrics.getMetric(name)).toBeTruthy();
		}
		expect((mint.broker.metrics.getMetric("moleculer.cacher.get.total")!.get() as { value: number }).value).toBeGreaterThan(0);
	});
});
