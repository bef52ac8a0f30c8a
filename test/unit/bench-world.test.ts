/**
 * The bench's large world (bench/world.ts), small: what it writes is what
 * Mint's stores hold, and consistent (the ledger invariants hold over it),
 * in NeDB's files or as an export that `npm run data -- import` takes.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import Nedb from "@seald-io/nedb";
import argon2 from "argon2";
import { generateWorld, HEAVY_EMAIL, HEAVY_PASSWORD } from "../../bench/world";
import { loadConfig } from "../../lib/config";
import { createAdapter } from "../../mixins/db.mixin";
import { importData, readManifest } from "../../scripts/data";
import { toTransactionFacts, type TransactionEntity } from "../../services/transactions/views";
import { checkLedger } from "../../services/wallet/invariants";
import type { LedgerEntry, WalletDoc } from "../../services/wallet/ledger";

let dir: string;
beforeAll(() => {
	dir = fs.mkdtempSync(path.join(os.tmpdir(), "mint-world-"));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

async function load<T>(service: string, collection: string): Promise<T[]> {
	const db = new Nedb<T>({ filename: path.join(dir, service, `${collection}.db`) });
	await db.loadDatabaseAsync();
	return db.findAsync({});
}

describe("generateWorld", () => {
	it("writes users, wallets, ledger entries and transactions that agree, with a heavy user in a tenth of them", async () => {
		const world = await generateWorld(dir, 400);
		expect(world).toMatchObject({ users: 40, transactions: 400 });
		const [users, wallets, entries, transactions] = await Promise.all([
			load<{ _id: string; email: string; passwordHash: string }>("auth", "users"),
			load<WalletDoc>("wallet", "wallets"),
			load<LedgerEntry>("wallet", "entries"),
			load<TransactionEntity>("transactions", "transactions"),
		]);
		expect(users).toHaveLength(40);
		expect(wallets).toHaveLength(40);
		expect(transactions).toHaveLength(400);
		// Every transaction is finished, with its parties, and nothing left to publish or drive.
		for (const tx of transactions) {
			expect(tx).toMatchObject({ status: "Completed", currency: "USD" });
			expect(tx.parties).toEqual([tx.userId, tx.fromUserId, tx.toUserId].filter(Boolean));
			expect(tx.unpublished).toBeUndefined();
			expect(tx.leaseUntil).toBeUndefined();
		}
		// The ledger invariants the wallet service checks: conservation, no negative balance, entries matching transactions.
		const report = checkLedger(wallets, entries, toTransactionFacts(transactions, Date.now()));
		expect({ ok: report.ok, violations: report.violations }).toEqual({ ok: true, violations: [] });
		const heavy = users.find(u => u.email === HEAVY_EMAIL)!;
		expect(await argon2.verify(heavy.passwordHash, HEAVY_PASSWORD)).toBe(true);
		const ofHeavy = transactions.filter(tx => tx.parties.includes(heavy._id)).length;
		expect(ofHeavy).toBe(world.heavyTransactions);
		expect(ofHeavy).toBeGreaterThanOrEqual(36);
	});

	it("writes the same world as an export with its manifest, which imports into SQLite whole and consistent", async () => {
		const exported = path.join(dir, "export");
		const target = path.join(dir, "sqlite");
		const world = await generateWorld(exported, 400, "export");
		const manifest = readManifest(exported);
		expect(Object.keys(manifest.collections).sort()).toEqual(["auth", "transactions", "wallet"]);
		expect(manifest.collections.auth).toEqual({ users: 40 });
		expect(manifest.collections.transactions).toEqual({ transactions: 400 });
		// A top-up's entry per user, two per transfer.
		expect(manifest.collections.wallet).toEqual({ wallets: 40, entries: 40 + 2 * 360 });
		expect(fs.existsSync(path.join(exported, "auth", "users.db"))).toBe(false);

		const config = loadConfig({ DATA_DIR: target, EMBEDDED_STORE: "sqlite" });
		const reports = await importData(config, exported, () => undefined);
		expect(reports.map(r => [`${r.service}/${r.collection}`, r.imported, r.alreadyThere]).sort()).toEqual([
			["auth/users", 40, 0],
			["transactions/transactions", 400, 0],
			["wallet/entries", 760, 0],
			["wallet/wallets", 40, 0],
		]);
		const read = async <T>(service: string, collection: string): Promise<T[]> => {
			const store = createAdapter<T>(config, service, { name: collection });
			store.init(null, { logger: { info: () => undefined, warn: () => undefined, error: () => undefined } });
			await store.connect();
			try {
				return await store.find({});
			} finally {
				await store.disconnect();
			}
		};
		const [users, wallets, entries, transactions] = await Promise.all([
			read<{ _id: string; email: string }>("auth", "users"),
			read<WalletDoc>("wallet", "wallets"),
			read<LedgerEntry>("wallet", "entries"),
			read<TransactionEntity>("transactions", "transactions"),
		]);
		const report = checkLedger(wallets, entries, toTransactionFacts(transactions, Date.now()));
		expect({ ok: report.ok, violations: report.violations }).toEqual({ ok: true, violations: [] });
		const heavy = users.find(u => u.email === HEAVY_EMAIL)!;
		expect(transactions.filter(tx => tx.parties.includes(heavy._id))).toHaveLength(world.heavyTransactions);
	});
});
