/**
 * NeDB rewrites a collection's whole data file from memory at every load (so
 * that the file holds only live documents) and at every compaction. Its
 * writer hands each line to a write stream on its own, without waiting for
 * the stream: the whole file is first buffered as one small Buffer per line
 * (each a Buffer.from of the line, from an 8 kB pool made over and over),
 * hundreds of megabytes of memory outside V8's heap that make it collect
 * again and again. In a profile of a node on a world of 300,000 transactions
 * (a 400 MB transactions file), those two rewrites (at start, and the
 * compaction at stop) took 19 s in Buffer allocation alone.
 *
 * `chunkedRewrites` gives a datastore a rewrite that writes the same lines
 * in 1 MB chunks, one write at a time, with NeDB's crash safety: written
 * aside (`<file>~`), fsynced, renamed over the file, and the folder fsynced
 * (NeDB's own storage.flushToStorageAsync for the fsyncs); then the same
 * "compaction.done" event. Set before the datastore loads.
 */
import fsp from "node:fs/promises";
import path from "node:path";

/** NeDB's storage helpers (lib/storage.js), as much as this uses. */
const storage: {
	flushToStorageAsync(options: { filename: string; isDir?: boolean; mode?: number }): Promise<void>;
} = require("@seald-io/nedb/lib/storage");
/** NeDB's document serializer (lib/model.js), the one its own rewrite uses. */
const model: { serialize(doc: object): string } = require("@seald-io/nedb/lib/model");

interface Persistence {
	filename: string;
	inMemoryOnly: boolean;
	modes: { fileMode: number; dirMode: number };
	afterSerialization(line: string): string;
	persistCachedDatabaseAsync(): Promise<void>;
}

interface Datastore {
	persistence: Persistence;
	indexes: Record<string, { unique: boolean; sparse: boolean }>;
	getAllData(): object[];
	emit(event: string): void;
}

const CHUNK_CHARS = 1 << 20;

/** Gives this datastore NeDB's whole-file rewrite, written in chunks (before it loads: the load rewrites too). */
export function chunkedRewrites(datastore: unknown): void {
	const db = datastore as Datastore;
	const persistence = db.persistence;
	persistence.persistCachedDatabaseAsync = async () => {
		if (persistence.inMemoryOnly) return;
		await rewrite(db);
		db.emit("compaction.done");
	};
}

/** The lines NeDB writes: every document, then an `$$indexCreated` line per index but _id. */
function* linesOf(db: Datastore): Generator<string> {
	const line = (doc: object) => db.persistence.afterSerialization(model.serialize(doc));
	for (const doc of db.getAllData()) yield line(doc);
	for (const [fieldName, index] of Object.entries(db.indexes)) {
		if (fieldName !== "_id") yield line({ $$indexCreated: { fieldName, unique: index.unique, sparse: index.sparse } });
	}
}

async function rewrite(db: Datastore): Promise<void> {
	const { filename, modes } = db.persistence;
	const folder = { filename: path.dirname(filename), isDir: true, mode: modes.dirMode };
	const temp = `${filename}~`;
	await storage.flushToStorageAsync(folder);
	if (await exists(filename)) await storage.flushToStorageAsync({ filename, mode: modes.fileMode });
	const handle = await fsp.open(temp, "w", modes.fileMode);
	try {
		let chunk = "";
		for (const line of linesOf(db)) {
			chunk += `${line}\n`;
			if (chunk.length >= CHUNK_CHARS) {
				await handle.appendFile(chunk);
				chunk = "";
			}
		}
		if (chunk) await handle.appendFile(chunk);
		await handle.sync();
	} finally {
		await handle.close();
	}
	await fsp.rename(temp, filename);
	await storage.flushToStorageAsync(folder);
}

const exists = (file: string) =>
	fsp.access(file).then(
		() => true,
		() => false,
	);
