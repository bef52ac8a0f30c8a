/**
 * NeDB's whole-file rewrite in chunks (mixins/db/nedb-rewrite.ts): at load and
 * at compaction it writes the very bytes NeDB's own rewrite writes, in a file
 * with the same mode, leaves no temporary file, and says it is done as NeDB does.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import Nedb from "@seald-io/nedb";
import { chunkedRewrites } from "../../mixins/db/nedb-rewrite";

let dir: string;
beforeEach(() => {
	dir = fs.mkdtempSync(path.join(os.tmpdir(), "mint-nedb-rewrite-"));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A collection of ~2.5 MB (more than two of the rewrite's 1 MB chunks), with indexes, dates, updates and removals. */
async function fill(db: Nedb<Record<string, unknown>>): Promise<void> {
	await db.ensureIndexAsync({ fieldName: "owner" });
	await db.ensureIndexAsync({ fieldName: "slot", unique: true, sparse: true });
	const docs = Array.from({ length: 6000 }, (_, i) => ({
		_id: `d${i}`,
		owner: `u${i % 37}`,
		note: `ünïcode ${"x".repeat(300)} ${i}`,
		at: new Date(1_700_000_000_000 + i),
		...(i % 5 === 0 ? { slot: i } : {}),
	}));
	await db.insertAsync(docs);
	await db.updateAsync({ owner: "u3" }, { $set: { flag: true } }, { multi: true });
	await db.removeAsync({ owner: "u4" }, { multi: true });
}

async function filesAfter(chunked: boolean): Promise<{ afterCompaction: string; afterLoad: string; mode: number; leftovers: string[]; done: number }> {
	const file = path.join(dir, chunked ? "chunked.db" : "nedb.db");
	const first = new Nedb<Record<string, unknown>>({ filename: file });
	if (chunked) chunkedRewrites(first);
	let done = 0;
	first.on("compaction.done", () => done++);
	await first.loadDatabaseAsync();
	await fill(first);
	await first.compactDatafileAsync();
	const afterCompaction = fs.readFileSync(file, "utf8");
	// A new datastore loads it, and the load rewrites it.
	const second = new Nedb<Record<string, unknown>>({ filename: file });
	if (chunked) chunkedRewrites(second);
	await second.loadDatabaseAsync();
	const afterLoad = fs.readFileSync(file, "utf8");
	return { afterCompaction, afterLoad, mode: fs.statSync(file).mode & 0o777, leftovers: fs.readdirSync(dir).filter(f => f.endsWith("~")), done };
}

describe("NeDB's rewrite in chunks", () => {
	it("writes the bytes NeDB's own rewrite writes, at compaction and at load, with its mode, no leftovers, and compaction.done", async () => {
		const nedb = await filesAfter(false);
		const chunked = await filesAfter(true);
		expect(chunked.afterCompaction.length).toBeGreaterThan(2 << 20);
		expect(chunked.afterCompaction).toBe(nedb.afterCompaction);
		expect(chunked.afterLoad).toBe(nedb.afterLoad);
		expect(chunked.afterLoad).toBe(chunked.afterCompaction);
		expect([chunked.mode, chunked.leftovers, chunked.done]).toEqual([nedb.mode, [], nedb.done]);
		expect(chunked.done).toBeGreaterThanOrEqual(2);
	});

	it("keeps the old file whole when the rewrite fails", async () => {
		const file = path.join(dir, "kept.db");
		const db = new Nedb<Record<string, unknown>>({ filename: file });
		chunkedRewrites(db);
		await db.loadDatabaseAsync();
		await db.insertAsync({ _id: "a", n: 1 });
		await db.compactDatafileAsync();
		await db.insertAsync({ _id: "b", n: 2 });
		const before = fs.readFileSync(file, "utf8");
		// The temporary file cannot be made: a folder is in its place.
		fs.mkdirSync(`${file}~`);
		await expect(db.compactDatafileAsync()).rejects.toMatchObject({ code: "EISDIR" });
		expect(fs.readFileSync(file, "utf8")).toBe(before);
		fs.rmdirSync(`${file}~`);
		await db.compactDatafileAsync();
		const reloaded = new Nedb<Record<string, unknown>>({ filename: file });
		await reloaded.loadDatabaseAsync();
		expect((await reloaded.findAsync({})).map(d => d._id).sort()).toEqual(["a", "b"]);
	});
});
