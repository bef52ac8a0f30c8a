/**
 * Group commit on NeDB's data files (mixins/db/append-log.ts), on real files:
 * a write answers once its change is in the file, concurrent writes share
 * file writes, compaction in the middle of them loses nothing, and a failed
 * file write fails the writes it carried.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import Nedb from "@seald-io/nedb";
import { AppendLog } from "../../mixins/db/append-log";
import { NedbAdapter } from "../../mixins/db/nedb-adapter";

interface Doc {
	_id: string;
	n: number;
}

let dir: string;
beforeEach(() => {
	dir = fs.mkdtempSync(path.join(os.tmpdir(), "mint-append-log-"));
});
afterEach(() => {
	jest.restoreAllMocks();
	fs.rmSync(dir, { recursive: true, force: true });
});

async function openAdapter(file: string) {
	const adapter = new NedbAdapter<Doc>({ name: "docs", indexes: [{ fields: { n: 1 }, unique: true }] }, file);
	adapter.init({}, { logger: console });
	await adapter.connect();
	return adapter;
}

/** What a fresh NeDB reads back from the file: the documents by id. */
async function reload(file: string): Promise<Map<string, Doc>> {
	const db = new Nedb<Doc>({ filename: file });
	await db.loadDatabaseAsync();
	const docs = await db.findAsync({});
	return new Map(docs.map(doc => [doc._id, doc]));
}

describe("AppendLog on a NeDB data file", () => {
	it("answers a write only once its line is in the file", async () => {
		const file = path.join(dir, "docs.db");
		const adapter = await openAdapter(file);
		try {
			await adapter.insert({ _id: "a", n: 1 });
			expect(fs.readFileSync(file, "utf8")).toContain('"_id":"a"');
			expect(await adapter.updateOne({ _id: "a", n: 1 }, { $set: { n: 2 } })).toBe(1);
			const lines = fs.readFileSync(file, "utf8").trim().split("\n");
			expect(JSON.parse(lines[lines.length - 1])).toEqual({ _id: "a", n: 2 });
		} finally {
			await adapter.disconnect();
		}
	});

	it("carries concurrent writes in fewer file writes, and a fresh load reads every one of them", async () => {
		const file = path.join(dir, "docs.db");
		const db = new Nedb<Doc>({ filename: file });
		await db.loadDatabaseAsync();
		const log = await AppendLog.attach(db);
		const inserts = Array.from({ length: 200 }, (_, i) => db.insertAsync({ _id: `d${i}`, n: i }).then(() => log.written()));
		const updates = Array.from({ length: 200 }, (_, i) => db.updateAsync({ _id: `d${i}` }, { $inc: { n: 1000 } }, {}).then(() => log.written()));
		await Promise.all([...inserts, ...updates]);
		// 400 changes, each its own line, in far fewer writes.
		expect(log.changes).toBe(400);
		expect(log.writes).toBeLessThan(log.changes / 4);
		await log.close();

		const back = await reload(file);
		expect(back.size).toBe(200);
		for (let i = 0; i < 200; i++) expect(back.get(`d${i}`)).toEqual({ _id: `d${i}`, n: i + 1000 });
	});

	it("loses nothing when the file is compacted between writes, and appends to the new file after", async () => {
		const file = path.join(dir, "docs.db");
		const adapter = await openAdapter(file);
		const before = Array.from({ length: 100 }, (_, i) => adapter.insert({ _id: `b${i}`, n: i }));
		const db = (adapter as unknown as { db: Nedb<Doc> }).db;
		const compaction = db.compactDatafileAsync();
		const after = Array.from({ length: 100 }, (_, i) => adapter.insert({ _id: `c${i}`, n: 100 + i }));
		await Promise.all([...before, compaction, ...after]);
		await adapter.insert({ _id: "last", n: 1000 });
		// The last write went to the compacted file (the one at the path), not to the replaced one.
		expect(fs.readFileSync(file, "utf8")).toContain('"_id":"last"');
		await adapter.disconnect();

		const back = await reload(file);
		expect(back.size).toBe(201);
		expect(back.get("b0")).toEqual({ _id: "b0", n: 0 });
		expect(back.get("c99")).toEqual({ _id: "c99", n: 199 });
	});

	/** Replaces fs.writeSync on the data file's descriptor (AppendLog writes there synchronously); other writes pass. */
	function onFileWrites(file: string, write: (real: typeof fs.writeSync, fd: number, data: Buffer, offset: number) => number) {
		const real = fs.writeSync.bind(fs) as typeof fs.writeSync;
		const isFile = (fd: number) => {
			try {
				return fs.readlinkSync(`/proc/self/fd/${fd}`) === file;
			} catch {
				return false;
			}
		};
		return jest
			.spyOn(fs, "writeSync")
			.mockImplementation(((fd: number, data: Buffer, offset: number, ...rest: never[]) =>
				isFile(fd) ? write(real, fd, data, offset) : real(fd, data, offset, ...rest)) as typeof fs.writeSync);
	}

	it("fails the writes a failed file write carried, and writes them with the next ones: the file never misses what memory has", async () => {
		const file = path.join(dir, "docs.db");
		let failures = 0;
		const spy = onFileWrites(file, (real, fd, data, offset) => {
			if (failures-- > 0) throw Object.assign(new Error("ENOSPC: no space left on device"), { code: "ENOSPC" });
			return real(fd, data, offset);
		});
		const adapter = await openAdapter(file);
		try {
			// The first try and the retry fail: the write is told.
			failures = 2;
			await expect(adapter.insert({ _id: "lost", n: 1 })).rejects.toMatchObject({ code: "ENOSPC" });
			// The retry, on its own a moment later, fails too; the next write carries both lines.
			for (let waited = 0; waited < 100 && failures > 0; waited++) await new Promise(resolve => setTimeout(resolve, 20));
			expect(failures).toBe(0);
			await adapter.insert({ _id: "kept", n: 2 });
			expect(fs.readFileSync(file, "utf8")).toContain('"_id":"kept"');
			expect(spy.mock.calls.length).toBeGreaterThanOrEqual(3);
		} finally {
			await adapter.disconnect();
		}
		jest.restoreAllMocks();
		expect([...(await reload(file)).keys()].sort()).toEqual(["kept", "lost"]);
	});

	it("goes on where a short write stopped: every line whole in the file", async () => {
		const file = path.join(dir, "docs.db");
		// The file takes at most 7 bytes a write.
		const spy = onFileWrites(file, (real, fd, data, offset) => real(fd, data, offset, Math.min(7, data.length - offset)));
		const adapter = await openAdapter(file);
		try {
			await Promise.all(Array.from({ length: 20 }, (_, i) => adapter.insert({ _id: `s${i}`, n: i })));
			expect(spy.mock.calls.length).toBeGreaterThan(20);
		} finally {
			await adapter.disconnect();
		}
		jest.restoreAllMocks();
		const back = await reload(file);
		expect(back.size).toBe(20);
		for (let i = 0; i < 20; i++) expect(back.get(`s${i}`)).toEqual({ _id: `s${i}`, n: i });
	});

	it("compacts the file once what was appended outgrows it (and 4 MiB), not before; the documents stay", async () => {
		const file = path.join(dir, "docs.db");
		const adapter = await openAdapter(file);
		try {
			const padding = "x".repeat(1000);
			await adapter.insert({ _id: "a", n: 0, padding } as Doc);
			for (let i = 1; i <= 1000; i++) await adapter.updateOne({ _id: "a" }, { $set: { n: -i } });
			// About 1 MB appended: not worth a rewrite yet.
			expect(await adapter.compactIfGrown()).toBe(false);
			for (let round = 0; round < 4; round++) {
				await Promise.all(Array.from({ length: 1000 }, (_, i) => adapter.updateOne({ _id: "a" }, { $inc: { n: 1 } }).then(() => i)));
			}
			expect(fs.statSync(file).size).toBeGreaterThan(4 << 20);
			expect(await adapter.compactIfGrown()).toBe(true);
			expect(fs.statSync(file).size).toBeLessThan(2000);
			expect(await adapter.compactIfGrown()).toBe(false);
			await adapter.updateOne({ _id: "a" }, { $set: { n: 7 } });
		} finally {
			await adapter.disconnect();
		}
		expect((await reload(file)).get("a")).toMatchObject({ _id: "a", n: 7 });
	});

	it("goes on appending to the old file when a compaction fails, and loses nothing", async () => {
		const file = path.join(dir, "docs.db");
		const adapter = await openAdapter(file);
		const db = (adapter as unknown as { db: Nedb<Doc> }).db;
		const storage = require("@seald-io/nedb/lib/storage");
		// The rewrite (mixins/db/nedb-rewrite.ts) writes the compacted file aside and renames it: failing on its way (its first
		// fsync, through NeDB's storage) leaves the old file as it was.
		const rewrite = jest.spyOn(storage, "flushToStorageAsync").mockRejectedValueOnce(Object.assign(new Error("EIO: i/o error"), { code: "EIO" }));
		try {
			await adapter.insert({ _id: "before", n: 1 });
			const writes = [adapter.insert({ _id: "during", n: 2 })];
			await expect(db.compactDatafileAsync()).rejects.toMatchObject({ code: "EIO" });
			expect(rewrite).toHaveBeenCalledTimes(1);
			writes.push(adapter.insert({ _id: "after", n: 3 }));
			await Promise.all(writes);
			expect(fs.readFileSync(file, "utf8")).toContain('"_id":"after"');
		} finally {
			await adapter.disconnect();
		}
		expect([...(await reload(file)).keys()].sort()).toEqual(["after", "before", "during"]);
	});

	it("keeps no file open when a connect fails (it is tried again every second)", async () => {
		const file = path.join(dir, "docs.db");
		/** This process's descriptors open on the file (Linux). */
		const openOnFile = () =>
			fs.readdirSync("/proc/self/fd").filter(fd => {
				try {
					return fs.readlinkSync(`/proc/self/fd/${fd}`) === file;
				} catch {
					return false;
				}
			}).length;
		for (let attempt = 0; attempt < 3; attempt++) {
			const adapter = new NedbAdapter<Doc>({ name: "docs", indexes: [{ fields: { n: 1, _id: 1 }, unique: true }] }, file);
			adapter.init({}, { logger: console });
			await expect(adapter.connect()).rejects.toThrow(/single-field unique indexes only/);
		}
		expect(openOnFile()).toBe(0);
	});
});
