/**
 * The SQLite store (EMBEDDED_STORE=sqlite, mixins/db/sqlite-adapter.ts): the
 * store contract on a real SQLite file, and what only it does: index tables
 * (multikey, compound, sparse, unique) kept in step with every write, lists
 * sorted and paged by the index, indexes made and dropped as the spec changes;
 * and, on random documents, filters, sorts and updates, the same answers as
 * the NeDB store.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import fc from "fast-check";
import { createAdapter, NedbAdapter, SqliteAdapter, type CollectionSpec, type DbAdapter } from "../../mixins/db.mixin";
import type { TransactionStatus, TransactionType } from "../../contracts/money";
import { type AuthStores, EXTRA_COLLECTIONS, purgeExpired, USERS } from "../../services/auth/stores";
import { partiesOf, partyQuery, TRANSACTIONS, type TransactionEntity } from "../../services/transactions/views";
import { testConfig } from "../helpers/mint";
import { CONTRACT_SPEC, storeRoundTrip, type ContractDoc } from "../helpers/store-contract";

const dataDirs: string[] = [];
function config() {
	const c = testConfig({ EMBEDDED_STORE: "sqlite" });
	dataDirs.push(c.dataDir);
	return c;
}
afterAll(() => {
	for (const dir of dataDirs) fs.rmSync(dir, { recursive: true, force: true });
});

async function open<T>(c: ReturnType<typeof config>, service: string, spec: CollectionSpec): Promise<DbAdapter<T>> {
	const adapter = createAdapter<T>(c, service, spec);
	adapter.init({}, { logger: console });
	await adapter.connect();
	return adapter;
}

describe("createAdapter with EMBEDDED_STORE=sqlite", () => {
	it("returns the SQLite adapter persisted at DATA_DIR/<service>/<collection>.sqlite", () => {
		const c = config();
		const adapter = createAdapter(c, "auth", { name: "users" });
		expect(adapter).toBeInstanceOf(SqliteAdapter);
		expect(adapter).not.toBeInstanceOf(NedbAdapter);
		expect((adapter as SqliteAdapter<unknown>).filename).toBe(path.join(c.dataDir, "auth", "users.sqlite"));
	});

	it("refuses another engine name", () => {
		expect(() => testConfig({ EMBEDDED_STORE: "leveldb" })).toThrow(/EMBEDDED_STORE.*nedb or sqlite/);
	});
});

describe("SQLite store", () => {
	it("keeps the store contract: unique index, compare-and-set, queries, persistence, removal", async () => {
		const c = config();
		await storeRoundTrip(spec => createAdapter<ContractDoc>(c, "contract", spec));
		expect(fs.existsSync(path.join(c.dataDir, "contract", `${CONTRACT_SPEC.name}.sqlite`))).toBe(true);
	});
});

interface Row {
	_id: string;
	owner?: string | null;
	parties?: string[];
	createdAt?: string;
	due?: number | null;
	email?: string;
}

/** Lists by a multikey compound index, as transactions are listed by `parties`, newest first. */
const LISTED: CollectionSpec = {
	name: "listed",
	indexes: [{ fields: { parties: 1, createdAt: -1, _id: -1 } }, { fields: { due: 1 }, sparse: true }, { fields: { email: 1 }, unique: true, sparse: true }],
	counts: [["parties"]],
};

/** The rows SQLite holds in a table (what the index tables contain). */
function tableRows(file: string, sql: string, ...params: string[]): Record<string, unknown>[] {
	const { DatabaseSync } = require("node:sqlite") as typeof import("node:sqlite");
	const db = new DatabaseSync(file, { readOnly: true });
	try {
		return db.prepare(sql).all(...params);
	} finally {
		db.close();
	}
}

describe("SQLite store's index tables", () => {
	it("pages a party's list newest first from the compound index, and follows every change of its keys", async () => {
		const c = config();
		const store = await open<Row>(c, "transactions", LISTED);
		try {
			for (let i = 0; i < 30; i++) {
				await store.insert({
					_id: `t${String(i).padStart(2, "0")}`,
					parties: i % 3 === 0 ? ["ada", "bob"] : ["ada"],
					createdAt: `2026-01-${String(1 + (i % 10)).padStart(2, "0")}`,
				});
			}
			const expected = (await store.find({ query: { parties: "ada" } })).sort((a, b) =>
				a.createdAt === b.createdAt ? b._id.localeCompare(a._id) : (b.createdAt ?? "").localeCompare(a.createdAt ?? ""),
			);
			const page = (offset: number, limit = 7) => store.find({ query: { parties: "ada" }, sort: ["-createdAt", "-_id"], limit, offset });
			expect((await page(0)).map(r => r._id)).toEqual(expected.slice(0, 7).map(r => r._id));
			expect((await page(21)).map(r => r._id)).toEqual(expected.slice(21, 28).map(r => r._id));
			expect((await page(28)).map(r => r._id)).toEqual(expected.slice(28).map(r => r._id));
			expect(await store.count({ query: { parties: "ada" } })).toBe(30);
			expect(await store.count({ query: { parties: "bob" } })).toBe(10);
			// A range over the array: a document with both in it has two keys there, and is one match (as on MongoDB;
			// NeDB's own index answers it twice, which is why the comparison with NeDB below has no such range).
			expect(await store.count({ query: { parties: { $gte: "ada" } } })).toBe(30);
			expect((await store.find({ query: { parties: { $gte: "ada" } } })).length).toBe(30);

			// A changed sort key moves the document; a party taken out of the array drops it from that party's list.
			expect(await store.updateOne({ _id: "t05" }, { $set: { createdAt: "2027-01-01" } })).toBe(1);
			expect((await page(0, 1)).map(r => r._id)).toEqual(["t05"]);
			expect(await store.updateOne({ _id: "t03" }, { $pull: { parties: "bob" } })).toBe(1);
			expect(await store.count({ query: { parties: "bob" } })).toBe(9);
			expect((await store.find({ query: { parties: "bob" }, sort: ["-createdAt", "-_id"] })).map(r => r._id)).not.toContain("t03");
			expect(await store.removeMany({ parties: "bob" })).toBe(9);
			expect(await store.count({ query: { parties: "ada" } })).toBe(21);

			const file = path.join(c.dataDir, "transactions", "listed.sqlite");
			await store.disconnect();
			const keys = tableRows(file, 'SELECT k0, id FROM "ix_parties_a__createdAt_d___id_d" ORDER BY id');
			expect(keys.length).toBe(21);
			expect(new Set(keys.map(k => k.k0))).toEqual(new Set(["ada"]));
			// The counts kept beside the keys: bob's went to 0 with the removal, ada's follow her 21 documents.
			expect(tableRows(file, 'SELECT k0, n FROM "n_parties" ORDER BY k0').map(r => [r.k0, r.n])).toEqual([
				["ada", 21],
				["bob", 0],
			]);
		} finally {
			await store.disconnect();
		}
	});

	it("a sparse index holds only the documents with the field; a range over it finds the due ones in order", async () => {
		const c = config();
		const store = await open<Row>(c, "notifications", LISTED);
		try {
			await store.insertMany([{ _id: "a", due: 30 }, { _id: "b" }, { _id: "c", due: 10 }, { _id: "d", due: null }, { _id: "e", due: 20 }]);
			expect((await store.find({ query: { due: { $lte: 25 } }, sort: ["due"] })).map(r => r._id)).toEqual(["c", "e"]);
			expect(await store.updateOne({ _id: "c" }, { $unset: { due: true } })).toBe(1);
			expect((await store.find({ query: { due: { $lte: 25 } }, sort: ["due"] })).map(r => r._id)).toEqual(["e"]);
			expect((await store.find({ query: { due: null }, sort: ["_id"] })).map(r => r._id)).toEqual(["b", "c", "d"]);
			await store.disconnect();
			const keys = tableRows(path.join(c.dataDir, "notifications", "listed.sqlite"), 'SELECT id FROM "ix_due_a_s" ORDER BY id');
			expect(keys.map(k => k.id)).toEqual(["a", "d", "e"]);
		} finally {
			await store.disconnect();
		}
	});

	it("reads a page of a range sorted by the index's field in key order, and stops at the page's end", async () => {
		const c = config();
		const store = await open<Row>(c, "notifications", LISTED);
		try {
			const rows: Row[] = Array.from({ length: 1000 }, (_, i) => ({ _id: `r${String(i).padStart(4, "0")}`, due: (i * 7919) % 1000 }));
			await store.insertMany(rows);
			const parse = jest.spyOn(JSON, "parse");
			const page = await store.find({ query: { due: { $lte: 900 }, _id: { $ne: "r0000" } }, sort: ["due", "_id"], limit: 5, offset: 2 });
			const parsed = parse.mock.calls.length;
			parse.mockRestore();
			const expected = rows
				.filter(r => (r.due ?? 0) <= 900 && r._id !== "r0000")
				.sort((a, b) => (a.due ?? 0) - (b.due ?? 0) || a._id.localeCompare(b._id))
				.slice(2, 7);
			expect(page.map(r => r._id)).toEqual(expected.map(r => r._id));
			// Eight rows read (r0000 is due at 0 and skipped), not the 900 due ones.
			expect(parsed).toBe(8);

			// A value the keys do not order as NeDB does (null here) sends the page the general way: the same answer.
			await store.insert({ _id: "null-due", due: null });
			const withNull = await store.find({ query: { due: { $lte: 2 } }, sort: ["due", "_id"], limit: 2 });
			expect(withNull.map(r => r.due)).toEqual([0, 1]);
		} finally {
			await store.disconnect();
		}
	});

	it("reads a page of a party's list filtered by another field newest first in key order, and stops at the page's end", async () => {
		const c = config();
		const store = await open<Row>(c, "transactions", LISTED);
		try {
			const rows: Row[] = Array.from({ length: 600 }, (_, i) => ({
				_id: `t${String(i).padStart(4, "0")}`,
				parties: i % 3 === 0 ? ["ada", "bob"] : ["ada"],
				createdAt: `2026-01-01T00:${String(Math.floor(i / 60)).padStart(2, "0")}:${String(i % 60).padStart(2, "0")}Z`,
				owner: i % 2 === 0 ? "x" : "y",
			}));
			await store.insertMany(rows);
			const expected = rows
				.filter(r => r.owner === "x")
				.sort((a, b) => (b.createdAt ?? "").localeCompare(a.createdAt ?? "") || b._id.localeCompare(a._id))
				.slice(3, 8);
			const parse = jest.spyOn(JSON, "parse");
			const page = await store.find({ query: { parties: "ada", owner: "x" }, sort: ["-createdAt", "-_id"], limit: 5, offset: 3 });
			const parsed = parse.mock.calls.length;
			parse.mockRestore();
			expect(page.map(r => r._id)).toEqual(expected.map(r => r._id));
			expect(page.map(r => r._id)).toEqual(["t0592", "t0590", "t0588", "t0586", "t0584"]);
			// The newest 16 of ada's 600 rows (t0599 down to t0584) hold the 8 first matches: 16 read, not 600.
			expect(parsed).toBe(16);
		} finally {
			await store.disconnect();
		}
	});

	it("an update a unique index refuses changes nothing: the document, and every index, stay as they were", async () => {
		const c = config();
		const store = await open<Row>(c, "auth", LISTED);
		try {
			await store.insertMany([
				{ _id: "u1", email: "ada@example.com", parties: ["x"] },
				{ _id: "u2", email: "bob@example.com", parties: ["y"] },
			]);
			const err = await store.updateOne({ _id: "u2" }, { $set: { email: "ada@example.com", parties: ["z"] } }).catch(e => e);
			expect(err).toMatchObject({ errorType: "uniqueViolated" });
			expect(await store.findOne({ _id: "u2" })).toEqual({ _id: "u2", email: "bob@example.com", parties: ["y"] });
			expect(await store.count({ query: { parties: "z" } })).toBe(0);
			expect(await store.count({ query: { parties: "y" } })).toBe(1);
			// A batch insert is all or nothing.
			await expect(
				store.insertMany([
					{ _id: "u3", email: "cy@example.com" },
					{ _id: "u4", email: "bob@example.com" },
				]),
			).rejects.toMatchObject({
				errorType: "uniqueViolated",
			});
			expect(await store.findOne({ _id: "u3" })).toBeNull();
			expect(await store.findOne({ email: "cy@example.com" })).toBeNull();
		} finally {
			await store.disconnect();
		}
	});

	it("builds the index and count tables a newer spec adds from the documents, and drops those it no longer has", async () => {
		const c = config();
		const older = await open<Row>(c, "wallet", { name: "entries", indexes: [{ fields: { owner: 1 } }], counts: [["owner"]] });
		await older.insertMany([
			{ _id: "e1", owner: "ada", due: 5 },
			{ _id: "e2", owner: "bob", due: 7 },
			{ _id: "e3", owner: "ada" },
			{ _id: "e4", owner: "ada", due: 7 },
		]);
		await older.disconnect();
		const newer = await open<Row>(c, "wallet", { name: "entries", indexes: [{ fields: { due: 1 }, sparse: true }], counts: [["due", "owner"]] });
		try {
			expect((await newer.find({ query: { due: { $gt: 4 } }, sort: ["-due", "_id"] })).map(r => r._id)).toEqual(["e2", "e4", "e1"]);
			expect((await newer.find({ query: { owner: "ada" }, sort: ["_id"] })).map(r => r._id)).toEqual(["e1", "e3", "e4"]);
			// The new count, counted from the documents: by due alone, and by due and owner.
			expect(await newer.count({ query: { due: 7 } })).toBe(2);
			expect(await newer.count({ query: { due: 7, owner: "ada" } })).toBe(1);
			expect(await newer.count({ query: { owner: "ada" } })).toBe(3);
		} finally {
			await newer.disconnect();
		}
		const file = path.join(c.dataDir, "wallet", "entries.sqlite");
		expect(tableRows(file, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").map(t => t.name)).toEqual([
			"docs",
			"ix_due_a_s",
			"n_due__owner",
		]);
		// One row per combination of values (a missing due is keyed as null: -Infinity), as the writes would have kept it.
		expect(tableRows(file, 'SELECT k0, k1, n FROM "n_due__owner" ORDER BY k0, k1').map(r => [r.k0, r.k1, r.n])).toEqual([
			[Number.NEGATIVE_INFINITY, "ada", 1],
			[5, "ada", 1],
			[7, "ada", 1],
			[7, "bob", 1],
		]);
	});

	it("builds every index table of documents written without them (an import) in one go, and refuses a unique key taken twice", async () => {
		const c = config();
		// As `npm run data -- import` writes: the documents alone, in random order.
		const bare = await open<Row>(c, "transactions", { name: "listed" });
		const rows: Row[] = Array.from({ length: 500 }, (_, i) => ({
			_id: crypto.randomUUID(),
			parties: i % 5 === 0 ? ["ada", `u${i % 7}`] : [`u${i % 7}`],
			createdAt: `2026-01-${String(1 + (i % 28)).padStart(2, "0")}T00:00:${String(i % 60).padStart(2, "0")}Z`,
			...(i % 4 === 0 ? { due: i } : {}),
			email: `${i}@example.com`,
		}));
		await bare.insertMany(rows);
		await bare.disconnect();

		const store = await open<Row>(c, "transactions", LISTED);
		// What the build wrote is in the database file already, not left in the WAL for the first write to copy.
		expect(fs.statSync(path.join(c.dataDir, "transactions", "listed.sqlite-wal")).size).toBe(0);
		try {
			const ofAda = rows
				.filter(r => r.parties?.includes("ada"))
				.sort((a, b) => (a.createdAt === b.createdAt ? b._id.localeCompare(a._id) : (b.createdAt ?? "").localeCompare(a.createdAt ?? "")));
			expect(ofAda).toHaveLength(100);
			const page = await store.find({ query: { parties: "ada" }, sort: ["-createdAt", "-_id"], limit: 10, offset: 40 });
			expect(page.map(r => r._id)).toEqual(ofAda.slice(40, 50).map(r => r._id));
			expect(await store.count({ query: { parties: "u3" } })).toBe(rows.filter(r => r.parties?.includes("u3")).length);
			expect((await store.find({ query: { due: { $lt: 40 } }, sort: ["due"] })).map(r => r.due)).toEqual([0, 4, 8, 12, 16, 20, 24, 28, 32, 36]);
			expect((await store.findOne({ email: "77@example.com" }))?._id).toBe(rows[77]._id);
			await expect(store.insert({ _id: "again", email: "77@example.com" })).rejects.toMatchObject({ errorType: "uniqueViolated" });
		} finally {
			await store.disconnect();
		}
		const file = path.join(c.dataDir, "transactions", "listed.sqlite");
		expect(tableRows(file, 'SELECT COUNT(*) AS n FROM "ix_parties_a__createdAt_d___id_d"')[0].n).toBe(600);
		expect(tableRows(file, 'SELECT SUM(n) AS n FROM "n_parties"')[0].n).toBe(600);
		expect(tableRows(file, 'SELECT n FROM "n_parties" WHERE k0 = ?', "ada")[0].n).toBe(100);
		expect(tableRows(file, 'SELECT COUNT(*) AS n FROM "ix_due_a_s"')[0].n).toBe(125);
		// The scratch tables were temporary: nothing of them is left in the file.
		expect(tableRows(file, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").map(t => t.name)).toEqual([
			"docs",
			"ix_due_a_s",
			"ix_email_a_u_s",
			"ix_parties_a__createdAt_d___id_d",
			"n_parties",
		]);

		// Two documents with one email, written without the unique index: the build refuses them, and changes nothing.
		const twice = config();
		const loose = await open<Row>(twice, "transactions", { name: "listed" });
		await loose.insertMany([
			{ _id: "a", email: "same@example.com", parties: ["ada"] },
			{ _id: "b", email: "same@example.com", parties: ["bob"] },
		]);
		await loose.disconnect();
		await expect(open<Row>(twice, "transactions", LISTED)).rejects.toMatchObject({ errorType: "uniqueViolated" });
		const again = path.join(twice.dataDir, "transactions", "listed.sqlite");
		expect(tableRows(again, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").map(t => t.name)).toEqual(["docs"]);
		expect(tableRows(again, "SELECT id FROM docs ORDER BY id").map(r => r.id)).toEqual(["a", "b"]);
	});
});

describe("SQLite store's counts", () => {
	it("answers a user's list total, by type, status or both, from the transactions' counts, through every change", async () => {
		const c = config();
		const store = await open<TransactionEntity>(c, "transactions", TRANSACTIONS);
		const users = ["ada", "bob", "cy"];
		const types: TransactionType[] = ["TopUp", "Transfer"];
		const statuses: TransactionStatus[] = ["Pending", "Processing", "Completed", "Failed"];
		const random = (n: number) => crypto.randomInt(n);
		try {
			for (let i = 0; i < 120; i++) {
				const type = types[random(2)];
				const [from, to] = [users[random(3)], users[random(3)]];
				const parties = type === "TopUp" ? { userId: from } : { fromUserId: from, toUserId: to };
				await store.insert({
					_id: `t${i}`,
					type,
					status: "Pending",
					amountMinor: 100,
					currency: "USD",
					requestedBy: from,
					requestHash: "h",
					createdAt: new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString(),
					history: [],
					...parties,
					// A transfer to oneself has one party (partiesOf keeps both ids: the count holds it once).
					parties: partiesOf(parties),
				} as unknown as TransactionEntity);
			}
			// Each moves on as the processor moves it: compare-and-set from its current status; some are removed.
			for (let i = 0; i < 120; i++) {
				await store.updateOne({ _id: `t${i}`, status: "Pending" }, { $set: { status: "Processing" } });
				if (i % 4 !== 0) await store.updateOne({ _id: `t${i}`, status: "Processing" }, { $set: { status: i % 5 === 0 ? "Failed" : "Completed" } });
			}
			expect(await store.removeMany({ _id: { $in: ["t1", "t2", "t3"] } })).toBe(3);

			const all = await store.find({});
			const filters = [
				{},
				...types.map(type => ({ type })),
				...statuses.map(status => ({ status })),
				...types.flatMap(type => statuses.map(status => ({ type, status }))),
			];
			for (const user of users) {
				for (const filter of filters) {
					const expected = all.filter(tx => tx.parties.includes(user) && Object.entries(filter).every(([k, v]) => tx[k as "type"] === v)).length;
					expect({ user, filter, total: await store.count({ query: partyQuery(user, filter) }) }).toEqual({ user, filter, total: expected });
				}
			}
			const transfers = all.filter(tx => tx.parties.includes("ada") && tx.type === "Transfer").length;
			expect(transfers).toBeGreaterThan(0);
			// The total is the kept count, read at once: changed behind the store's back, the answer follows it.
			const file = path.join(c.dataDir, "transactions", "transactions.sqlite");
			const { DatabaseSync } = require("node:sqlite") as typeof import("node:sqlite");
			const db = new DatabaseSync(file);
			try {
				const sql = 'INSERT INTO "n_parties__type__status" VALUES (?, ?, ?, 1000) ON CONFLICT DO UPDATE SET n = n + 1000';
				expect(db.prepare(sql).run("ada", "Transfer", "Failed").changes).toBe(1);
			} finally {
				db.close();
			}
			const truth = (filter: Record<string, string>) =>
				all.filter(tx => tx.parties.includes("ada") && Object.entries(filter).every(([k, v]) => tx[k as "type"] === v)).length;
			expect(await store.count({ query: partyQuery("ada", { type: "Transfer" }) })).toBe(truth({ type: "Transfer" }) + 1000);
			expect(await store.count({ query: partyQuery("ada") })).toBe(truth({}) + 1000);
			expect(await store.count({ query: partyQuery("ada", { status: "Failed" }) })).toBe(truth({ status: "Failed" }) + 1000);
			expect(await store.count({ query: partyQuery("ada", { type: "Transfer", status: "Completed" }) })).toBe(truth({ type: "Transfer", status: "Completed" }));
			expect(await store.count({ query: partyQuery("ada", { type: "TopUp" }) })).toBe(truth({ type: "TopUp" }));
		} finally {
			await store.disconnect();
		}
	});
});

describe("SQLite store's filtered lists", () => {
	it("reads a page of a user's rare TopUps, or of no Failed at all, from the index that starts with them: not the user's every row", async () => {
		const c = config();
		const store = await open<TransactionEntity>(c, "transactions", TRANSACTIONS);
		try {
			// 600 transfers of ada's, Completed, and her two top-ups, the oldest; one transfer still Processing.
			const at = (i: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString();
			const base = { amountMinor: 1, currency: "USD", requestedBy: "ada", requestHash: "h", history: [] };
			await store.insert({
				...base,
				_id: "top-1",
				type: "TopUp",
				status: "Completed",
				userId: "ada",
				parties: ["ada"],
				createdAt: at(0),
			} as unknown as TransactionEntity);
			await store.insert({
				...base,
				_id: "top-2",
				type: "TopUp",
				status: "Completed",
				userId: "ada",
				parties: ["ada"],
				createdAt: at(1),
			} as unknown as TransactionEntity);
			for (let i = 0; i < 600; i++) {
				const tx = { ...base, _id: `tr-${String(i).padStart(3, "0")}`, type: "Transfer", status: "Processing", fromUserId: "ada", toUserId: "bob" };
				await store.insert({ ...tx, parties: ["ada", "bob"], createdAt: at(10 + i) } as unknown as TransactionEntity);
				if (i !== 300) await store.updateOne({ _id: tx._id, status: "Processing" }, { $set: { status: "Completed" } });
			}
			const page = async (filter: Parameters<typeof partyQuery>[1], limit = 5, offset = 0) => {
				const parse = jest.spyOn(JSON, "parse");
				try {
					const rows = await store.find({ query: partyQuery("ada", filter), sort: ["-createdAt", "-_id"], limit, offset });
					return { ids: rows.map(r => r._id), read: parse.mock.calls.length };
				} finally {
					parse.mockRestore();
				}
			};
			expect(await page({ type: "TopUp" })).toEqual({ ids: ["top-2", "top-1"], read: 2 });
			expect(await page({ status: "Failed" })).toEqual({ ids: [], read: 0 });
			expect(await page({ status: "Processing" })).toEqual({ ids: ["tr-300"], read: 1 });
			expect(await page({ type: "TopUp", status: "Completed" })).toEqual({ ids: ["top-2", "top-1"], read: 2 });
			expect(await page({ type: "Transfer", status: "Completed" }, 3, 1)).toEqual({ ids: ["tr-598", "tr-597", "tr-596"], read: 3 });
			// A status change moves the transaction between the status indexes' keys.
			await store.updateOne({ _id: "tr-300", status: "Processing" }, { $set: { status: "Failed" } });
			expect(await page({ status: "Processing" })).toEqual({ ids: [], read: 0 });
			expect(await page({ status: "Failed", type: "Transfer" })).toEqual({ ids: ["tr-300"], read: 1 });
			expect(await store.count({ query: partyQuery("ada", { status: "Failed" }) })).toBe(1);
			expect(await store.count({ query: partyQuery("bob", { type: "TopUp" }) })).toBe(0);
		} finally {
			await store.disconnect();
		}
	});
});

describe("SQLite store under auth's hourly purge", () => {
	it("reads the expired rows only, from the expiry indexes, however many live ones there are", async () => {
		const c = config();
		const stores = await Promise.all(EXTRA_COLLECTIONS.map(spec => open<Record<string, unknown>>(c, "auth", spec)));
		const byName = Object.fromEntries(EXTRA_COLLECTIONS.map((spec, i) => [spec.name, stores[i]]));
		const db = byName as unknown as AuthStores;
		const now = Date.now();
		try {
			// 300 rows of each kind, 10 of them expired.
			const at = (i: number) => (i < 10 ? now - 1000 - i : now + 60_000 + i);
			await byName.sessions.insertMany(Array.from({ length: 300 }, (_, i) => ({ _id: `s${i}`, familyId: `f${i}`, userId: `u${i}`, expiresAt: at(i) })));
			await byName.families.insertMany(Array.from({ length: 300 }, (_, i) => ({ _id: `f${i}`, userId: `u${i}`, absoluteExpiresAt: at(i) })));
			await byName.oneTimeTokens.insertMany(Array.from({ length: 300 }, (_, i) => ({ _id: `t${i}`, userId: `u${i}`, expiresAt: at(i) })));
			await byName.revocations.insertMany(Array.from({ length: 300 }, (_, i) => ({ _id: `f${i}`, expiresAt: at(i) })));
			const parse = jest.spyOn(JSON, "parse");
			const purged = await purgeExpired(db, now);
			const read = parse.mock.calls.length;
			parse.mockRestore();
			expect(purged).toEqual({ oneTimeTokens: 10, sessions: 10, families: 10, revocations: 10 });
			expect(read).toBe(40);
			expect(await db.sessions.count({})).toBe(290);
		} finally {
			await Promise.all(stores.map(store => store.disconnect()));
		}
	});
});

describe("SQLite store under the admin's list of users", () => {
	it("reads a page of every user, oldest first, in the createdAt index's order: not every user", async () => {
		const c = config();
		const store = await open<Record<string, unknown>>(c, "auth", USERS);
		try {
			// 500 users signed up in a shuffled order, two of them in one millisecond (the page order then goes by _id).
			const users = Array.from({ length: 500 }, (_, i) => ({
				_id: `u${String((i * 7919) % 500).padStart(3, "0")}`,
				email: `${i}@example.com`,
				createdAt: new Date(Date.UTC(2026, 0, 1) + (i === 499 ? 100 : i) * 1000).toISOString(),
			}));
			for (const user of users) await store.insert(user);
			const oldestFirst = [...users].sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a._id.localeCompare(b._id)).map(u => u._id);
			const page = async (offset: number) => {
				const parse = jest.spyOn(JSON, "parse");
				try {
					const rows = await store.find({ sort: ["createdAt", "_id"], limit: 10, offset });
					return { ids: rows.map(r => r._id), read: parse.mock.calls.length };
				} finally {
					parse.mockRestore();
				}
			};
			expect(await page(0)).toEqual({ ids: oldestFirst.slice(0, 10), read: 10 });
			expect(await page(95)).toEqual({ ids: oldestFirst.slice(95, 105), read: 105 });
			// Found by _id, sorted the same: the two documents are read, not the index in its order.
			const parse = jest.spyOn(JSON, "parse");
			const two = await store.find({ query: { _id: { $in: [oldestFirst[400], oldestFirst[3]] } }, sort: ["createdAt", "_id"], limit: 5 });
			expect({ ids: two.map(r => r._id), read: parse.mock.calls.length }).toEqual({ ids: [oldestFirst[3], oldestFirst[400]], read: 2 });
			parse.mockRestore();
			// A user without createdAt (the keys order it unlike NeDB would): the page is read the general way, and right.
			await store.insert({ _id: "u-none", email: "none@example.com" });
			const withNone = await page(0);
			expect(withNone.ids).toEqual(["u-none", ...oldestFirst.slice(0, 9)]);
			// (Its key is the first read: then all 501 users.)
			expect(withNone.read).toBe(502);
		} finally {
			await store.disconnect();
		}
	});
});

describe("SQLite store's pages by an index's order, with no filter", () => {
	it("finds a document whose indexed array is empty (one key of its own), as NeDB orders it", async () => {
		const c = config();
		const spec: CollectionSpec = { name: "listed", indexes: [{ fields: { parties: 1, createdAt: -1, _id: -1 } }] };
		const sqlite = await open<Row>(c, "transactions", spec);
		const nedb = new NedbAdapter<Row>(spec, path.join(c.dataDir, "nedb", "listed.db"));
		nedb.init({}, { logger: console });
		await nedb.connect();
		try {
			const rows: Row[] = [
				{ _id: "d0", parties: [] },
				{ _id: "d1", parties: "a" as never },
				{ _id: "d2", parties: [] },
				{ _id: "d3", parties: "b" as never },
			];
			for (const store of [sqlite, nedb]) await store.insertMany(rows.map(r => ({ ...r })));
			for (const [offset, limit] of [
				[0, 2],
				[0, 4],
				[2, 2],
			]) {
				const page = (store: DbAdapter<Row>) => store.find({ query: {}, sort: ["parties", "_id"], offset, limit });
				expect((await page(sqlite)).map(r => r._id)).toEqual((await page(nedb)).map(r => r._id));
			}
			expect((await sqlite.find({ query: {}, sort: ["parties", "_id"], limit: 4 })).map(r => r._id)).toEqual(["d1", "d3", "d0", "d2"]);
		} finally {
			await sqlite.disconnect();
			await nedb.disconnect();
		}
	});
});

describe("SQLite store against the NeDB store", () => {
	const party = fc.constantFrom("p", "q", "r");
	const doc = (i: number) =>
		fc.record(
			{
				_id: fc.constant(`d${i}`),
				owner: fc.constantFrom<string | null>("ada", "bob", "cy", null),
				// Mostly an array (a key per element when first in an index, one key for the whole when later), now and then one value.
				parties: fc.oneof({ weight: 4, arbitrary: fc.uniqueArray(party, { maxLength: 3 }) }, { weight: 1, arbitrary: party }) as fc.Arbitrary<string[]>,
				createdAt: fc.constantFrom("2026-01-01", "2026-01-02", "2026-01-03"),
				due: fc.oneof(fc.integer({ min: -3, max: 3 }), fc.constant(null)),
			},
			{ requiredKeys: ["_id"] },
		);
	const docs = fc.integer({ min: 0, max: 12 }).chain(n => fc.tuple(...Array.from({ length: n }, (_, i) => doc(i))));
	const id = fc.integer({ min: 0, max: 13 }).map(i => `d${i}`);
	const small = fc.integer({ min: -3, max: 3 });
	const leaf = fc.oneof(
		fc.record({ owner: fc.constantFrom("ada", "bob", "zed") }),
		fc.record({ parties: party }),
		fc.record({ parties: fc.record({ $in: fc.uniqueArray(party, { minLength: 1 }) }) }),
		fc.record({ createdAt: fc.constantFrom("2026-01-01", "2026-01-02") }),
		fc.record({ due: small }),
		fc.record({ due: fc.record({ $lt: small }) }),
		fc.record({ due: fc.record({ $gte: small, $lte: small }) }),
		fc.constant({ due: null }),
		fc.constant({ due: { $ne: null } }),
		// null on a non-sparse index's field: the index's null keys are the candidates (a missing field, null, an array holding null).
		fc.constant({ parties: null }),
		fc.constant({ owner: { $eq: null } }),
		fc.record({ _id: id }),
		fc.record({ _id: fc.record({ $in: fc.uniqueArray(id, { maxLength: 3 }) }) }),
		fc.record({ createdAt: fc.record({ $gt: fc.constantFrom("2026-01-01", "2026-01-02") }) }),
		fc.constant({}),
	);
	const query = fc.oneof(
		leaf,
		fc.tuple(leaf, leaf).map(([a, b]) => ({ ...b, ...a })),
		fc.tuple(leaf, leaf).map(([a, b]) => ({ $or: [a, b] })),
	);
	const twoFields = fc.oneof(
		fc.record({ owner: fc.constantFrom("ada", "bob"), parties: party }),
		fc.record({ owner: fc.constantFrom("ada", "bob"), createdAt: fc.constantFrom("2026-01-01", "2026-01-02") }),
	);
	// Every sort ends on _id: a total order, so a page is the same page on both.
	const sort = fc.constantFrom<string[] | undefined>(undefined, ["_id"], ["-createdAt", "-_id"], ["due", "_id"], ["-due", "owner", "-_id"], ["owner", "_id"]);
	const update = fc.oneof(
		fc.record({ $set: fc.record({ owner: fc.constantFrom("ada", "dan") }) }),
		fc.record({ $inc: fc.record({ due: small }) }),
		fc.record({ $push: fc.record({ parties: party }) }),
		fc.record({ $pull: fc.record({ parties: party }) }),
		fc.record({ $set: fc.record({ createdAt: fc.constantFrom("2026-01-04", "2025-12-31") }) }),
		fc.constant({ $unset: { due: true } }),
	);
	const step = fc.oneof(
		fc.record({ op: fc.constant("find" as const), query, sort, offset: fc.integer({ min: 0, max: 4 }), limit: fc.integer({ min: 0, max: 5 }) }),
		// A party's list, newest first: the page SQLite reads from the compound index.
		fc.record({
			op: fc.constant("find" as const),
			query: fc.record({ parties: party }),
			sort: fc.constant<string[] | undefined>(["-createdAt", "-_id"]),
			offset: fc.integer({ min: 0, max: 4 }),
			limit: fc.integer({ min: 0, max: 5 }),
		}),
		// No filter, sorted by an index's first field (a sparse one leaves documents out: not used for it).
		fc.record({
			op: fc.constant("find" as const),
			query: fc.constant({}),
			sort: fc.constantFrom<string[] | undefined>(["owner", "_id"], ["due", "_id"], ["parties", "_id"]),
			offset: fc.integer({ min: 0, max: 4 }),
			limit: fc.integer({ min: 0, max: 5 }),
		}),
		// Equalities on an index's first two fields: the candidates are the keys of both (unless an array is there).
		fc.record({ op: fc.constant("find" as const), query: twoFields, sort, offset: fc.integer({ min: 0, max: 4 }), limit: fc.integer({ min: 0, max: 5 }) }),
		fc.record({ op: fc.constant("count" as const), query: fc.oneof(query, twoFields) }),
		fc.record({ op: fc.constant("updateMany" as const), query, update }),
		fc.record({ op: fc.constant("updateOne" as const), query: fc.record({ _id: id }), update }),
		fc.record({ op: fc.constant("removeMany" as const), query }),
	);

	it("answers every find, count, update and removal as the NeDB store does", async () => {
		const c = config();
		const spec: CollectionSpec = {
			name: "compared",
			indexes: [
				{ fields: { owner: 1 } },
				{ fields: { parties: 1, createdAt: -1, _id: -1 } },
				{ fields: { due: 1 }, sparse: true },
				// Equalities on their first two fields: owner and the day, or owner and parties (arrays: keyed whole there).
				{ fields: { owner: 1, createdAt: 1, due: 1 } },
				{ fields: { owner: 1, parties: 1, createdAt: -1 } },
			],
			// By owner and parties (arrays, counted whole: an equality on them is left to the next); by parties and any of owner and due; by due.
			counts: [["owner", "parties"], ["parties", "owner", "due"], ["due"]],
		};
		const sqlite = await open<Row>(c, "compared", spec);
		const nedb = new NedbAdapter<Row>(spec, path.join(c.dataDir, "compared", "compared.db"));
		nedb.init({}, { logger: console });
		await nedb.connect();
		const all = async (store: DbAdapter<Row>) => (await store.find({})).sort((a, b) => a._id.localeCompare(b._id));
		try {
			await fc.assert(
				fc.asyncProperty(docs, fc.array(step, { minLength: 1, maxLength: 8 }), async (initial, steps) => {
					await sqlite.clear();
					await nedb.clear();
					await sqlite.insertMany(initial.map(d => ({ ...d })));
					await nedb.insertMany(initial.map(d => ({ ...d })));
					for (const s of steps) {
						const both = async <R>(run: (store: DbAdapter<Row>) => Promise<R>) => [await run(sqlite), await run(nedb)];
						if (s.op === "find") {
							const [a, b] = await both(store => store.find({ query: s.query, sort: s.sort, ...(s.sort ? { offset: s.offset, limit: s.limit } : {}) }));
							if (s.sort) expect(a).toEqual(b);
							else expect(new Set(a)).toEqual(new Set(b));
						} else if (s.op === "count") {
							const [a, b] = await both(store => store.count({ query: s.query }));
							expect(a).toBe(b);
						} else if (s.op === "removeMany") {
							const [a, b] = await both(store => store.removeMany(s.query));
							expect(a).toBe(b);
						} else {
							const [a, b] = await both(store => store[s.op](s.query, s.update).catch(() => "refused"));
							expect(a).toBe(b);
						}
						expect(await all(sqlite)).toEqual(await all(nedb));
					}
				}),
				{ numRuns: 300 },
			);
		} finally {
			await sqlite.disconnect();
			await nedb.disconnect();
		}
	});
});
