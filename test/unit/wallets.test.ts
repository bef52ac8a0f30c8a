/** The wallet service's logic without a broker, on real NeDB stores: one wallet per user, movements announced once, balances, invariants. */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { TransactionFacts } from "../../contracts/money";
import { createAdapter, type DbAdapter, type IndexSpec } from "../../mixins/db.mixin";
import type { LedgerEntry, WalletDoc } from "../../services/wallet/ledger";
import { Wallets } from "../../services/wallet/wallets";
import { testConfig } from "../helpers/mint";

let dir: string;
let walletStore: DbAdapter<WalletDoc>;
let entryStore: DbAdapter<LedgerEntry>;
let wallets: Wallets;
let emitted: { name: string; payload: Record<string, unknown> }[];
/** Records what would be emitted (publish() has already checked each payload against its contract). */
const events = {
	emit(name: string, payload: unknown) {
		emitted.push({ name, payload: payload as Record<string, unknown> });
	},
};

async function open<T>(name: string, indexes: IndexSpec[]): Promise<DbAdapter<T>> {
	const adapter = createAdapter<T>(testConfig({ DATA_DIR: dir }), "wallet", { name, indexes });
	adapter.init({}, { logger: console });
	await adapter.connect();
	return adapter;
}

beforeEach(async () => {
	dir = fs.mkdtempSync(path.join(os.tmpdir(), "mint-wallets-"));
	walletStore = await open<WalletDoc>("wallets", [{ fields: { userId: 1 }, unique: true }]);
	entryStore = await open<LedgerEntry>("entries", [{ fields: { movement: 1 }, unique: true }]);
	wallets = new Wallets(walletStore, entryStore, "EUR", () => new Date("2026-01-02T03:04:05.000Z"));
	emitted = [];
});
afterEach(async () => {
	await walletStore.disconnect();
	await entryStore.disconnect();
	fs.rmSync(dir, { recursive: true, force: true });
});

const named = (name: string) => emitted.filter(e => e.name === name);

describe("Wallets.ensure", () => {
	it("creates a user's wallet once, however many calls race, announced by one wallet.created", async () => {
		const results = await Promise.all(Array.from({ length: 5 }, () => wallets.ensure(events, "u1")));
		expect(new Set(results.map(w => w._id)).size).toBe(1);
		expect(results[0]).toEqual({
			_id: expect.any(String),
			userId: "u1",
			balanceMinor: 0,
			version: 0,
			currency: "EUR",
			createdAt: "2026-01-02T03:04:05.000Z",
			updatedAt: "2026-01-02T03:04:05.000Z",
		});
		expect(await walletStore.count({ query: { userId: "u1" } })).toBe(1);
		expect(named("wallet.created").map(e => e.payload)).toEqual([
			expect.objectContaining({ walletId: results[0]._id, userId: "u1", currency: "EUR", eventId: expect.any(String) }),
		]);
	});
});

describe("Wallets.move", () => {
	it("applies a credit once and announces it once; a retry answers already-applied and announces nothing", async () => {
		const first = await wallets.move(events, "u1", "tx1", "credit", 1250);
		const wallet = await walletStore.findOne({ userId: "u1" });
		expect(first).toEqual({ outcome: "applied", walletId: wallet?._id, balanceMinor: 1250 });
		expect(await wallets.move(events, "u1", "tx1", "credit", 1250)).toEqual({ outcome: "already-applied", walletId: wallet?._id, balanceMinor: 1250 });
		expect(named("wallet.credited").map(e => e.payload)).toEqual([
			expect.objectContaining({ walletId: wallet?._id, userId: "u1", transactionId: "tx1", direction: "credit", amountMinor: 1250, balanceMinor: 1250 }),
		]);
	});

	it("announces a debit as wallet.debited with a positive amount, and a refund as wallet.credited", async () => {
		await wallets.move(events, "u1", "top", "credit", 1000);
		expect((await wallets.move(events, "u1", "tx2", "debit", -400)).balanceMinor).toBe(600);
		expect((await wallets.move(events, "u1", "tx2", "refund", 400)).balanceMinor).toBe(1000);
		expect(named("wallet.debited").map(e => e.payload)).toEqual([
			expect.objectContaining({ transactionId: "tx2", direction: "debit", amountMinor: 400, balanceMinor: 600, version: 2 }),
		]);
		expect(named("wallet.credited").map(e => e.payload.direction)).toEqual(["credit", "refund"]);
		// Each movement carries the wallet's version after it: its order among the wallet's movements.
		expect(named("wallet.credited").map(e => e.payload.version)).toEqual([1, 3]);
	});

	it("refuses a debit over the balance: insufficient-funds, nothing moved, nothing announced", async () => {
		await wallets.move(events, "u1", "top", "credit", 99);
		emitted = [];
		const result = await wallets.move(events, "u1", "big", "debit", -100);
		expect(result).toMatchObject({ outcome: "insufficient-funds", balanceMinor: 99 });
		expect(emitted).toEqual([]);
		expect(await wallets.balanceOf("u1")).toBe(99);
	});

	it("runs one wallet's concurrent movements one at a time: none loses a race for the ledger's next seq", async () => {
		await wallets.move(events, "u1", "top", "credit", 40);
		const inserts = jest.spyOn(entryStore, "insert");
		const updates = jest.spyOn(walletStore, "updateOne");
		const results = await Promise.all(Array.from({ length: 40 }, (_, i) => wallets.move(events, "u1", `tx${i}`, "debit", -1)));
		expect(results.map(r => r.outcome)).toEqual(Array(40).fill("applied"));
		expect(results.map(r => r.balanceMinor).sort((a, b) => a - b)).toEqual(Array.from({ length: 40 }, (_, i) => i));
		// Each movement logged its entry at the first try, and moved the wallet with one compare-and-set that held.
		expect(inserts).toHaveBeenCalledTimes(40);
		expect(await Promise.all(updates.mock.results.map(r => r.value))).toEqual(Array(40).fill(1));
		expect(await wallets.balanceOf("u1")).toBe(0);
	});

	it("lets a failed movement not hold up the wallet's next ones", async () => {
		await wallets.move(events, "u1", "top", "credit", 10);
		const failing = wallets.move(events, "u1", "bad", "debit", -0.5);
		const next = wallets.move(events, "u1", "ok", "debit", -3);
		await expect(failing).rejects.toThrow();
		expect(await next).toMatchObject({ outcome: "applied", balanceMinor: 7 });
	});
});

describe("Wallets.view and balanceOf", () => {
	it("shows the wallet in major units, creating it for a user who has none", async () => {
		const view = await wallets.view(events, "u2");
		expect(view).toEqual({ id: expect.any(String), userId: "u2", balance: 0, currency: "EUR", createdAt: expect.any(String), updatedAt: expect.any(String) });
		await wallets.move(events, "u2", "tx", "credit", 1250);
		expect((await wallets.view(events, "u2")).balance).toBe(12.5);
		expect(named("wallet.created")).toHaveLength(1);
	});

	it("answers 0 for a user without a wallet and creates none", async () => {
		expect(await wallets.balanceOf("nobody")).toBe(0);
		expect(await walletStore.count({})).toBe(0);
		expect(emitted).toEqual([]);
	});
});

describe("Wallets.checkInvariants", () => {
	const topUp = (id: string, userId: string, amountMinor: number, status: "Completed" | "Failed" = "Completed") => ({
		id,
		type: "TopUp" as const,
		status,
		amountMinor,
		userId,
	});

	it("holds when every movement matches its transaction, and names what does not", async () => {
		await wallets.move(events, "u1", "t1", "credit", 500);
		const facts: TransactionFacts = { transactions: [topUp("t1", "u1", 500)], stuck: [] };
		expect(await wallets.checkInvariants(facts)).toMatchObject({
			ok: true,
			violations: [],
			totals: { balancesMinor: 500, completedTopUpsMinor: 500, wallets: 1, entries: 1 },
		});

		const report = await wallets.checkInvariants({ transactions: [topUp("t1", "u1", 500, "Failed")], stuck: [] });
		expect(report.ok).toBe(false);
		expect(report.violations).toEqual(
			expect.arrayContaining([expect.stringContaining("money not conserved"), expect.stringContaining("transaction t1 (TopUp Failed)")]),
		);
	});
});
