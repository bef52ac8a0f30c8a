import { newPerson, signup, type Session } from "../helpers/http";
import { startTestMint, waitFor, type TestMint } from "../helpers/mint";
import { balanceOf, expectInvariants, topUp, transfer } from "../helpers/money";

let mint: TestMint;
let alice: Session;
let bob: Session;
beforeAll(async () => {
	mint = await startTestMint();
	alice = await signup(mint, newPerson({ email: "alice.money@example.com" }));
	bob = await signup(mint, newPerson({ email: "bob.money@example.com" }));
});
afterEach(() => expectInvariants(mint));
afterAll(() => mint.stop());

describe("top-ups", () => {
	it("answers 201 with the completed transaction, and the wallet already shows it", async () => {
		const before = await balanceOf(mint, alice);
		const res = await topUp(mint, alice, 12.5);
		expect(res.status).toBe(201);
		expect(res.body).toEqual({
			id: expect.any(String),
			type: "TopUp",
			status: "Completed",
			amount: 12.5,
			currency: "USD",
			userId: alice.user.id,
			createdAt: expect.any(String),
			updatedAt: expect.any(String),
		});
		expect(await balanceOf(mint, alice)).toBe(before + 12.5);
	});

	it("adds 0.1 and 0.2 to exactly 0.3 (integer cents inside)", async () => {
		const session = await signup(mint);
		await topUp(mint, session, 0.1);
		await topUp(mint, session, 0.2);
		expect(await balanceOf(mint, session)).toBe(0.3);
		await topUp(mint, session, 1.01);
		await topUp(mint, session, 99.99);
		expect(await balanceOf(mint, session)).toBe(101.3);
	});

	it("records its history Pending -> Processing -> Completed, oldest first", async () => {
		const res = await topUp(mint, alice, 3);
		const history = await mint.http.get(`/api/v1/transactions/${res.body.id}/history`).set("Cookie", alice.cookie);
		expect(history.status).toBe(200);
		expect(history.body.map((h: any) => h.status)).toEqual(["Pending", "Processing", "Completed"]);
		const times = history.body.map((h: any) => Date.parse(h.at));
		expect([...times].sort((a, b) => a - b)).toEqual(times);
	});

	it("emits transaction.created, processing and completed", async () => {
		const res = await topUp(mint, alice, 4);
		const seen = await waitFor(() => {
			const names = mint.events.filter(e => e.name.startsWith("transaction.") && e.params.transactionId === res.body.id).map(e => e.name);
			return names.length === 3 ? names : undefined;
		});
		expect(seen).toEqual(["transaction.created", "transaction.processing", "transaction.completed"]);
	});
});

describe("bad amounts move nothing", () => {
	const cases: [string, unknown][] = [
		["zero", 0],
		["a negative amount", -5],
		["three decimals", 10.001],
		["a string", "10"],
		["null", null],
		["NaN as text", "NaN"],
		["Infinity as text", "Infinity"],
		["an array", [10]],
		["an object", { value: 10 }],
		["a boolean", true],
		["over the top-up limit", 100000.01],
		["a huge value", 1e21],
	];
	it.each(cases)("%s -> 400", async (_name, amount) => {
		const before = await balanceOf(mint, alice);
		const res = await topUp(mint, alice, amount);
		expect(res.status).toBe(400);
		expect(res.body.error.details.map((d: any) => d.path)).toContain("amount");
		expect(await balanceOf(mint, alice)).toBe(before);
	});

	it("1e309 in the JSON text -> 400", async () => {
		const res = await mint.http
			.post("/api/v1/transactions/topup")
			.set("Cookie", alice.cookie)
			.set("Content-Type", "application/json")
			.send('{"amount": 1e309}');
		expect(res.status).toBe(400);
	});

	it("a missing amount or an extra field -> 400", async () => {
		expect((await mint.http.post("/api/v1/transactions/topup").set("Cookie", alice.cookie).send({})).status).toBe(400);
		expect((await mint.http.post("/api/v1/transactions/topup").set("Cookie", alice.cookie).send({ amount: 1, currency: "EUR" })).status).toBe(400);
	});

	it("accepts exactly the limit", async () => {
		const res = await topUp(mint, await signup(mint), 100000);
		expect(res.status).toBe(201);
	});
});

describe("transfers", () => {
	it("moves money from sender to recipient: 201 Completed, both balances updated at once", async () => {
		const sender = await signup(mint);
		const recipient = await signup(mint);
		await topUp(mint, sender, 100);
		const res = await transfer(mint, sender, 30.25, recipient.user.id);
		expect(res.status).toBe(201);
		expect(res.body).toMatchObject({
			type: "Transfer",
			status: "Completed",
			amount: 30.25,
			fromUserId: sender.user.id,
			toUserId: recipient.user.id,
			currency: "USD",
		});
		expect(await balanceOf(mint, sender)).toBe(69.75);
		expect(await balanceOf(mint, recipient)).toBe(30.25);
		const seenByRecipient = await mint.http.get(`/api/v1/transactions/${res.body.id}`).set("Cookie", recipient.cookie);
		expect(seenByRecipient.status).toBe(200);
	});

	it("refuses insufficient funds at request time with 422 and moves nothing", async () => {
		const sender = await signup(mint);
		await topUp(mint, sender, 5);
		const res = await transfer(mint, sender, 5.01, bob.user.id);
		expect(res.status).toBe(422);
		expect(res.body).toEqual({ error: { message: "Insufficient funds", status: 422 } });
		expect(await balanceOf(mint, sender)).toBe(5);
	});

	it.each([
		["to yourself", (s: Session) => s.user.id, 400],
		["to an unknown user", () => "00000000-0000-4000-8000-000000000000", 404],
		["to a malformed id", () => "../../etc/passwd", 400],
		["to an id that is not a UUID", () => "not-a-user-id", 400],
		["to a numeric id", () => 42, 400],
	])("refuses a transfer %s", async (_name, to, status) => {
		const sender = await signup(mint);
		await topUp(mint, sender, 10);
		const res = await transfer(mint, sender, 1, to(sender));
		expect(res.status).toBe(status);
		expect(await balanceOf(mint, sender)).toBe(10);
	});

	it("refuses amounts over the transfer limit", async () => {
		const res = await transfer(mint, alice, 50000.01, bob.user.id);
		expect(res.status).toBe(400);
	});
});

describe("Idempotency-Key", () => {
	it("replays the same request: 200, Idempotent-Replayed, the same transaction, money moved once", async () => {
		const session = await signup(mint);
		const first = await topUp(mint, session, 7, "key-replay-1");
		expect(first.status).toBe(201);
		const again = await topUp(mint, session, 7, "key-replay-1");
		expect(again.status).toBe(200);
		expect(again.headers["idempotent-replayed"]).toBe("true");
		expect(again.body).toEqual(first.body);
		expect(await balanceOf(mint, session)).toBe(7);
	});

	it("answers 422 for the same key with another body", async () => {
		const session = await signup(mint);
		await topUp(mint, session, 7, "key-other-body");
		const res = await topUp(mint, session, 8, "key-other-body");
		expect(res.status).toBe(422);
		expect(await balanceOf(mint, session)).toBe(7);
	});

	it("is scoped to the user: another user's same key is a new transaction", async () => {
		const a = await signup(mint);
		const b = await signup(mint);
		const ra = await topUp(mint, a, 2, "shared-key");
		const rb = await topUp(mint, b, 2, "shared-key");
		expect(rb.status).toBe(201);
		expect(rb.body.id).not.toBe(ra.body.id);
	});

	it("moves money once when the same key is sent 20 times at once", async () => {
		const sender = await signup(mint);
		const recipient = await signup(mint);
		await topUp(mint, sender, 50);
		const results = await Promise.all(Array.from({ length: 20 }, () => transfer(mint, sender, 10, recipient.user.id, "race-key-20")));
		const ids = new Set(results.map(r => r.body.id));
		expect(ids.size).toBe(1);
		expect(results.filter(r => r.status === 201)).toHaveLength(1);
		expect(results.filter(r => r.status === 200 && r.headers["idempotent-replayed"] === "true")).toHaveLength(19);
		expect(await balanceOf(mint, sender)).toBe(40);
		expect(await balanceOf(mint, recipient)).toBe(10);
		const list = await mint.http.get("/api/v1/transactions?type=Transfer").set("Cookie", sender.cookie);
		expect(list.body.total).toBe(1);
	});

	it.each([
		["empty", ""],
		["too long", "k".repeat(256)],
		["non-printable (a tab)", "key\twith-tab"],
		["non-ASCII", "kéy"],
	])("refuses an %s key with 400 and moves nothing", async (_name, key) => {
		const session = await signup(mint);
		const res = await mint.http.post("/api/v1/transactions/topup").set("Cookie", session.cookie).set("Idempotency-Key", key).send({ amount: 1 });
		expect(res.status).toBe(400);
		expect(await balanceOf(mint, session)).toBe(0);
	});
});

describe("GET /transactions", () => {
	it("lists only the caller's transactions, newest first, with total, limit, offset and filters", async () => {
		const me = await signup(mint);
		const other = await signup(mint);
		await topUp(mint, me, 10);
		await topUp(mint, other, 10);
		await transfer(mint, me, 1, other.user.id);
		await transfer(mint, other, 2, me.user.id);
		const all = await mint.http.get("/api/v1/transactions").set("Cookie", me.cookie);
		expect(all.status).toBe(200);
		expect(all.body.total).toBe(3);
		expect(all.body.limit).toBe(20);
		expect(all.body.offset).toBe(0);
		expect(all.body.transactions.map((t: any) => [t.type, t.amount])).toEqual([
			["Transfer", 2],
			["Transfer", 1],
			["TopUp", 10],
		]);
		const slash = await mint.http.get("/api/v1/transactions/").set("Cookie", me.cookie);
		expect(slash.body.total).toBe(3);
		const page = await mint.http.get("/api/v1/transactions?limit=1&offset=1").set("Cookie", me.cookie);
		expect(page.body.transactions.map((t: any) => t.amount)).toEqual([1]);
		const topUps = await mint.http.get("/api/v1/transactions?type=TopUp&status=Completed").set("Cookie", me.cookie);
		expect(topUps.body.total).toBe(1);
		expect((await mint.http.get("/api/v1/transactions?limit=101").set("Cookie", me.cookie)).status).toBe(400);
		expect((await mint.http.get("/api/v1/transactions?type=Refund").set("Cookie", me.cookie)).status).toBe(400);
	});

	it("answers 404 for someone else's transaction and its history", async () => {
		const owner = await signup(mint);
		const stranger = await signup(mint);
		const res = await topUp(mint, owner, 1);
		expect((await mint.http.get(`/api/v1/transactions/${res.body.id}`).set("Cookie", stranger.cookie)).status).toBe(404);
		expect((await mint.http.get(`/api/v1/transactions/${res.body.id}/history`).set("Cookie", stranger.cookie)).status).toBe(404);
		expect((await mint.http.get(`/api/v1/transactions/${res.body.id}`)).status).toBe(401);
	});
});

describe("when processing outlasts TX_SYNC_WAIT_MS", () => {
	it("answers 202 with the current state, and the client can poll to Completed", async () => {
		const slowWallet = {
			localAction(next: any, action: any) {
				if (action.name !== "wallet.credit") return next;
				return async (ctx: any) => {
					await new Promise(r => setTimeout(r, 300));
					return next(ctx);
				};
			},
		};
		const slow = await startTestMint({ TX_SYNC_WAIT_MS: "50" }, [slowWallet]);
		try {
			const session = await signup(slow);
			const res = await topUp(slow, session, 9.99);
			expect(res.status).toBe(202);
			expect(res.body.status).toBe("Processing");
			expect(res.headers.location).toBe(`/api/v1/transactions/${res.body.id}`);
			const done = await waitFor(async () => {
				const poll = await slow.http.get(`/api/v1/transactions/${res.body.id}`).set("Cookie", session.cookie);
				return poll.body.status === "Completed" ? poll.body : undefined;
			}, 5000);
			expect(done.amount).toBe(9.99);
			expect(await balanceOf(slow, session)).toBe(9.99);
			await expectInvariants(slow);
		} finally {
			await slow.stop();
		}
	});
});

describe("concurrent transfers through the gateway", () => {
	it("100 at once among 5 users, three of them overdrawing: balances conserved, none negative", async () => {
		const users: Session[] = [];
		for (let i = 0; i < 5; i++) {
			const user = await signup(mint);
			expect((await topUp(mint, user, 20)).status).toBe(201);
			users.push(user);
		}
		// Three senders of 20 each try to send about 150 to two who never send: each overdraws, however fast the others are served.
		const results = await Promise.all(Array.from({ length: 100 }, (_, i) => transfer(mint, users[i % 3], 3 + (i % 4), users[3 + (i % 2)].user.id)));
		const statuses = results.map(r => (r.status === 201 ? r.body.status : r.status));
		expect(statuses.every(s => ["Completed", "Failed", 422].includes(s))).toBe(true);
		expect(statuses.filter(s => s === "Completed").length).toBeGreaterThan(5);
		expect(statuses.filter(s => s !== "Completed").length).toBeGreaterThan(5);
		const balances = await Promise.all(users.map(u => balanceOf(mint, u)));
		expect(balances.every(b => b >= 0)).toBe(true);
		expect(Math.round(balances.reduce((a, b) => a + b, 0) * 100)).toBe(100 * 100);
	});
});
