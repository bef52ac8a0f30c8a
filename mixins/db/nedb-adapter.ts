/**
 * The embedded backend: NeDB (@seald-io/nedb), one file per collection, on
 * NeDB's own promise API (moleculer-db's MemoryAdapter wraps it in
 * util.promisify, one wrapper of which returns a Promise, so Node warns,
 * DEP0174, on every update). Filters are rewritten to MongoDB's null
 * semantics (mixins/db/store.ts) before NeDB sees them.
 */
import fs from "node:fs";
import path from "node:path";
import Nedb from "@seald-io/nedb";
import { storeOperationCounter } from "../../lib/business-metrics";
import { AppendLog } from "./append-log";
import { bulkIndexLoads } from "./nedb-index-load";
import { indexUpdatesInPlace } from "./nedb-index-update";
import { fastDocumentJson } from "./nedb-json";
import { countMatching, sortedPage } from "./nedb-reads";
import { chunkedRewrites } from "./nedb-rewrite";
import {
	checkFilter,
	isOperatorObject,
	paging,
	refuseSearch,
	PlainDocuments,
	sortSpec,
	type AdapterOwner,
	type CollectionSpec,
	type CursorParams,
	type DbAdapter,
} from "./store";

/**
 * A filter with MongoDB's null semantics, for NeDB: `{f: null}` and
 * `{f: {$eq: null}}` also match a document without `f`; `{f: {$ne: null}}`
 * matches only one where `f` exists and is not null. The other fields stay
 * at the top, where NeDB looks for an index (`_id`, a unique key); the null
 * conditions join them in `$and`.
 */
export function withMongoNulls(query: object): object {
	const out: Record<string, unknown> = {};
	const nullMatches: object[] = [];
	const missingOrNull = (field: string) => ({ $or: [{ [field]: null }, { [field]: { $exists: false } }] });
	for (const [key, value] of Object.entries(query)) {
		if (key === "$and" || key === "$or" || key === "$nor") {
			out[key] = (value as object[]).map(withMongoNulls);
		} else if (key.startsWith("$")) {
			out[key] = value;
		} else if (value === null) {
			nullMatches.push(missingOrNull(key));
		} else if (isOperatorObject(value) && (value.$eq === null || value.$ne === null)) {
			const { $eq, ...rest } = value;
			if ($eq === null) nullMatches.push(missingOrNull(key));
			if (rest.$ne === null) rest.$exists = true;
			if (Object.keys(rest).length > 0) out[key] = rest;
		} else {
			out[key] = value;
		}
	}
	if (nullMatches.length > 0) out.$and = [...((out.$and as object[] | undefined) ?? []), ...nullMatches];
	return out;
}

/** How often a data file's growth is checked, and the least growth worth a compaction. */
const COMPACTION_CHECK_MS = 30_000;
const COMPACTION_MIN_BYTES = 4 << 20;

/** (NeDB hands out plain copies already, as PlainDocuments assumes.) */
export class NedbAdapter<T> extends PlainDocuments<T> implements DbAdapter<T> {
	private db: Nedb<T> | null = null;
	/** The data file's appends, grouped (mixins/db/append-log.ts): a write answers once its lines are in the file. */
	private log: AppendLog | null = null;
	private compactionTimer: NodeJS.Timeout | null = null;
	/** Counts each operation in `mint_store_operations_total` (lib/business-metrics.ts), once init() has the broker. */
	private counted: (operation: string) => void = () => undefined;

	constructor(
		private readonly spec: CollectionSpec,
		readonly filename: string,
	) {
		super();
		fs.mkdirSync(path.dirname(filename), { recursive: true, mode: 0o700 });
	}

	/** Keeps only the broker's metrics, to count operations with (labelled with the owner's name, else the folder's: DATA_DIR/<service>). */
	init(broker: unknown, service: AdapterOwner): void {
		this.counted = storeOperationCounter(broker, service.name ?? path.basename(path.dirname(this.filename)), this.spec.name);
	}

	async connect(): Promise<void> {
		fastDocumentJson();
		bulkIndexLoads();
		const db = new Nedb<T>({ filename: this.filename });
		chunkedRewrites(db);
		await db.loadDatabaseAsync();
		const log = await AppendLog.attach(db);
		try {
			await this.prepareIndexes(db);
			indexUpdatesInPlace(db);
			await log.written();
		} catch (err) {
			// A connect that fails is tried again: it keeps no file open.
			await log.close().catch(() => undefined);
			throw err;
		}
		this.log = log;
		this.db = db;
		// NeDB appends every write: the file is compacted once what was appended outgrows what was there (compactIfGrown).
		this.compactionTimer = setInterval(() => void this.compactIfGrown().catch(() => undefined), COMPACTION_CHECK_MS).unref();
	}

	/** The spec's indexes, and only those. */
	private async prepareIndexes(db: Nedb<T>): Promise<void> {
		for (const index of this.spec.indexes ?? []) {
			const fields = Object.keys(index.fields);
			// A compound index narrows by its first field here (its other fields order a list on SQLite and MongoDB);
			// a unique one would not be enforced.
			if (fields.length !== 1 && index.unique) throw new Error(`NeDB supports single-field unique indexes only (${this.spec.name})`);
			await db.ensureIndexAsync({ fieldName: fields[0], unique: !!index.unique, sparse: !!index.sparse });
		}
		// NeDB keeps the indexes a file was given and rebuilds them at load: one the spec no longer has
		// (an older version's) would still be paid for on every update. These files are Mint's own, so
		// it goes (on MongoDB, where an operator may keep indexes of their own, nothing is dropped).
		const wanted = new Set(["_id", ...(this.spec.indexes ?? []).map(index => Object.keys(index.fields)[0])]);
		// (NeDB's typings leave out its `indexes` map, keyed by field name.)
		const present = Object.keys((db as unknown as { indexes: Record<string, unknown> }).indexes);
		for (const fieldName of present) if (!wanted.has(fieldName)) await db.removeIndexAsync(fieldName);
	}

	async disconnect(): Promise<void> {
		const db = this.db;
		this.db = null;
		if (db) {
			if (this.compactionTimer) clearInterval(this.compactionTimer);
			await db.compactDatafileAsync();
			await this.log?.close();
			this.log = null;
		}
	}

	/**
	 * Compacts the data file (NeDB rewrites it from memory: the live documents only) once the lines appended
	 * since it was last written outgrow it, and at least COMPACTION_MIN_BYTES: the file stays under about twice
	 * its live size, and a full rewrite costs as much as the appends it reclaims. Whether it compacted.
	 */
	async compactIfGrown(): Promise<boolean> {
		const { db, log } = this;
		if (!db || !log || log.appendedBytes < Math.max(log.baseBytes, COMPACTION_MIN_BYTES)) return false;
		await db.compactDatafileAsync();
		return true;
	}

	private get store(): Nedb<T> {
		if (!this.db) throw new Error(`NeDB store ${this.spec.name} is not connected`);
		return this.db;
	}

	/** A filter as the services wrote it, checked (no undefined values), with MongoDB's null semantics. */
	private filter(query: object | undefined): object {
		checkFilter(query ?? {}, this.spec.name);
		return withMongoNulls(query ?? {});
	}

	async find(params?: CursorParams | null): Promise<T[]> {
		this.counted("find");
		refuseSearch(params, "NedbAdapter");
		const cursor = this.store.findAsync(this.filter(params?.query));
		if (params?.sort) cursor.sort(sortSpec(params.sort));
		const { skip, limit } = paging(params);
		if (limit) cursor.limit(limit);
		if (skip) cursor.skip(skip);
		// A sorted page: kept as the matches are read, not sorted whole (mixins/db/nedb-reads.ts).
		return sortedPage<T>(cursor) ?? cursor.execAsync();
	}

	async findOne(query: object): Promise<T | null> {
		this.counted("findOne");
		return this.store.findOneAsync(this.filter(query)).execAsync();
	}

	async findById(id: unknown): Promise<T | null> {
		this.counted("findById");
		return this.store.findOneAsync(this.filter({ _id: id })).execAsync();
	}

	async findByIds(ids: unknown[]): Promise<T[]> {
		this.counted("findByIds");
		return this.store.findAsync({ _id: { $in: ids } }).execAsync();
	}

	// Counts in place: no copy of each matching document, unlike find(); and without skip or limit, matching
	// only what the index NeDB reads from does not already say (mixins/db/nedb-reads.ts).
	async count(params?: CursorParams | null): Promise<number> {
		this.counted("count");
		refuseSearch(params, "NedbAdapter");
		const query = this.filter(params?.query) as Record<string, unknown>;
		const { skip, limit } = paging(params);
		if (!skip && !limit) return countMatching<T>(this.store, query);
		const cursor = this.store.countAsync(query);
		if (limit) cursor.limit(limit);
		if (skip) cursor.skip(skip);
		return cursor.execAsync();
	}

	/** A write's result once its change is in the data file (a failed write's change may be there too: NeDB's own contract). */
	private async written<R>(change: Promise<R>): Promise<R> {
		try {
			return await change;
		} finally {
			await this.log?.written();
		}
	}

	async insert(doc: T): Promise<T> {
		this.counted("insert");
		return this.written(this.store.insertAsync(doc));
	}

	async insertMany(docs: T[]): Promise<T[]> {
		this.counted("insertMany");
		return this.written(this.store.insertAsync(docs));
	}

	async updateOne(query: object, update: object, opts: { upsert?: boolean } = {}): Promise<number> {
		this.counted("updateOne");
		return (await this.written(this.store.updateAsync(this.filter(query), update, { multi: false, upsert: !!opts.upsert }))).numAffected;
	}

	async updateMany(query: object, update: object): Promise<number> {
		this.counted("updateMany");
		return (await this.written(this.store.updateAsync(this.filter(query), update, { multi: true }))).numAffected;
	}

	async updateById(id: unknown, update: object): Promise<T | null> {
		this.counted("updateById");
		const { affectedDocuments } = await this.written(this.store.updateAsync<T>({ _id: id }, update, { returnUpdatedDocs: true }));
		return Array.isArray(affectedDocuments) ? (affectedDocuments[0] ?? null) : affectedDocuments;
	}

	async removeMany(query: object): Promise<number> {
		this.counted("removeMany");
		return this.written(this.store.removeAsync(this.filter(query), { multi: true }));
	}

	async removeById(id: unknown): Promise<number> {
		this.counted("removeById");
		return this.written(this.store.removeAsync({ _id: id }, {}));
	}

	async clear(): Promise<number> {
		this.counted("clear");
		return this.written(this.store.removeAsync({}, { multi: true }));
	}
}
