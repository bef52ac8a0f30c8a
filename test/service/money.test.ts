/** Money at service level: concurrency, retries after a timeout, crashes between steps, the sweeper. */
import { Errors } from "moleculer";
import { MOVEMENT_DIRECTIONS } from "../../contracts/money";
import { defineMiddleware } from "../../lib/middleware";
import { Ledger, type LedgerEntry } from "../../services/wallet/ledger";
import { startTestMint, waitFor, type TestMint } from "../helpers/mint";
import { newPerson, signup, type Session } from "../helpers/http";
import { expectInvariants } from "../helpers/money";

const as = (session: Session) => ({ meta: { user: { id: session.user.id, sid: "test" } } });

async function topUpMinor(mint: TestMint, session: Session, amount: number) {
	const result: any = await mint.broker.call("transactions.topup", { amount }, as(session));
	expect(result.transaction.status).toBe("Completed");
}

async function balancesMinor(mint: TestMint, sessions: Session[]): Promise<number[]> {
	return Promise.all(sessions.map(s => mint.broker.call<number, object>("wallet.balanceOf", { userId: s.user.id })));
}

/** What a crash leaves behind: a transaction in `status` whose lease has run out, nothing moved for it yet. */
async function insertAbandoned(mint: TestMint, tx: { _id: string; status: "Pending" | "Processing"; amountMinor: number } & Record<string, unknown>) {
	const now = new Date().toISOString();
	const history = [{ status: "Pending", at: now }, ...(tx.status === "Processing" ? [{ status: "Processing", at: now }] : [])];
	const requestedBy = (tx.userId ?? tx.fromUserId) as string;
	await (mint.broker.getLocalService("transactions") as any).adapter.insert({
		currency: "USD",
		requestedBy,
		requestHash: "x",
		leaseUntil: Date.now() - 1,
		history,
		createdAt: now,
		updatedAt: now,
		...tx,
	});
}

/** A transaction's ledger entries, found by their unique movement keys, with the direction each holds. */
async function entriesOf(mint: TestMint, txId: string) {
	const movement = { $in: MOVEMENT_DIRECTIONS.map(direction => Ledger.movementKey(txId, direction)) };
	const entries: LedgerEntry[] = await (mint.broker.getLocalService("wallet") as any).stores.entries.find({ query: { movement } });
	return entries.map(entry => ({ ...entry, ...Ledger.movementOf(entry) }));
}

describe("500 concurrent mixed transfers among 20 users, some overdrawing", () => {
	let mint: TestMint;
	beforeAll(async () => {
		mint = await startTestMint();
	});
	afterAll(() => mint.stop());

	it("keeps every invariant: money conserved, no negative balance, each movement once", async () => {
		const users: Session[] = [];
		for (let i = 0; i < 20; i++) users.push(await signup(mint, newPerson()));
		for (const [i, user] of users.entries()) await topUpMinor(mint, user, 10 + i); // 10..29 major units
		const totalBefore = (await balancesMinor(mint, users)).reduce((a, b) => a + b, 0);
		expect(totalBefore).toBe(39_000);

		// Deterministic pseudo-random amounts 0.01..15.00: many exceed what senders have left.
		let seed = 42;
		const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31);
		const outcomes = await Promise.all(
			Array.from({ length: 500 }, () => {
				const from = users[next() % 20];
				let to = users[next() % 20];
				if (to === from) to = users[(users.indexOf(from) + 1) % 20];
				const amount = ((next() % 1500) + 1) / 100;
				return mint.broker.call<any, object>("transactions.transfer", { amount, toUserId: to.user.id }, as(from)).then(
					r => r.transaction.status as string,
					(err: any) => `${err.code}:${err.message}`,
				);
			}),
		);
		const counts: Record<string, number> = {};
		for (const o of outcomes) counts[o] = (counts[o] ?? 0) + 1;
		// Everything either completed, failed for funds while processing, or was refused for funds at request time;
		// on a loaded machine some answer while still Processing (past TX_SYNC_WAIT_MS, a 202), and finish after.
		expect(Object.keys(counts).filter(k => !["Completed", "Failed", "422:Insufficient funds", "Processing", "Pending"].includes(k))).toEqual([]);
		expect(counts.Completed).toBeGreaterThan(50);
		expect((counts.Failed ?? 0) + (counts["422:Insufficient funds"] ?? 0)).toBeGreaterThan(10);
		const transactions = (mint.broker.getLocalService("transactions") as any).adapter;
		await waitFor(async () => ((await transactions.count({ query: { status: { $in: ["Pending", "Processing"] } } })) === 0 ? true : undefined), 30_000);

		const after = await balancesMinor(mint, users);
		expect(after.reduce((a, b) => a + b, 0)).toBe(totalBefore);
		expect(after.every(b => b >= 0)).toBe(true);
		const totals = await expectInvariants(mint);
		expect(totals.balancesMinor).toBe(39_000);
	}, 60_000);
});

describe("a wallet call that times out after the debit ran", () => {
	let mint: TestMint;
	const timedOut = new Set<string>();
	// Lets the debit happen, then reports a timeout the first time per transaction: the caller retries.
	const timeoutAfterDebit = defineMiddleware({
		localAction(next: any, action: any) {
			if (action.name !== "wallet.debit") return next;
			return async (ctx: any) => {
				const result = await next(ctx);
				if (!timedOut.has(ctx.params.txId)) {
					timedOut.add(ctx.params.txId);
					throw new Errors.RequestTimeoutError({ action: "wallet.debit", nodeID: ctx.nodeID });
				}
				return result;
			};
		},
	});
	beforeAll(async () => {
		mint = await startTestMint({}, [timeoutAfterDebit]);
	});
	afterAll(() => mint.stop());

	it("is retried and moves the money once", async () => {
		const sender = await signup(mint);
		const recipient = await signup(mint);
		await topUpMinor(mint, sender, 20);
		const result: any = await mint.broker.call("transactions.transfer", { amount: 5, toUserId: recipient.user.id }, as(sender));
		expect(timedOut.has(result.transaction.id)).toBe(true);
		expect(result.transaction.status).toBe("Completed");
		expect(await balancesMinor(mint, [sender, recipient])).toEqual([1500, 500]);
		const entries = await entriesOf(mint, result.transaction.id);
		expect(entries.map((e: any) => e.direction).sort()).toEqual(["credit", "debit"]);
		await expectInvariants(mint);
	});

	it("a repeated wallet call for a transaction already applied is a no-op", async () => {
		const sender = await signup(mint);
		const recipient = await signup(mint);
		await topUpMinor(mint, sender, 10);
		const result: any = await mint.broker.call("transactions.transfer", { amount: 4, toUserId: recipient.user.id }, as(sender));
		const txId = result.transaction.id;
		const debit: any = await mint.broker.call("wallet.debit", { userId: sender.user.id, txId, amountMinor: 400 });
		const credit: any = await mint.broker.call("wallet.credit", { userId: recipient.user.id, txId, amountMinor: 400 });
		expect([debit.outcome, credit.outcome]).toEqual(["already-applied", "already-applied"]);
		expect(await balancesMinor(mint, [sender, recipient])).toEqual([600, 400]);
		expect(await entriesOf(mint, txId)).toHaveLength(2);
		await expectInvariants(mint);
	});

	it("a duplicated transaction event moves nothing", async () => {
		const user = await signup(mint);
		await topUpMinor(mint, user, 3);
		const completed = await waitFor(() => mint.events.find(e => e.name === "transaction.completed" && e.params.userId === user.user.id));
		await mint.broker.emit("transaction.completed", completed.params);
		await mint.broker.emit("transaction.completed", completed.params);
		expect(await balancesMinor(mint, [user])).toEqual([300]);
		await expectInvariants(mint);
	});
});

describe("a crash between the debit and the credit", () => {
	let mint: TestMint;
	let crashes = 0;
	// The node "dies" right after the debit: the credit call never arrives, the transaction stays Processing.
	const dieBeforeCredit = defineMiddleware({
		localAction(next: any, action: any) {
			if (action.name !== "wallet.credit") return next;
			return async (ctx: any) => {
				if (ctx.params.direction === undefined && crashes === 0 && ctx.params.amountMinor === 777) {
					crashes++;
					throw new Errors.MoleculerError("node died", 500, "NODE_DIED");
				}
				return next(ctx);
			};
		},
	});
	beforeAll(async () => {
		mint = await startTestMint({ TX_STUCK_AFTER_MS: "300", TX_SWEEP_INTERVAL_MS: "100" }, [dieBeforeCredit]);
	});
	afterAll(() => mint.stop());

	it("is finished by the sweeper: forward to Completed, money moved once, invariants hold", async () => {
		const sender = await signup(mint);
		const recipient = await signup(mint);
		await topUpMinor(mint, sender, 10);
		const result: any = await mint.broker.call("transactions.transfer", { amount: 7.77, toUserId: recipient.user.id }, as(sender));
		expect(crashes).toBe(1);
		expect(result.transaction.status).toBe("Processing");
		expect(await balancesMinor(mint, [sender, recipient])).toEqual([223, 0]); // debited, not yet credited
		// In flight it holds a lease, which is how the sweeper finds it (the lease's sparse index holds only what is unfinished).
		const inFlight: any = await (mint.broker.getLocalService("transactions") as any).adapter.findOne({ _id: result.transaction.id });
		expect(typeof inFlight.leaseUntil).toBe("number");

		const done = await waitFor(async () => {
			const tx: any = await (mint.broker.getLocalService("transactions") as any).adapter.findOne({ _id: result.transaction.id });
			return tx.status === "Completed" ? tx : undefined;
		}, 5000);
		expect(done.history.map((h: any) => h.status)).toEqual(["Pending", "Processing", "Completed"]);
		// The final move ended the lease: a finished transaction is out of the sweeper's index.
		expect(done).not.toHaveProperty("leaseUntil");
		expect(await balancesMinor(mint, [sender, recipient])).toEqual([223, 777]);
		const entries = await entriesOf(mint, result.transaction.id);
		expect(entries.map((e: any) => e.direction).sort()).toEqual(["credit", "debit"]);
		await expectInvariants(mint);
	});

	it("a transaction left Pending by a crash is driven forward too", async () => {
		const user = await signup(mint);
		const transactions = mint.broker.getLocalService("transactions") as any;
		await insertAbandoned(mint, { _id: "crashed-before-processing", type: "TopUp", status: "Pending", amountMinor: 250, userId: user.user.id });
		await waitFor(async () => ((await transactions.adapter.findOne({ _id: "crashed-before-processing" })).status === "Completed" ? true : undefined), 5000);
		expect(await balancesMinor(mint, [user])).toEqual([250]);
		await expectInvariants(mint);
	});

	it("two sweepers at once drive a stuck transaction once", async () => {
		const sender = await signup(mint);
		const recipient = await signup(mint);
		await topUpMinor(mint, sender, 5);
		const transactions = mint.broker.getLocalService("transactions") as any;
		await insertAbandoned(mint, {
			_id: "stuck-for-two-sweepers",
			type: "Transfer",
			status: "Processing",
			amountMinor: 400,
			fromUserId: sender.user.id,
			toUserId: recipient.user.id,
		});
		const results = await Promise.all([mint.broker.call<any>("transactions.sweep"), mint.broker.call<any>("transactions.sweep"), transactions.sweepStuck()]);
		const drivers = results.flatMap(r => r.redriven).filter((id: string) => id === "stuck-for-two-sweepers");
		expect(drivers.length).toBeLessThanOrEqual(1);
		await waitFor(async () => ((await transactions.adapter.findOne({ _id: "stuck-for-two-sweepers" })).status === "Completed" ? true : undefined), 5000);
		expect(await balancesMinor(mint, [sender, recipient])).toEqual([100, 400]);
		await expectInvariants(mint);
	});
});

describe("transaction events", () => {
	let mint: TestMint;
	beforeAll(async () => {
		mint = await startTestMint();
	});
	afterAll(() => mint.stop());

	it("replay with their original eventIds and times, oldest first", async () => {
		const user = await signup(mint);
		const result: any = await mint.broker.call("transactions.topup", { amount: 1 }, as(user));
		const id = result.transaction.id;
		const original = await waitFor(() => {
			const events = mint.events.filter(e => e.name.startsWith("transaction.") && e.params.transactionId === id);
			return events.length === 3 ? events : undefined;
		});
		const replay: any = await mint.broker.call("transactions.replayEvents", { id });
		expect(replay).toEqual({ replayed: 3, status: "Completed" });
		const all = await waitFor(() => {
			const events = mint.events.filter(e => e.name.startsWith("transaction.") && e.params.transactionId === id);
			return events.length === 6 ? events : undefined;
		});
		const view = (events: typeof all) => events.map(e => [e.name, e.params.eventId, e.params.occurredAt]);
		expect(view(all.slice(3))).toEqual(view(original));
		expect(new Set(original.map(e => e.params.eventId)).size).toBe(3);
		expect(await balancesMinor(mint, [user])).toEqual([100]);
	});

	it("a transfer that finds the money gone fails with its reason, recorded and emitted", async () => {
		const sender = await signup(mint);
		const recipient = await signup(mint);
		// Passed the request-time check, then the money went elsewhere before the debit.
		await insertAbandoned(mint, {
			_id: "late-overdraft",
			type: "Transfer",
			status: "Processing",
			amountMinor: 500,
			fromUserId: sender.user.id,
			toUserId: recipient.user.id,
		});
		await mint.broker.call("transactions.redrive", { id: "late-overdraft" });
		const res = await mint.http.get("/api/v1/transactions/late-overdraft").set("Cookie", sender.cookie);
		expect(res.body).toMatchObject({ status: "Failed", reason: "Insufficient funds" });
		const history = await mint.http.get("/api/v1/transactions/late-overdraft/history").set("Cookie", recipient.cookie);
		expect(history.body.map((h: any) => [h.status, h.reason])).toEqual([
			["Pending", undefined],
			["Processing", undefined],
			["Failed", "Insufficient funds"],
		]);
		const failed = await waitFor(() => mint.events.find(e => e.name === "transaction.failed" && e.params.transactionId === "late-overdraft"));
		expect(failed.params.reason).toBe("Insufficient funds");
		expect(await balancesMinor(mint, [sender, recipient])).toEqual([0, 0]);
		await expectInvariants(mint);
	});
});

describe("the transaction outbox", () => {
	let mint: TestMint;
	let refusals = 0;
	// The event bus refuses the first transaction.completed (e.g. RabbitMQ down for a moment).
	const flakyBus = defineMiddleware({
		emit(next) {
			return (event, payload: any, opts) => {
				if (event === "transaction.completed" && refusals === 0) {
					refusals++;
					throw new Error("event bus unavailable");
				}
				return next(event, payload, opts);
			};
		},
	});
	beforeAll(async () => {
		mint = await startTestMint({ TX_SWEEP_INTERVAL_MS: "100" }, [flakyBus]);
	});
	afterAll(() => mint.stop());

	it("publishes a state change whose event could not go out, later, from the recorded history", async () => {
		const user = await signup(mint);
		const result: any = await mint.broker.call("transactions.topup", { amount: 2 }, as(user));
		expect(refusals).toBe(1);
		expect(result.transaction.status).toBe("Completed");
		const transactions = mint.broker.getLocalService("transactions") as any;
		// One of its three changes did not go out: all three stay counted, for the relay to publish again.
		expect((await transactions.adapter.findOne({ _id: result.transaction.id })).unpublished).toBe(3);

		const completed = await waitFor(() => mint.events.find(e => e.name === "transaction.completed" && e.params.transactionId === result.transaction.id), 5000);
		expect(completed.params.status).toBe("Completed");
		await waitFor(async () => ((await transactions.adapter.findOne({ _id: result.transaction.id })).unpublished === undefined ? true : undefined), 5000);
		// The relay re-sent the whole history under the same event ids: consumers see duplicates they can drop.
		const ids = mint.events
			.filter(e => e.name.startsWith("transaction.") && e.params.transactionId === result.transaction.id)
			.map(e => `${e.name}:${e.params.eventId}`);
		expect(new Set(ids).size).toBe(3);
		expect(await balancesMinor(mint, [user])).toEqual([200]);
		await expectInvariants(mint);
	});

	it("leaves nothing in the outbox when every event goes out", async () => {
		const user = await signup(mint);
		const result: any = await mint.broker.call("transactions.topup", { amount: 1 }, as(user));
		const transactions = mint.broker.getLocalService("transactions") as any;
		expect((await transactions.adapter.findOne({ _id: result.transaction.id })).unpublished).toBeUndefined();
	});
});
