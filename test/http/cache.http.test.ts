/**
 * The cache on the embedded default (one process, memory cacher): the reads
 * that dominate are served from it, every change invalidates exactly what it
 * affects before it is answered, and hits and misses are counted per action.
 */
import type { ServiceBroker } from "moleculer";
import { checkEvent } from "../../lib/events";
import { CACHE_LOOKUPS_METRIC } from "../../lib/cacher";
import { signup, type Session } from "../helpers/http";
import { startTestMint, waitFor, type TestMint } from "../helpers/mint";
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

let mint: TestMint;
const userUpdates: Record<string, unknown>[] = [];
beforeAll(async () => {
	mint = await startTestMint();
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
