/**
 * The ledger on a real store: once per movement, never below zero, heals a
 * crash between its two writes. On a NeDB file always; on MongoDB too where
 * one exists (test/helpers/mongo.ts; skipped with the reason otherwise).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createAdapter, type DbAdapter, type IndexSpec } from "../../mixins/db.mixin";
import { transition } from "../../services/transactions/state-machine";
import { Ledger, type LedgerEntry, type WalletDoc } from "../../services/wallet/ledger";
import type { TransactionEntity } from "../../services/transactions/views";
import { describeWithInfra } from "../helpers/infra";
import { testConfig } from "../helpers/mint";
import { MONGO_NEED, startMongo, type TestMongo } from "../helpers/mongo";

let dir: string;
let wallets: DbAdapter<WalletDoc>;
let entries: DbAdapter<LedgerEntry>;
let ledger: Ledger;
/** The store each test opens: a fresh DATA_DIR, or a fresh namespace on MongoDB. */
let storeEnv: () => Record<string, string>;

async function open<T>(env: Record<string, string>, name: string, indexes: IndexSpec[] = []): Promise<DbAdapter<T>> {
	const adapter = createAdapter<T>(testConfig({ DATA_DIR: dir, ...env }), "wallet", { name, indexes });
	adapter.init({}, { logger: console });
	await adapter.connect();
	return adapter;
}

beforeEach(async () => {
	dir = fs.mkdtempSync(path.join(os.tmpdir(), "mint-ledger-"));
	const env = storeEnv();
	wallets = await open<WalletDoc>(env, "wallets", [{ fields: { userId: 1 }, unique: true }]);
	entries = await open<LedgerEntry>(env, "entries", [{ fields: { movement: 1 }, unique: true }]);
	ledger = new Ledger(wallets, entries);
	await wallets.insert({ _id: "w1", userId: "u1", balanceMinor: 0, version: 0, currency: "USD", createdAt: "t", updatedAt: "t" });
});
afterEach(async () => {
	// Disconnecting stops NeDB's autocompaction timer, which would keep Jest alive.
	await wallets.disconnect();
	await entries.disconnect();
	fs.rmSync(dir, { recursive: true, force: true });
});

const balance = async () => (await ledger.settle("w1")).balanceMinor;

function ledgerSuite(): void {
	describe("Ledger.apply", () => {
		it("applies a movement once, however often it is repeated", async () => {
			expect((await ledger.apply("w1", "tx1", "credit", 500)).outcome).toBe("applied");
			expect((await ledger.apply("w1", "tx1", "credit", 500)).outcome).toBe("already-applied");
			expect(await balance()).toBe(500);
			expect(await entries.count({})).toBe(1);
		});

		it("applies the same movement sent 50 times at once exactly once", async () => {
			const results = await Promise.all(Array.from({ length: 50 }, () => ledger.apply("w1", "tx-race", "credit", 100)));
			expect(results.filter(r => r.outcome === "applied")).toHaveLength(1);
			expect(await balance()).toBe(100);
		});

		it("never lets a balance go below zero, even under 200 concurrent debits", async () => {
			await ledger.apply("w1", "funding", "credit", 100);
			const results = await Promise.all(Array.from({ length: 200 }, (_, i) => ledger.apply("w1", `spend-${i}`, "debit", -1)));
			expect(results.filter(r => r.outcome === "applied")).toHaveLength(100);
			expect(results.filter(r => r.outcome === "insufficient-funds")).toHaveLength(100);
			expect(await balance()).toBe(0);
			const all = await entries.find({ query: { walletId: "w1" }, sort: ["seq"] });
			expect(all.map(e => e.seq)).toEqual(Array.from({ length: 101 }, (_, i) => i + 1));
			expect(all.every(e => e.balanceAfterMinor >= 0)).toBe(true);
		});

		it("refuses a debit larger than the balance and records nothing", async () => {
			await ledger.apply("w1", "funding", "credit", 99);
			expect(await ledger.apply("w1", "big", "debit", -100)).toEqual({ outcome: "insufficient-funds", balanceMinor: 99 });
			expect(await entries.count({})).toBe(1);
		});

		it("refuses a movement id reused with another amount", async () => {
			await ledger.apply("w1", "tx1", "credit", 500);
			await expect(ledger.apply("w1", "tx1", "credit", 600)).rejects.toThrow(/another wallet or amount/);
			expect(await balance()).toBe(500);
		});

		it("stores an entry with its movement in one field, read back as transaction and direction", async () => {
			await ledger.apply("w1", "topup:7", "credit", 500);
			const [entry] = await entries.find({});
			expect(entry).toEqual({
				_id: "w1:1",
				walletId: "w1",
				seq: 1,
				movement: "topup:7:credit",
				deltaMinor: 500,
				balanceAfterMinor: 500,
				at: expect.any(String),
			});
			expect(Ledger.movementOf(entry)).toEqual({ txId: "topup:7", direction: "credit" });
		});

		it("keeps debit and credit of one transaction apart", async () => {
			await ledger.apply("w1", "tx1", "credit", 500);
			expect((await ledger.apply("w1", "tx1", "debit", -200)).outcome).toBe("applied");
			expect(await balance()).toBe(300);
		});

		it("refuses fractional and zero amounts", async () => {
			await expect(ledger.apply("w1", "t", "credit", 1.5)).rejects.toThrow(TypeError);
			await expect(ledger.apply("w1", "t", "credit", 0)).rejects.toThrow(RangeError);
		});
	});

	describe("a crash between logging an entry and updating the wallet", () => {
		/** What a writer that died after its insert leaves behind: a credit of 250 at seq 2, the wallet still at version 1. */
		const crashedCredit = () =>
			entries.insert({
				_id: "w1:2",
				walletId: "w1",
				seq: 2,
				movement: "tx2:credit",
				deltaMinor: 250,
				balanceAfterMinor: 750,
				at: "t",
			});

		it("is healed by the next reader: the logged entry is applied once", async () => {
			await ledger.apply("w1", "tx1", "credit", 500);
			await crashedCredit();
			expect((await wallets.findOne({ _id: "w1" }))!.balanceMinor).toBe(500);
			expect(await balance()).toBe(750);
			// The retried call finds its movement applied.
			expect((await ledger.apply("w1", "tx2", "credit", 250)).outcome).toBe("already-applied");
			expect(await balance()).toBe(750);
			expect((await wallets.findOne({ _id: "w1" }))!.version).toBe(2);
		});

		it("is healed by the retried movement itself, applied once, with nobody reading in between", async () => {
			await ledger.apply("w1", "tx1", "credit", 500);
			await crashedCredit();
			expect((await ledger.apply("w1", "tx2", "credit", 250)).outcome).toBe("already-applied");
			expect(await wallets.findOne({ _id: "w1" })).toMatchObject({ balanceMinor: 750, version: 2 });
		});

		it("is healed by the next movement, which lands after it, on the balance it left", async () => {
			await ledger.apply("w1", "tx1", "credit", 500);
			await crashedCredit();
			const debit = await ledger.apply("w1", "tx3", "debit", -700);
			expect(debit).toMatchObject({ outcome: "applied", balanceMinor: 50, entry: { seq: 3, balanceAfterMinor: 50 } });
			expect(await wallets.findOne({ _id: "w1" })).toMatchObject({ balanceMinor: 50, version: 3 });
		});
	});

	describe("the wallet as the caller read it (Ledger.apply's `known`)", () => {
		it("applies on a stale read as on a fresh one: the right seq and balance, once", async () => {
			const stale = (await wallets.findOne({ _id: "w1" }))!;
			await ledger.apply("w1", "tx1", "credit", 500);
			const result = await ledger.apply("w1", "tx2", "debit", -200, stale);
			expect(result).toMatchObject({ outcome: "applied", balanceMinor: 300, entry: { seq: 2, balanceAfterMinor: 300 } });
			expect((await ledger.apply("w1", "tx2", "debit", -200, stale)).outcome).toBe("already-applied");
			expect(await wallets.findOne({ _id: "w1" })).toMatchObject({ balanceMinor: 300, version: 2 });
		});

		it("does not refuse a debit the stale read could not cover but the current balance can", async () => {
			const stale = (await wallets.findOne({ _id: "w1" }))!;
			await ledger.apply("w1", "tx1", "credit", 500);
			expect(await ledger.apply("w1", "tx2", "debit", -500, stale)).toMatchObject({ outcome: "applied", balanceMinor: 0 });
		});

		it("refuses a debit over the current balance however fresh the read, and records nothing", async () => {
			await ledger.apply("w1", "tx1", "credit", 500);
			const fresh = (await wallets.findOne({ _id: "w1" }))!;
			expect(await ledger.apply("w1", "tx2", "debit", -501, fresh)).toEqual({ outcome: "insufficient-funds", balanceMinor: 500 });
			expect(await entries.count({})).toBe(1);
		});
	});
}

describe("on a NeDB file", () => {
	beforeAll(() => {
		storeEnv = () => ({});
	});
	ledgerSuite();
});

describeWithInfra("on MongoDB", MONGO_NEED, () => {
	let mongo: TestMongo;
	beforeAll(async () => {
		mongo = await startMongo();
		storeEnv = () => ({ MONGO_URI: mongo.uri, NAMESPACE: mongo.namespace() });
	}, 120_000);
	afterAll(() => mongo?.stop(), 60_000);
	ledgerSuite();

	/** The store, with a primary step-down just before its first compare-and-set: the write meets the election. */
	function steppingDownBeforeFirstUpdate<T>(store: DbAdapter<T>): DbAdapter<T> {
		let stepped = false;
		return new Proxy(store, {
			get(target, key, receiver) {
				if (key !== "updateOne") return Reflect.get(target, key, receiver);
				return async (...args: Parameters<DbAdapter<T>["updateOne"]>) => {
					if (!stepped) {
						stepped = true;
						await mongo.stepDown();
					}
					return target.updateOne(...args);
				};
			},
		});
	}

	it("a primary step-down in the middle of apply() applies the movement once", async () => {
		if (!mongo.replicaSet) return void process.stderr.write("SKIPPED step-down: MONGO_URI is not a replica set\n");
		const interrupted = new Ledger(steppingDownBeforeFirstUpdate(wallets), entries);
		expect((await interrupted.apply("w1", "tx1", "credit", 500)).outcome).toBe("applied");
		expect((await ledger.apply("w1", "tx1", "credit", 500)).outcome).toBe("already-applied");
		expect(await ledger.settle("w1")).toMatchObject({ balanceMinor: 500, version: 1 });
		expect(await entries.count({ query: { movement: "tx1:credit" } })).toBe(1);
	}, 120_000);

	it("a primary step-down in the middle of transition() moves the transaction once", async () => {
		if (!mongo.replicaSet) return void process.stderr.write("SKIPPED step-down: MONGO_URI is not a replica set\n");
		const transactions = await open<TransactionEntity>(storeEnv(), "transactions");
		try {
			await transactions.insert({ _id: "t1", status: "Pending", history: [{ status: "Pending", at: "a" }], unpublished: 1 } as unknown as TransactionEntity);
			const moved = await transition(steppingDownBeforeFirstUpdate(transactions), "t1", "Pending", "Processing");
			expect(moved?.status).toBe("Processing");
			expect(await transition(transactions, "t1", "Pending", "Processing")).toBeNull();
			const tx = await transactions.findOne({ _id: "t1" });
			expect([tx?.status, tx?.history.map(h => h.status), tx?.unpublished]).toEqual(["Processing", ["Pending", "Processing"], 2]);
		} finally {
			await transactions.disconnect();
		}
	}, 120_000);
});
