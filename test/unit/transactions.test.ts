/** The transactions' plain modules, without a broker: the state machine, the outbox, the drive and sweep, idempotency. */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { MovementResult } from "../../contracts/money";
import { checkEvent, eventIdFor } from "../../lib/events";
import { createAdapter, type Store } from "../../mixins/db.mixin";
import { Announced, TransactionOutbox } from "../../services/transactions/outbox";
import type { MovementRequest } from "../../contracts/money";
import { TransactionProcessor } from "../../services/transactions/processing";
import { IllegalMove, NEXT, replayHistory, transactionEventId, transition } from "../../services/transactions/state-machine";
import { TransactionSubmitter, newTransaction, requestHashOf, transactionIdFor, transferDraft, topUpDraft } from "../../services/transactions/submit";
import { migrateTransactions } from "../../services/transactions/migrations";
import { partyQuery, toTransactionView, type TransactionDraft, type TransactionEntity } from "../../services/transactions/views";
import { testConfig } from "../helpers/mint";

const at = "2026-01-01T00:00:00.000Z";

describe("replayHistory", () => {
	it("replays the recorded moves to the final state, with the failure reason", () => {
		expect(replayHistory([{ status: "Pending", at }])).toEqual({ status: "Pending" });
		expect(
			replayHistory([
				{ status: "Pending", at },
				{ status: "Processing", at },
				{ status: "Completed", at },
			]),
		).toEqual({ status: "Completed" });
		expect(
			replayHistory([
				{ status: "Pending", at },
				{ status: "Processing", at },
				{ status: "Failed", at, reason: "Insufficient funds" },
			]),
		).toEqual({
			status: "Failed",
			reason: "Insufficient funds",
		});
	});

	it.each([
		[["Processing"], "A history starts with Pending"],
		[["Pending", "Completed"], "Illegal move Pending -> Completed"],
		[["Pending", "Processing", "Completed", "Failed"], "Illegal move Completed -> Failed"],
		[["Pending", "Processing", "Processing"], "Illegal move Processing -> Processing"],
		[["Pending", "Processing", "Failed", "Completed"], "Illegal move Failed -> Completed"],
	])("refuses %j", (statuses, message) => {
		expect(() => replayHistory(statuses.map(status => ({ status: status as any, at })))).toThrow(message);
	});
});

describe("stable ids", () => {
	it("gives a user's Idempotency-Key one transaction id, and another user's the other", () => {
		expect(transactionIdFor("u1", "key")).toBe(transactionIdFor("u1", "key"));
		expect(transactionIdFor("u1", "key")).not.toBe(transactionIdFor("u2", "key"));
		expect(transactionIdFor("u1", "key")).not.toBe(transactionIdFor("u1", "key2"));
		expect(transactionIdFor("u1", "key")).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
	});

	it("does not let parts run into each other", () => {
		expect(eventIdFor("ab", "c")).not.toBe(eventIdFor("a", "bc"));
	});

	it("gives each (transaction, status) one event id", () => {
		expect(transactionEventId("tx1", "Completed")).toBe(transactionEventId("tx1", "Completed"));
		expect(transactionEventId("tx1", "Completed")).not.toBe(transactionEventId("tx1", "Failed"));
		expect(transactionEventId("tx1", "Completed")).not.toBe(transactionEventId("tx2", "Completed"));
	});
});

// A real NeDB store per test, as the service has.
let dir: string;
let store: Store<TransactionEntity>;

beforeEach(async () => {
	dir = fs.mkdtempSync(path.join(os.tmpdir(), "mint-transactions-"));
	store = createAdapter(testConfig({ DATA_DIR: dir }), "transactions", { name: "transactions" });
	(store as any).init({}, { logger: console, schema: {}, settings: {} });
	await (store as any).connect();
});
afterEach(async () => {
	// Disconnecting stops NeDB's autocompaction timer, which would keep Jest alive.
	await (store as any).disconnect();
	fs.rmSync(dir, { recursive: true, force: true });
});

const silent = { warn: jest.fn(), error: jest.fn() };

const topUp: TransactionDraft = { type: "TopUp", amountMinor: 250, userId: "u1", requestedBy: "u1" };
const transfer: TransactionDraft = { type: "Transfer", amountMinor: 400, fromUserId: "u1", toUserId: "u2", requestedBy: "u1" };

async function insert(id: string, draft: TransactionDraft, fields: Partial<TransactionEntity> = {}): Promise<TransactionEntity> {
	const tx = { ...newTransaction(id, draft, { currency: "USD", requestHash: requestHashOf(draft), leaseUntil: Date.now() + 60_000, now: at }), ...fields };
	await store.insert(tx);
	return tx;
}

const load = async (id: string) => (await store.findOne({ _id: id })) as TransactionEntity;

/** Records what is emitted; refuses the events named in `refuse`. */
function recordingBus(refuse: string[] = []) {
	const emitted: { name: string; payload: any }[] = [];
	return {
		emitted,
		emit(name: string, payload: unknown) {
			if (refuse.includes(name)) throw new Error("event bus unavailable");
			emitted.push({ name, payload });
		},
	};
}

/** A wallet that applies each (transaction, direction) once and keeps balances by user. */
function fakeWallet(balances: Record<string, number>) {
	const applied = new Set<string>();
	const calls: string[] = [];
	const step =
		(direction: "credit" | "debit") =>
		async ({ userId, txId, amountMinor }: MovementRequest): Promise<MovementResult> => {
			calls.push(`${direction}:${userId}:${amountMinor}`);
			const walletId = `w-${userId}`;
			if (applied.has(`${txId}:${direction}`)) return { outcome: "already-applied", walletId, balanceMinor: balances[userId] ?? 0 };
			const delta = direction === "credit" ? amountMinor : -amountMinor;
			if ((balances[userId] ?? 0) + delta < 0) return { outcome: "insufficient-funds", walletId, balanceMinor: balances[userId] ?? 0 };
			applied.add(`${txId}:${direction}`);
			balances[userId] = (balances[userId] ?? 0) + delta;
			return { outcome: "applied", walletId, balanceMinor: balances[userId] };
		};
	return { calls, balances, credit: step("credit"), debit: step("debit") };
}

describe("transition", () => {
	it("records an allowed move: status, history and outbox count in one update", async () => {
		await insert("tx1", topUp);
		const record = await transition(store, "tx1", "Pending", "Processing", undefined, "2026-01-01T00:00:01.000Z");
		expect(record).toEqual({ status: "Processing", at: "2026-01-01T00:00:01.000Z" });
		const tx = await load("tx1");
		expect(tx.status).toBe("Processing");
		expect(tx.updatedAt).toBe("2026-01-01T00:00:01.000Z");
		expect(tx.history.map(h => h.status)).toEqual(["Pending", "Processing"]);
		expect(tx.unpublished).toBe(2);
	});

	it("records the reason of a failure", async () => {
		await insert("tx1", transfer, {
			status: "Processing",
			history: [
				{ status: "Pending", at },
				{ status: "Processing", at },
			],
		});
		expect(await transition(store, "tx1", "Processing", "Failed", "Insufficient funds")).toMatchObject({ status: "Failed", reason: "Insufficient funds" });
		expect(await load("tx1")).toMatchObject({ status: "Failed", reason: "Insufficient funds" });
		expect((await load("tx1")).history[2]).toMatchObject({ status: "Failed", reason: "Insufficient funds" });
	});

	it("writes nothing when the transaction has already moved on (compare-and-set)", async () => {
		await insert("tx1", topUp);
		expect(await transition(store, "tx1", "Pending", "Processing")).not.toBeNull();
		const before = await load("tx1");
		expect(await transition(store, "tx1", "Pending", "Processing")).toBeNull();
		expect(await load("tx1")).toEqual(before);
	});

	const forbidden = (Object.keys(NEXT) as (keyof typeof NEXT)[]).flatMap(from =>
		(Object.keys(NEXT) as (keyof typeof NEXT)[]).filter(to => !NEXT[from].includes(to)).map(to => [from, to] as const),
	);

	it("knows exactly the moves Pending -> Processing -> Completed | Failed", () => {
		expect(forbidden).toHaveLength(16 - 3);
		expect(NEXT).toEqual({ Pending: ["Processing"], Processing: ["Completed", "Failed"], Completed: [], Failed: [] });
	});

	it.each(forbidden)("refuses %s -> %s and writes nothing", async (from, to) => {
		await insert("tx1", transfer, { status: from });
		const before = await load("tx1");
		const updates = [jest.spyOn(store, "updateOne"), jest.spyOn(store, "updateMany")];
		await expect(transition(store, "tx1", from, to)).rejects.toThrow(new IllegalMove(from, to));
		await expect(transition(store, "tx1", from, to)).rejects.toThrow(`Illegal move ${from} -> ${to}`);
		for (const update of updates) expect(update).not.toHaveBeenCalled();
		expect(await load("tx1")).toEqual(before);
	});
});

describe("TransactionOutbox", () => {
	it("announces a recorded change under its stable id, and keeps it counted while the transaction is unfinished", async () => {
		const tx = await insert("tx1", transfer);
		const bus = recordingBus();
		const outbox = new TransactionOutbox(store, bus, silent);
		const announced = new Announced();
		expect(await outbox.announceRecorded(tx, tx.history[0], announced)).toBe(true);
		expect(bus.emitted).toHaveLength(1);
		const [event] = bus.emitted;
		expect(event.name).toBe("transaction.created");
		expect(event.payload).toEqual({
			eventId: transactionEventId("tx1", "Pending"),
			occurredAt: at,
			transactionId: "tx1",
			type: "Transfer",
			status: "Pending",
			amountMinor: 400,
			currency: "USD",
			fromUserId: "u1",
			toUserId: "u2",
		});
		expect(checkEvent("transaction.created", event.payload)).toBe(true);
		expect(announced).toEqual({ recorded: 1, allOut: true });
		await outbox.clear(tx, announced);
		expect((await load("tx1")).unpublished).toBe(1);
	});

	it("takes a finished transaction off the outbox in one update when its one driver published every change it recorded", async () => {
		const tx = await insert("tx1", topUp);
		const outbox = new TransactionOutbox(store, recordingBus(), silent);
		const announced = new Announced();
		await outbox.announceRecorded(tx, tx.history[0], announced);
		let current = tx;
		for (const to of ["Processing", "Completed"] as const) {
			const record = (await transition(store, "tx1", current.status, to))!;
			current = await load("tx1");
			await outbox.announceRecorded(current, record, announced);
		}
		expect((await load("tx1")).unpublished).toBe(3);
		const updates = jest.spyOn(store, "updateOne");
		await outbox.clear(current, announced);
		expect(updates).toHaveBeenCalledTimes(1);
		expect((await load("tx1")).unpublished).toBeUndefined();
	});

	it("leaves the count to the relay when the driver did not record every change counted, or one of its events did not go out", async () => {
		// A sweeper finishing what a dead creator started: the creator's change is counted too.
		let tx = await insert("tx1", topUp);
		const outbox = new TransactionOutbox(store, recordingBus(), silent);
		const sweeper = new Announced();
		for (const to of ["Processing", "Completed"] as const) {
			const record = (await transition(store, "tx1", tx.status, to))!;
			tx = await load("tx1");
			await outbox.announceRecorded(tx, record, sweeper);
		}
		await outbox.clear(tx, sweeper);
		expect((await load("tx1")).unpublished).toBe(3);

		const flaky = new TransactionOutbox(store, recordingBus(["transaction.completed"]), silent);
		const alone = new Announced();
		const finished = await insert("tx2", topUp, { status: "Completed", unpublished: 1 });
		expect(await flaky.announceRecorded(finished, { status: "Completed", at }, alone)).toBe(false);
		expect(alone).toEqual({ recorded: 1, allOut: false });
		await flaky.clear(finished, alone);
		expect((await load("tx2")).unpublished).toBe(1);
	});

	it("keeps a change whose event could not go out in the outbox, and the relay sends the whole history later", async () => {
		const tx = await insert("tx1", topUp, {
			status: "Completed",
			unpublished: 1,
			history: [
				{ status: "Pending", at },
				{ status: "Processing", at },
				{ status: "Completed", at },
			],
		});
		const flaky = new TransactionOutbox(store, recordingBus(["transaction.completed"]), silent);
		await flaky.announceRecorded(tx, tx.history[2], new Announced());
		expect((await load("tx1")).unpublished).toBe(1);

		const bus = recordingBus();
		const outbox = new TransactionOutbox(store, bus, silent);
		expect(await outbox.pending(new Date("2025-12-31T00:00:00.000Z"))).toEqual([]); // not quiet long enough
		const pending = await outbox.pending(new Date("2026-01-02T00:00:00.000Z"));
		expect(pending.map(t => t._id)).toEqual(["tx1"]);
		expect(await outbox.relay(pending[0])).toBe(3);
		expect(bus.emitted.map(e => [e.name, e.payload.eventId])).toEqual([
			["transaction.created", transactionEventId("tx1", "Pending")],
			["transaction.processing", transactionEventId("tx1", "Processing")],
			["transaction.completed", transactionEventId("tx1", "Completed")],
		]);
		expect((await load("tx1")).unpublished).toBeUndefined();
	});

	it("leaves the count alone when a change was recorded while the relay published (compare-and-set)", async () => {
		await insert("tx1", topUp, { unpublished: 1 });
		const [stale] = await new TransactionOutbox(store, recordingBus(), silent).pending(new Date("2026-01-02T00:00:00.000Z"));
		await transition(store, "tx1", "Pending", "Processing");
		expect(await new TransactionOutbox(store, recordingBus(), silent).relay(stale)).toBe(1);
		expect((await load("tx1")).unpublished).toBe(2);
	});

	it("publishes nothing it cannot, and says so: the next run tries again", async () => {
		const tx = await insert("tx1", topUp, { unpublished: 1 });
		expect(await new TransactionOutbox(store, recordingBus(["transaction.created"]), silent).relay(tx)).toBe(0);
		expect((await load("tx1")).unpublished).toBe(1);
	});
});

describe("TransactionProcessor", () => {
	function processorWith(balances: Record<string, number>, bus = recordingBus()) {
		const wallet = fakeWallet(balances);
		const outbox = new TransactionOutbox(store, bus, silent);
		return { wallet, bus, processor: new TransactionProcessor({ store, outbox, wallet, logger: silent, stuckAfterMs: 60_000 }) };
	}

	it("drives a top-up to Completed: one credit, every change announced", async () => {
		await insert("tx1", topUp);
		const { processor, wallet, bus } = processorWith({});
		await processor.drive("tx1");
		await processor.drive("tx1");
		expect(wallet.calls).toEqual(["credit:u1:250"]);
		expect(wallet.balances).toEqual({ u1: 250 });
		expect((await load("tx1")).history.map(h => h.status)).toEqual(["Pending", "Processing", "Completed"]);
		expect(bus.emitted.map(e => e.name)).toEqual(["transaction.processing", "transaction.completed"]);
	});

	it("drives a transfer: debit then credit, or Failed with its reason when the money is gone", async () => {
		await insert("paid", transfer);
		await insert("unpaid", { ...transfer, amountMinor: 10_000 });
		const { processor, wallet } = processorWith({ u1: 500 });
		await processor.drive("paid");
		await processor.drive("unpaid");
		expect(wallet.balances).toEqual({ u1: 100, u2: 400 });
		expect(await load("paid")).toMatchObject({ status: "Completed" });
		expect(await load("unpaid")).toMatchObject({ status: "Failed", reason: "Insufficient funds" });
	});

	it("re-drives a transaction whose lease ran out once, however many sweepers race", async () => {
		await insert("stuck", transfer, {
			status: "Processing",
			leaseUntil: Date.now() - 1,
			history: [
				{ status: "Pending", at },
				{ status: "Processing", at },
			],
		});
		await insert("held", topUp, { leaseUntil: Date.now() + 60_000 });
		const { processor, wallet } = processorWith({ u1: 400 });
		const sweeps = await Promise.all([processor.sweepStuck(), processor.sweepStuck(), processor.sweepStuck()]);
		expect(sweeps.flatMap(s => s.redriven)).toEqual(["stuck"]);
		expect(wallet.calls).toEqual(["debit:u1:400", "credit:u2:400"]);
		expect((await load("stuck")).status).toBe("Completed");
		expect((await load("held")).status).toBe("Pending");
		expect(await processor.claim("held")).toBe(false);
	});
});

describe("TransactionSubmitter", () => {
	function submitterWith(balances: Record<string, number>) {
		const wallet = fakeWallet(balances);
		const outbox = new TransactionOutbox(store, recordingBus(), silent);
		const processor = new TransactionProcessor({ store, outbox, wallet, logger: silent, stuckAfterMs: 60_000 });
		const checks = { recipientExists: async (id: string) => id === "u2", balanceOf: async (id: string) => wallet.balances[id] ?? 0 };
		return { wallet, checks, submitter: new TransactionSubmitter({ store, outbox, processor, logger: silent, currency: "USD", syncWaitMs: 1000 }) };
	}

	it("records a transfer in one insert, two moves and one outbox update, reads nothing back, and answers what the store holds", async () => {
		const { submitter, checks } = submitterWith({ u1: 1000 });
		const ops = {
			insert: jest.spyOn(store, "insert"),
			updateOne: jest.spyOn(store, "updateOne"),
			findOne: jest.spyOn(store, "findOne"),
			find: jest.spyOn(store, "find"),
		};
		const result = await submitter.submit(transferDraft(4, "u1", "u2", 50_000_00), undefined, checks);
		expect([ops.insert, ops.updateOne, ops.findOne, ops.find].map(op => op.mock.calls.length)).toEqual([1, 3, 0, 0]);
		jest.restoreAllMocks();
		const stored = await load(result.transaction.id);
		expect(result).toEqual({ replayed: false, final: true, transaction: toTransactionView(stored) });
		expect(stored).toMatchObject({ status: "Completed", parties: ["u1", "u2"] });
		// Nothing left to publish, nothing left to drive: neither sparse field remains.
		expect(stored.unpublished).toBeUndefined();
		expect(stored.leaseUntil).toBeUndefined();
		expect(stored.history.map(h => h.status)).toEqual(["Pending", "Processing", "Completed"]);
		// Without an Idempotency-Key nothing can replay it: no key, no request hash, no separate asker stored.
		expect(Object.keys(stored).sort()).toEqual(
			["_id", "amountMinor", "createdAt", "currency", "fromUserId", "history", "parties", "status", "toUserId", "type", "updatedAt"].sort(),
		);
	});

	it("answers a repeated Idempotency-Key with the original transaction, and moves the money once", async () => {
		const { submitter, checks, wallet } = submitterWith({ u1: 1000 });
		const first = await submitter.submit(transferDraft(4, "u1", "u2", 50_000_00), "key-1", checks);
		const again = await submitter.submit(transferDraft(4, "u1", "u2", 50_000_00), "key-1", checks);
		expect(first).toMatchObject({ replayed: false, final: true, transaction: { id: transactionIdFor("u1", "key-1"), status: "Completed", amount: 4 } });
		expect(again).toEqual({ ...first, replayed: true });
		expect(wallet.balances).toEqual({ u1: 600, u2: 400 });
		// With a key, the key and what a repeat is compared with are kept.
		const stored = await load(first.transaction.id);
		expect(stored).toMatchObject({ idempotencyKey: "key-1", requestHash: requestHashOf(transferDraft(4, "u1", "u2", 50_000_00)) });
		expect(stored).not.toHaveProperty("requestedBy");
	});

	it("replays a transaction an older version stored with its asker, and still refuses another request under its key", async () => {
		const { submitter, checks } = submitterWith({ u1: 1000 });
		const id = transactionIdFor("u1", "old-key");
		const draft = transferDraft(3, "u1", "u2", 50_000_00);
		const { requestedBy, ...asked } = draft;
		await store.insert({
			...newTransaction(id, draft, { currency: "USD", requestHash: requestHashOf(draft), leaseUntil: 1, now: at }),
			...asked,
			requestedBy,
			idempotencyKey: "old-key",
			requestHash: requestHashOf(draft),
			status: "Completed",
		} as TransactionEntity);
		await expect(submitter.submit(transferDraft(3, "u1", "u2", 50_000_00), "old-key", checks)).resolves.toMatchObject({
			replayed: true,
			transaction: { id, amount: 3 },
		});
		await expect(submitter.submit(transferDraft(5, "u1", "u2", 50_000_00), "old-key", checks)).rejects.toMatchObject({ code: 422 });
	});

	it("refuses the same key with another request (422), and checks a transfer before recording it", async () => {
		const { submitter, checks } = submitterWith({ u1: 1000 }); // 11.00 after the top-up below
		await submitter.submit(topUpDraft(1, "u1", 100_000_00), "key-1", checks);
		await expect(submitter.submit(topUpDraft(2, "u1", 100_000_00), "key-1", checks)).rejects.toMatchObject({
			code: 422,
			message: "This Idempotency-Key was already used with a different request",
		});
		await expect(submitter.submit(transferDraft(1, "u1", "u3", 50_000_00), undefined, checks)).rejects.toMatchObject({
			code: 404,
			message: "Recipient not found",
		});
		await expect(submitter.submit(transferDraft(12, "u1", "u2", 50_000_00), undefined, checks)).rejects.toMatchObject({
			code: 422,
			message: "Insufficient funds",
		});
		await expect(submitter.submit(topUpDraft(1, "u1", 100_000_00), "\n", checks)).rejects.toMatchObject({ code: 400 });
		expect(await store.count({})).toBe(1);
	});
});

describe("migrateTransactions (transactions from an older Mint)", () => {
	it("gives each its parties and drops an outbox count of 0, once; the party query then finds them", async () => {
		const legacy = (id: string, draft: TransactionDraft, unpublished: number) => {
			const { parties, ...tx } = newTransaction(id, draft, { currency: "USD", requestHash: requestHashOf(draft), leaseUntil: 1, now: at });
			return { ...tx, unpublished } as TransactionEntity;
		};
		for (const tx of [legacy("old-topup", topUp, 0), legacy("old-transfer", transfer, 0), legacy("old-unsent", transfer, 2)]) await store.insert(tx);
		expect(await migrateTransactions(store)).toEqual({ parties: 3, published: 2 });
		expect(await migrateTransactions(store)).toEqual({ parties: 0, published: 0 });
		expect((await load("old-topup")).parties).toEqual(["u1"]);
		expect((await load("old-transfer")).parties).toEqual(["u1", "u2"]);
		expect((await load("old-transfer")).unpublished).toBeUndefined();
		// What is left to publish stays counted, for the relay.
		expect((await load("old-unsent")).unpublished).toBe(2);
		const ofU2 = await store.find({ query: partyQuery("u2"), sort: ["_id"] });
		expect(ofU2.map(tx => tx._id)).toEqual(["old-transfer", "old-unsent"]);
	});
});
