/**
 * The embedded backend on SQLite (`node:sqlite`, built into Node 22: no
 * server, no dependency), chosen with EMBEDDED_STORE=sqlite: one database
 * file per collection, `DATA_DIR/<service>/<collection>.sqlite` (its WAL
 * beside it).
 *
 * Unlike NeDB nothing is loaded at start and nothing is kept in memory but
 * SQLite's page cache: a document is a row (`docs`: `_id`, the JSON text),
 * each index of the spec a table of its keys (`ix_...`: the key fields' values
 * and the document's `_id`, a B-tree; an array field gives a key per element,
 * as MongoDB's multikey indexes do). Every operation runs synchronously on
 * the event loop, all of it or none (a savepoint): a compare-and-set cannot
 * interleave with another write of this process, and the service ownership
 * locks keep other processes out (lib/service-ownership.ts). The writes of one
 * turn of the event loop are committed together (group commit), each answered
 * once its group is.
 *
 * Filters and updates keep the semantics both other backends give (store.ts):
 * the index tables only narrow the candidates (by `_id`, by equalities on an
 * index's first fields, or by its first field: null, $in, a range), and NeDB's
 * document model decides what matches and applies the update operators, with
 * MongoDB's null semantics (withMongoNulls). A filter that is exactly
 * equalities on an index's first fields is answered from the index alone,
 * sorted and paged by SQLite when the index's next fields are the sort: a page
 * of a long list reads that page.
 * The spec's counts (CollectionSpec.counts) are tables of documents per
 * combination of values, kept in the same writes: a count() of equalities on
 * a count's first field and any of its others sums a few of its rows.
 *
 * Durability: WAL with synchronous=OFF: a write is answered once it is in
 * the WAL file (written, not flushed to the disk): it survives a killed
 * process, not a power cut, as NeDB's appends do. Freed pages are reused: the
 * files do not grow without bound.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { DatabaseSync, SQLInputValue, StatementSync } from "node:sqlite";
import * as model from "@seald-io/nedb/lib/model.js";
import { storeOperationCounter } from "../../lib/business-metrics";
import { withMongoNulls } from "./nedb-adapter";
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
	type IndexSpec,
} from "./store";

type Doc = { _id?: unknown } & Record<string, unknown>;
type Key = string | number | Uint8Array;

/**
 * How an index key holds a missing or null value: before every number and string, as MongoDB orders them
 * (a key column is never NULL: a unique index refuses a second null, as on the other backends).
 */
const NULL_KEY = Number.NEGATIVE_INFINITY;

/** A value as an index key: strings and finite numbers as themselves (SQLite orders them as MongoDB does), anything else as a tagged blob (after them). */
function indexKey(value: unknown): Key {
	if (typeof value === "string") return value;
	if (typeof value === "number" && Number.isFinite(value)) return value;
	if (value === null || value === undefined) return NULL_KEY;
	return Buffer.from(`J${JSON.stringify(value)}`);
}

const isKeyValue = (value: unknown): value is string | number => typeof value === "string" || (typeof value === "number" && Number.isFinite(value));

/** A unique index (or `_id`) refused a document: recognised by isDuplicateKeyError, as NeDB's error is. */
function uniqueViolated(collection: string, what: string): Error {
	return Object.assign(new Error(`${collection}: a document with this ${what} already exists`), { errorType: "uniqueViolated" });
}

/** SQLite's constraint error (SQLITE_CONSTRAINT and its extended codes). */
const isConstraintError = (err: unknown): boolean => ((err as { errcode?: number } | null)?.errcode ?? 0) % 256 === 19;

/** Writes waiting for their group's commit. */
interface WriteGroup {
	waiters: { resolve: () => void; reject: (err: unknown) => void }[];
}

/** One index of the spec, as a table of keys. */
interface KeyTable {
	spec: IndexSpec;
	table: string;
	fields: string[];
	insert: StatementSync;
	remove: StatementSync;
}

/** One of the spec's counts: documents per combination of its fields' keys (keysOf; `n_...`: the keys, n). */
interface CountTable {
	table: string;
	fields: string[];
	increment: StatementSync;
	decrement: StatementSync;
}

/** How a filter's candidates are found: the SQL that lists them, and whether every one of them matches (no other condition). */
interface Plan {
	from: string;
	where: string;
	params: SQLInputValue[];
	exact: boolean;
	/** The key table the candidates come from, when they come from one. */
	keys?: KeyTable;
	/** How many of the key table's first fields equalities fix (to params[0], params[1]...); 0 for any other plan. */
	prefix: number;
	/** A document may be listed more than once (an `$in` or a range over an array field's keys). */
	repeats: boolean;
}

/** A plan's rank among the others: lower first, compared field by field. */
type Rank = [kind: number, narrowness: number, width: number];
const ranksBefore = (a: Rank, b: Rank): boolean => {
	for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] < b[i];
	return false;
};

/** The value an equality condition fixes (`v` or `{$eq: v, ...}`, v a string or a finite number), and whether that is all it says. */
function equalityOf(condition: unknown): { value: string | number; pure: boolean } | null {
	if (isKeyValue(condition)) return { value: condition, pure: true };
	if (isOperatorObject(condition) && isKeyValue(condition.$eq)) return { value: condition.$eq, pure: Object.keys(condition).length === 1 };
	return null;
}

const STATEMENT_CACHE = 256;

/**
 * The WAL file is cut back to this size after a checkpoint (SQLite's journal_size_limit): a large write
 * (the index tables built after an import, 0.9 GB of WAL for a million transactions) does not leave
 * its WAL file that size for good.
 */
const WAL_KEEP_BYTES = 16 << 20;

/** A field's name as part of a table name. */
const tablePart = (field: string): string => field.replace(/[^A-Za-z0-9]/g, "_");

/** The table name of an index: its fields and options, so that a changed index is a new table. */
function keyTableName(index: IndexSpec): string {
	const fields = Object.entries(index.fields).map(([field, dir]) => `${tablePart(field)}_${dir === -1 ? "d" : "a"}`);
	return `ix_${fields.join("__")}${index.unique ? "_u" : ""}${index.sparse ? "_s" : ""}`;
}

/** The table name of a count: its fields. */
const countTableName = (fields: string[]): string => `n_${fields.map(tablePart).join("__")}`;

/**
 * A document's keys for a list of fields (an index's or a count's): a row per element of an array first field
 * (each once; an empty array is one key, itself, so that every document has a row in an index that is not
 * sparse), the other fields' values whole; none for a sparse index's missing first field.
 */
function keysOf(fields: string[], doc: Doc, sparse = false): Key[][] {
	const [first, ...rest] = fields.map(field => model.getDotValue(doc, field));
	if (first === undefined && sparse) return [];
	const tail = rest.map(indexKey);
	const heads = new Map<string, Key>();
	for (const element of Array.isArray(first) && first.length > 0 ? first : [first]) {
		const key = indexKey(element);
		heads.set(keyText(key), key);
	}
	return [...heads.values()].map(head => [head, ...tail]);
}

/** A key as text, for telling keys apart in a Set or a Map (a blob's bytes, not the object). */
const keyText = (key: Key): string => (key instanceof Uint8Array ? `b${Buffer.from(key).toString("base64")}` : typeof key === "number" ? `n${key}` : `s${key}`);

/**
 * node:sqlite, loaded when the first SQLite store opens (a node on NeDB or MongoDB never loads it). Node 22
 * warns on stderr, once, that the module is experimental: that line is left out (the choice is the
 * operator's, made with EMBEDDED_STORE=sqlite and documented in the README), so that stderr stays for
 * errors and logs stay JSON. Any other warning goes through.
 */
function sqliteModule(): typeof import("node:sqlite") {
	const emitWarning = process.emitWarning;
	process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
		if (String(warning).startsWith("SQLite is an experimental feature")) return;
		(emitWarning as (...args: unknown[]) => void).call(process, warning, ...rest);
	}) as typeof process.emitWarning;
	try {
		return require("node:sqlite") as typeof import("node:sqlite");
	} finally {
		process.emitWarning = emitWarning;
	}
}

function openDatabase(filename: string): DatabaseSync {
	return new (sqliteModule().DatabaseSync)(filename);
}

export class SqliteAdapter<T> extends PlainDocuments<T> implements DbAdapter<T> {
	private db: DatabaseSync | null = null;
	private keyTables: KeyTable[] = [];
	private countTables: CountTable[] = [];
	private readonly statements = new Map<string, StatementSync>();
	private counted: (operation: string) => void = () => undefined;
	/** The writes of this turn of the event loop, committed together (write()). */
	private group: WriteGroup | null = null;

	constructor(
		private readonly spec: CollectionSpec,
		readonly filename: string,
	) {
		super();
		for (const index of spec.indexes ?? []) {
			if (Object.keys(index.fields).length === 0) throw new Error(`${spec.name}: an index needs a field`);
		}
		fs.mkdirSync(path.dirname(filename), { recursive: true, mode: 0o700 });
	}

	init(broker: unknown, service: AdapterOwner): void {
		this.counted = storeOperationCounter(broker, service.name ?? path.basename(path.dirname(this.filename)), this.spec.name);
	}

	async connect(): Promise<void> {
		const db = openDatabase(this.filename);
		try {
			db.exec(`PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF; PRAGMA temp_store = FILE; PRAGMA journal_size_limit = ${WAL_KEEP_BYTES}`);
			db.exec("CREATE TABLE IF NOT EXISTS docs (id TEXT PRIMARY KEY NOT NULL, body TEXT NOT NULL)");
			this.db = db;
			this.statements.clear();
			const { tables, counts, built } = this.prepareIndexes(db);
			this.keyTables = tables;
			this.countTables = counts;
			db.exec("PRAGMA temp_store = MEMORY");
			// Tables just built went through the WAL (0.9 GB for a million transactions): copied into the database
			// now, while the node starts, rather than by the first write it serves (0.25 s), and the WAL cut back.
			if (built) db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
		} catch (err) {
			this.db = null;
			db.close();
			throw err;
		}
	}

	/**
	 * The spec's key tables and count tables, filled from the documents when new; the tables of indexes and counts
	 * the spec no longer has are dropped (Mint's own files, as on NeDB).
	 */
	private prepareIndexes(db: DatabaseSync): { tables: KeyTable[]; counts: CountTable[]; built: boolean } {
		const wanted = (this.spec.indexes ?? []).map(spec => ({ spec, table: keyTableName(spec), fields: Object.keys(spec.fields) }));
		const wantedCounts = (this.spec.counts ?? []).map(fields => ({ fields, table: countTableName(fields) }));
		const present = new Set(
			(
				db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND (name LIKE 'ix\\_%' ESCAPE '\\' OR name LIKE 'n\\_%' ESCAPE '\\')").all() as {
					name: string;
				}[]
			).map(r => r.name),
		);
		const wantedNames = new Set([...wanted, ...wantedCounts].map(w => w.table));
		return this.transaction(() => {
			for (const name of present) if (!wantedNames.has(name)) db.exec(`DROP TABLE "${name}"`);
			const tables = wanted.map(({ spec, table, fields }): KeyTable => {
				const columns = fields.map((_, i) => `k${i}`);
				const primary = spec.unique ? columns : [...columns, "id"];
				db.exec(
					`CREATE TABLE IF NOT EXISTS "${table}" (${columns.map(c => `${c} NOT NULL`).join(", ")}, id TEXT NOT NULL, PRIMARY KEY (${primary.join(", ")})) WITHOUT ROWID`,
				);
				return {
					spec,
					table,
					fields,
					insert: db.prepare(`INSERT INTO "${table}" (${columns.join(", ")}, id) VALUES (${columns.map(() => "?").join(", ")}, ?)`),
					remove: db.prepare(`DELETE FROM "${table}" WHERE ${columns.map(c => `${c} = ?`).join(" AND ")} AND id = ?`),
				};
			});
			const counts = wantedCounts.map(({ fields, table }): CountTable => {
				const columns = fields.map((_, i) => `k${i}`);
				const where = columns.map(c => `${c} = ?`).join(" AND ");
				db.exec(
					`CREATE TABLE IF NOT EXISTS "${table}" (${columns.map(c => `${c} NOT NULL`).join(", ")}, n INTEGER NOT NULL, PRIMARY KEY (${columns.join(", ")})) WITHOUT ROWID`,
				);
				return {
					table,
					fields,
					increment: db.prepare(`INSERT INTO "${table}" VALUES (${columns.map(() => "?").join(", ")}, 1) ON CONFLICT DO UPDATE SET n = n + 1`),
					decrement: db.prepare(`UPDATE "${table}" SET n = n - 1 WHERE ${where}`),
				};
			});
			const newTables = tables.filter(keys => !present.has(keys.table));
			const newCounts = counts.filter(count => !present.has(count.table));
			const built = newTables.length + newCounts.length > 0;
			if (built) this.fillTables(db, newTables, newCounts);
			return { tables, counts, built };
		});
	}

	/**
	 * Fills new key tables and count tables (a new index or count, or documents imported without them) in one pass
	 * over the documents. The keys are gathered in scratch tables first (appends), the counts in memory, then moved
	 * over in key order: inserted as they come (in random order: uuids), nearly every key of a large collection
	 * re-read a B-tree page (a million transactions and their entries: 139 s at start). The scratch tables are
	 * temporary files (temp_store is FILE until connect() is done), not memory.
	 */
	private fillTables(db: DatabaseSync, keyTables: KeyTable[], counts: CountTable[]): void {
		const scratch = keyTables.map((keys, i) => {
			const columns = [...keys.fields.map((_, j) => `k${j}`), "id"];
			db.exec(`CREATE TEMP TABLE fill_${i} (${columns.join(", ")})`);
			const insert = db.prepare(`INSERT INTO fill_${i} VALUES (${columns.map(() => "?").join(", ")})`);
			return { keys, name: `fill_${i}`, columns, insert };
		});
		const tallies = counts.map(count => ({ count, rows: new Map<string, { row: Key[]; n: number }>() }));
		for (const row of db.prepare("SELECT body FROM docs").iterate()) {
			const doc = JSON.parse(row.body as string) as Doc;
			for (const { keys, insert } of scratch) for (const key of this.keyRows(keys, doc)) insert.run(...key, String(doc._id));
			for (const { count, rows } of tallies) {
				for (const values of keysOf(count.fields, doc)) {
					const text = values.map(keyText).join("\u0000");
					const tally = rows.get(text);
					if (tally) tally.n++;
					else rows.set(text, { row: values, n: 1 });
				}
			}
		}
		const moveInOrder = (target: string, name: string, columns: string[], fields: string[]) => {
			try {
				db.exec(`INSERT INTO "${target}" (${columns.join(", ")}) SELECT ${columns.join(", ")} FROM ${name} ORDER BY ${columns.join(", ")}`);
			} catch (err) {
				if (isConstraintError(err)) throw uniqueViolated(this.spec.name, fields.join(", "));
				throw err;
			} finally {
				db.exec(`DROP TABLE ${name}`);
			}
		};
		for (const { keys, name, columns } of scratch) moveInOrder(keys.table, name, columns, keys.fields);
		for (const [i, { count, rows }] of tallies.entries()) {
			const columns = count.fields.map((_, j) => `k${j}`);
			db.exec(`CREATE TEMP TABLE tally_${i} (${columns.join(", ")}, n)`);
			const insert = db.prepare(`INSERT INTO tally_${i} VALUES (${columns.map(() => "?").join(", ")}, ?)`);
			for (const { row, n } of rows.values()) insert.run(...row, n);
			moveInOrder(count.table, `tally_${i}`, [...columns, "n"], count.fields);
		}
	}

	async disconnect(): Promise<void> {
		if (this.group) this.commit(this.group);
		const db = this.db;
		this.db = null;
		this.statements.clear();
		this.keyTables = [];
		this.countTables = [];
		db?.close();
	}

	private get store(): DatabaseSync {
		if (!this.db) throw new Error(`SQLite store ${this.spec.name} is not connected`);
		return this.db;
	}

	/** A prepared statement, kept for the connection's life (the cache is emptied past STATEMENT_CACHE: `$in` lists of every length). */
	private statement(sql: string): StatementSync {
		let stmt = this.statements.get(sql);
		if (!stmt) {
			if (this.statements.size >= STATEMENT_CACHE) this.statements.clear();
			stmt = this.store.prepare(sql);
			this.statements.set(sql, stmt);
		}
		return stmt;
	}

	/**
	 * Runs one write, all of it or none (a savepoint), in the transaction that gathers every write of this
	 * turn of the event loop; answers once that transaction is committed (group commit, as the NeDB store's
	 * appends: one WAL write for many operations). Reads see a write at once, as on NeDB. A commit that fails
	 * rolls the whole group back and fails each of its writes.
	 */
	private write<R>(body: () => R): Promise<R> {
		// Prepared once (statement()): exec() would compile each of them again for every write.
		if (!this.group) {
			this.statement("BEGIN IMMEDIATE").run();
			const group: WriteGroup = { waiters: [] };
			this.group = group;
			setImmediate(() => this.commit(group));
		}
		this.statement("SAVEPOINT one_write").run();
		let result: R;
		try {
			result = body();
			this.statement("RELEASE one_write").run();
		} catch (err) {
			this.statement("ROLLBACK TO one_write").run();
			this.statement("RELEASE one_write").run();
			return Promise.reject(err);
		}
		const group = this.group;
		return new Promise<R>((resolve, reject) => group.waiters.push({ resolve: () => resolve(result), reject }));
	}

	/** Commits a group of writes and answers each of them. */
	private commit(group: WriteGroup): void {
		if (this.group !== group) return;
		this.group = null;
		let failure: unknown = null;
		try {
			if (this.db) this.statement("COMMIT").run();
		} catch (err) {
			failure = err;
			try {
				this.db?.exec("ROLLBACK");
			} catch {
				// (SQLite may have rolled it back already.)
			}
		}
		for (const waiter of group.waiters) {
			if (failure) waiter.reject(failure);
			else waiter.resolve();
		}
	}

	/** Runs `body` in one SQLite transaction of its own, at once: all of it is written, or none (connect's index tables). */
	private transaction<R>(body: () => R): R {
		const db = this.store;
		db.exec("BEGIN IMMEDIATE");
		try {
			const result = body();
			db.exec("COMMIT");
			return result;
		} catch (err) {
			db.exec("ROLLBACK");
			throw err;
		}
	}

	// ---- index keys ----

	/** The key rows of a document for one index (keysOf); none for a sparse index's missing first field. */
	private keyRows(keys: KeyTable, doc: Doc): Key[][] {
		return keysOf(keys.fields, doc, keys.spec.sparse);
	}

	/** Inserts a document's key rows (keyRows) into an index table: a unique index refuses a taken key. */
	private putKeys(keys: KeyTable, doc: Doc, rows = this.keyRows(keys, doc)): void {
		for (const row of rows) {
			try {
				keys.insert.run(...row, String(doc._id));
			} catch (err) {
				if (isConstraintError(err)) throw uniqueViolated(this.spec.name, keys.fields.join(", "));
				throw err;
			}
		}
	}

	private dropKeys(keys: KeyTable, doc: Doc, rows = this.keyRows(keys, doc)): void {
		for (const row of rows) keys.remove.run(...row, String(doc._id));
	}

	/** Counts a document in (1) or out (-1) of every count, or only where `before` (its previous version) was counted otherwise. */
	private recount(doc: Doc, by: 1 | -1, before?: Doc): void {
		for (const count of this.countTables) {
			const rows = keysOf(count.fields, doc);
			if (before) {
				const was = keysOf(count.fields, before);
				if (JSON.stringify(was) === JSON.stringify(rows)) continue;
				for (const row of was) count.decrement.run(...row);
			}
			for (const row of rows) (by === 1 ? count.increment : count.decrement).run(...row);
		}
	}

	/**
	 * The sum of a count's rows that answers a filter made of equalities on the count's first field and any of its
	 * others, and the values to read it by; null when no count answers it. A later field is counted whole (as in
	 * an index): where a document holds an array or an object there (a blob key), an equality on that field
	 * would miss it, and the count does not answer.
	 */
	private countFor(query: Record<string, unknown>): { sql: string; values: SQLInputValue[] } | null {
		const names = Object.keys(query);
		for (const count of this.countTables) {
			if (!Object.hasOwn(query, count.fields[0]) || !names.every(name => count.fields.includes(name))) continue;
			const fixed = count.fields.flatMap((field, i) => {
				if (!Object.hasOwn(query, field)) return [];
				const equality = equalityOf(query[field]);
				return [equality?.pure ? { column: `k${i}`, value: equality.value } : null];
			});
			if (fixed.some(f => f === null)) continue;
			const [first, ...later] = fixed as { column: string; value: string | number }[];
			const wholeValues = (column: string) => this.statement(`SELECT 1 FROM "${count.table}" WHERE k0 = ? AND ${column} >= X'' LIMIT 1`).get(first.value);
			if (later.some(f => wholeValues(f.column))) continue;
			const where = [first, ...later].map(f => `${f.column} = ?`).join(" AND ");
			return { sql: `SELECT SUM(n) AS n FROM "${count.table}" WHERE ${where}`, values: [first, ...later].map(f => f.value) };
		}
		return null;
	}

	// ---- reading ----

	/**
	 * Where the candidates of a filter come from: `_id`; else the index whose first fields equalities fix, the
	 * most of them (a unique index fully fixed first; on a tie the index with fewer fields, whose next fields are
	 * likelier the sort); else the first field of an index (null, $in, a range); else every document.
	 */
	private plan(query: Record<string, unknown>): Plan {
		const only = Object.keys(query).length === 1;
		const id = query._id;
		if (isKeyValue(id)) return { from: "docs d", where: "d.id = ?", params: [String(id)], exact: only && typeof id === "string", prefix: 0, repeats: false };
		if (isOperatorObject(id) && Object.keys(id).length === 1 && Array.isArray(id.$in) && id.$in.every(v => typeof v === "string")) {
			const params = id.$in as string[];
			return { from: "docs d", where: `d.id IN (${params.map(() => "?").join(", ")})`, params, exact: only, prefix: 0, repeats: false };
		}
		let best: { plan: Plan; rank: Rank } | null = null;
		for (const keys of this.keyTables) {
			const found = this.planOn(keys, query);
			if (found && (!best || ranksBefore(found.rank, best.rank))) best = found;
		}
		return best?.plan ?? { from: "docs d", where: "1", params: [], exact: false, prefix: 0, repeats: false };
	}

	/** The candidates one key table gives a filter, and their rank; null when it gives none. */
	private planOn(keys: KeyTable, query: Record<string, unknown>): { plan: Plan; rank: Rank } | null {
		const from = `"${keys.table}" x JOIN docs d ON d.id = x.id`;
		const width = keys.fields.length;
		const fixed: { value: string | number; pure: boolean }[] = [];
		for (const field of keys.fields) {
			const equality = equalityOf(query[field]);
			if (!equality) break;
			fixed.push(equality);
		}
		// A field after the first is keyed whole when it holds an array or an object (a blob, after every string):
		// where a document with the fixed values before it has one there, the equalities narrow only up to it.
		for (let i = 1; i < fixed.length; i++) {
			const before = fixed.slice(0, i).map(f => f.value);
			const sql = `SELECT 1 FROM "${keys.table}" WHERE ${before.map((_, j) => `k${j} = ?`).join(" AND ")} AND k${i} >= X'' LIMIT 1`;
			if (this.statement(sql).get(...before)) fixed.length = i;
		}
		if (fixed.length > 0) {
			const prefix = fixed.length;
			const exact = Object.keys(query).length === prefix && fixed.every(f => f.pure);
			const where = fixed.map((_, i) => `x.k${i} = ?`).join(" AND ");
			const plan: Plan = { from, where, params: fixed.map(f => f.value), exact, keys, prefix, repeats: false };
			return { plan, rank: [keys.spec.unique && prefix === width ? 0 : 1, -prefix, width] };
		}
		const value = query[keys.fields[0]];
		if (value === null || (isOperatorObject(value) && Object.keys(value).length === 1 && value.$eq === null)) {
			// A missing or null field is keyed NULL_KEY, unless the index is sparse (then it is not in the table at all).
			if (keys.spec.sparse) return null;
			return { plan: { from, where: "x.k0 = ?", params: [NULL_KEY], exact: false, keys, prefix: 0, repeats: false }, rank: [2, 0, width] };
		}
		if (!isOperatorObject(value)) return null;
		if (Array.isArray(value.$in) && value.$in.length > 0 && value.$in.every(isKeyValue)) {
			const where = `x.k0 IN (${value.$in.map(() => "?").join(", ")})`;
			return { plan: { from, where, params: value.$in, exact: false, keys, prefix: 0, repeats: true }, rank: [2, 0, width] };
		}
		const bounds = (["$gt", "$gte", "$lt", "$lte"] as const).filter(op => isKeyValue(value[op]));
		if (bounds.length === 0) return null;
		const sql = { $gt: ">", $gte: ">=", $lt: "<", $lte: "<=" };
		const where = bounds.map(op => `x.k0 ${sql[op]} ?`).join(" AND ");
		return { plan: { from, where, params: bounds.map(op => value[op] as SQLInputValue), exact: false, keys, prefix: 0, repeats: true }, rank: [3, 0, width] };
	}

	/** The documents matching a (checked) filter, sorted and paged. */
	private select(query: object, sort: Record<string, 1 | -1> | null, skip: number, limit: number | undefined): Doc[] {
		const plan = this.plan(query as Record<string, unknown>);
		const pushed = plan.exact && this.orderFromIndex(plan, sort);
		if (pushed !== false) {
			// Every candidate matches: SQLite sorts (by the index, when its fields are the sort) and pages.
			const sql = `SELECT d.body FROM ${plan.from} WHERE ${plan.where}${pushed}${limit !== undefined ? " LIMIT ? OFFSET ?" : skip ? " LIMIT -1 OFFSET ?" : ""}`;
			const params = limit !== undefined ? [...plan.params, limit, skip] : skip ? [...plan.params, skip] : plan.params;
			return this.statement(sql)
				.all(...params)
				.map(row => JSON.parse(row.body as string) as Doc);
		}
		const filter = withMongoNulls(query);
		if (sort && limit !== undefined) {
			// Candidates from an index, or by _id, are read as planned; a scan of every document, in an index's order if one gives the sort.
			const everyDocument = !plan.keys && plan.where === "1";
			const page = this.pageInKeyOrder(everyDocument ? this.orderPlan(sort) : plan, filter, sort, skip + limit);
			if (page) return page.slice(skip);
		}
		const docs: Doc[] = [];
		const seen = plan.repeats ? new Set<string>() : null;
		for (const row of this.statement(`SELECT d.id, d.body FROM ${plan.from} WHERE ${plan.where}`).iterate(...plan.params)) {
			if (seen) {
				if (seen.has(row.id as string)) continue;
				seen.add(row.id as string);
			}
			const doc = JSON.parse(row.body as string) as Doc;
			if (model.match(doc, filter)) docs.push(doc);
			// Unsorted, the first matches are the page: the rest need not be read.
			if (!sort && limit !== undefined && docs.length >= skip + limit) break;
		}
		if (sort) docs.sort(compareBy(sort));
		return limit !== undefined || skip ? docs.slice(skip, limit !== undefined ? skip + limit : undefined) : docs;
	}

	/**
	 * The first `count` matches of a filter whose candidates come from a key table, read in the table's key order
	 * when that is the sort (all one direction): its fields are the index's first ones, or the ones after those
	 * that equalities fix (a user's transfers, newest first), then perhaps `_id`. The reading stops
	 * at `count` matches: the mail worker's "due now, oldest first, 50 of them" reads 50-odd rows however many are
	 * due, and a page of a user's list filtered by type or status reads about a page of rows. Keys order strings and
	 * numbers as NeDB (and MongoDB) do; a document with any other value in a sort field (missing, null, an array, an
	 * object), which the keys order otherwise, gives the page back to the general way (null). A descending sort by
	 * the first field takes the general way: an array there has a key per element.
	 */
	private pageInKeyOrder(plan: Plan, filter: object, sort: Record<string, 1 | -1>, count: number): Doc[] | null {
		const keys = plan.keys;
		const fields = Object.keys(sort);
		if (!keys || fields.length === 0 || fields.some(field => sort[field] !== sort[fields[0]])) return null;
		const from = plan.prefix > 0 && keys.fields[0] !== fields[0] ? plan.prefix : 0;
		const direction = sort[fields[0]] === -1 ? " DESC" : "";
		if (from === 0 && direction) return null;
		const columns: string[] = [];
		for (const [i, field] of fields.entries()) {
			if (keys.fields[from + i] === field) columns.push(`x.k${from + i}${direction}`);
			else if (field === "_id" && i === fields.length - 1) columns.push(`x.id${direction}`);
			else return null;
		}
		const docs: Doc[] = [];
		if (count <= 0) return docs;
		const seen = plan.repeats ? new Set<string>() : null;
		const sql = `SELECT d.id, d.body FROM ${plan.from} WHERE ${plan.where} ORDER BY ${columns.join(", ")}`;
		for (const row of this.statement(sql).iterate(...plan.params)) {
			if (seen) {
				if (seen.has(row.id as string)) continue;
				seen.add(row.id as string);
			}
			const doc = JSON.parse(row.body as string) as Doc;
			if (!fields.every(field => isKeyValue(model.getDotValue(doc, field)))) return null;
			if (model.match(doc, filter)) docs.push(doc);
			if (docs.length >= count) break;
		}
		return docs;
	}

	/**
	 * For a filter no index narrows, sorted by an index's first field (the admin's list of users, oldest
	 * first): every document by that index, read in its order by pageInKeyOrder, which stops at the page's
	 * end. Not a sparse index (it leaves out the documents without the field; any other has a row for every
	 * document, keysOf); a document listed twice (an array) is read once.
	 */
	private orderPlan(sort: Record<string, 1 | -1>): Plan {
		const first = Object.keys(sort)[0];
		const keys = this.keyTables.find(k => k.fields[0] === first && !k.spec.sparse);
		const from = keys ? `"${keys.table}" x JOIN docs d ON d.id = x.id` : "docs d";
		return { from, where: "1", params: [], exact: false, keys, prefix: 0, repeats: true };
	}

	/**
	 * The ORDER BY that gives `sort` from the plan's index (its fields after those the equalities fix, all ascending or all
	 * descending as asked), "" when there is no sort, or false when the index cannot give it (or with no
	 * sort but paging: SQLite pages, the order is the index's).
	 */
	private orderFromIndex(plan: Plan, sort: Record<string, 1 | -1> | null): string | false {
		if (!sort || Object.keys(sort).length === 0) return "";
		const fields = Object.keys(sort);
		const keys = plan.keys;
		if (!keys || plan.prefix === 0 || keys.fields.length < fields.length + plan.prefix) return false;
		const clauses: string[] = [];
		for (const [i, field] of fields.entries()) {
			if (keys.fields[plan.prefix + i] !== field) return false;
			clauses.push(`x.k${plan.prefix + i} ${sort[field] === -1 ? "DESC" : "ASC"}`);
		}
		return ` ORDER BY ${clauses.join(", ")}`;
	}

	async find(params?: CursorParams | null): Promise<T[]> {
		this.counted("find");
		refuseSearch(params, "SqliteAdapter");
		checkFilter(params?.query ?? {}, this.spec.name);
		const { skip, limit } = paging(params);
		return this.select(params?.query ?? {}, params?.sort ? sortSpec(params.sort) : null, skip ?? 0, limit) as T[];
	}

	async findOne(query: object): Promise<T | null> {
		this.counted("findOne");
		checkFilter(query, this.spec.name);
		return (this.select(query, null, 0, 1)[0] ?? null) as T | null;
	}

	async findById(id: unknown): Promise<T | null> {
		this.counted("findById");
		return (this.select({ _id: id }, null, 0, 1)[0] ?? null) as T | null;
	}

	async findByIds(ids: unknown[]): Promise<T[]> {
		this.counted("findByIds");
		return this.select({ _id: { $in: ids } }, null, 0, undefined) as T[];
	}

	async count(params?: CursorParams | null): Promise<number> {
		this.counted("count");
		refuseSearch(params, "SqliteAdapter");
		const query = params?.query ?? {};
		checkFilter(query, this.spec.name);
		const { skip, limit } = paging(params);
		const kept = this.countFor(query as Record<string, unknown>);
		const plan = kept ? null : this.plan(query as Record<string, unknown>);
		let n: number;
		if (kept) {
			// One of the spec's counts: kept with the documents, a few rows summed.
			n = Number(this.statement(kept.sql).get(...kept.values)?.n ?? 0);
		} else if (plan && (plan.exact || Object.keys(query).length === 0)) {
			// Counted by SQLite, from the index alone when there is one.
			const from = plan.keys ? `"${plan.keys.table}" x` : "docs d";
			n = Number(this.statement(`SELECT COUNT(*) AS n FROM ${from} WHERE ${plan.where}`).get(...plan.params)?.n ?? 0);
		} else {
			n = this.select(query, null, 0, undefined).length;
		}
		n = Math.max(0, n - (skip ?? 0));
		return limit !== undefined ? Math.min(n, limit) : n;
	}

	// ---- writing ----

	private insertOne(doc: Doc): Doc {
		const stored = model.deepCopy(doc);
		if (stored._id === undefined) stored._id = crypto.randomBytes(12).toString("base64url");
		if (typeof stored._id !== "string") throw new Error(`${this.spec.name}: _id must be a string`);
		model.checkObject(stored);
		try {
			this.statement("INSERT INTO docs (id, body) VALUES (?, ?)").run(stored._id, JSON.stringify(stored));
		} catch (err) {
			if (isConstraintError(err)) throw uniqueViolated(this.spec.name, "_id");
			throw err;
		}
		for (const keys of this.keyTables) this.putKeys(keys, stored);
		this.recount(stored, 1);
		return stored;
	}

	/** Replaces a document by its new version, and the index keys that changed. */
	private replace(before: Doc, after: Doc): void {
		this.statement("UPDATE docs SET body = ? WHERE id = ?").run(JSON.stringify(after), String(before._id));
		for (const keys of this.keyTables) {
			const was = this.keyRows(keys, before);
			const now = this.keyRows(keys, after);
			if (JSON.stringify(was) === JSON.stringify(now)) continue;
			this.dropKeys(keys, before, was);
			this.putKeys(keys, after, now);
		}
		this.recount(after, 1, before);
	}

	/** Applies an update to the matching documents (the first only unless `multi`); with `upsert`, inserts when none matches. */
	private update(query: object, update: object, multi: boolean, upsert: boolean): Promise<Doc[]> {
		checkFilter(query, this.spec.name);
		return this.write(() => {
			const matched = this.select(query, null, 0, multi ? undefined : 1);
			if (matched.length === 0 && upsert) {
				// As NeDB (and MongoDB) upsert: a replacement document as given, else the filter's plain fields with the update applied.
				let base: Doc;
				try {
					model.checkObject(update);
					base = update as Doc;
				} catch {
					base = model.modify(model.deepCopy(query, true) as Doc, update);
				}
				return [this.insertOne(base)];
			}
			const updated = matched.map(doc => {
				const after = model.modify(doc, update);
				this.replace(doc, after);
				return after;
			});
			return updated;
		});
	}

	async insert(doc: T): Promise<T> {
		this.counted("insert");
		return (await this.write(() => this.insertOne(doc as Doc))) as T;
	}

	async insertMany(docs: T[]): Promise<T[]> {
		this.counted("insertMany");
		return (await this.write(() => docs.map(doc => this.insertOne(doc as Doc)))) as T[];
	}

	async updateOne(query: object, update: object, opts: { upsert?: boolean } = {}): Promise<number> {
		this.counted("updateOne");
		return (await this.update(query, update, false, !!opts.upsert)).length;
	}

	async updateMany(query: object, update: object): Promise<number> {
		this.counted("updateMany");
		return (await this.update(query, update, true, false)).length;
	}

	async updateById(id: unknown, update: object): Promise<T | null> {
		this.counted("updateById");
		return ((await this.update({ _id: id }, update, false, false))[0] ?? null) as T | null;
	}

	private remove(query: object, multi: boolean): Promise<number> {
		checkFilter(query, this.spec.name);
		return this.write(() => {
			const matched = this.select(query, null, 0, multi ? undefined : 1);
			for (const doc of matched) {
				this.statement("DELETE FROM docs WHERE id = ?").run(String(doc._id));
				for (const keys of this.keyTables) this.dropKeys(keys, doc);
				this.recount(doc, -1);
			}
			return matched.length;
		});
	}

	async removeMany(query: object): Promise<number> {
		this.counted("removeMany");
		return this.remove(query, true);
	}

	async removeById(id: unknown): Promise<number> {
		this.counted("removeById");
		return this.remove({ _id: id }, false);
	}

	async clear(): Promise<number> {
		this.counted("clear");
		return this.remove({}, true);
	}
}

/** NeDB's (MongoDB's) order of documents by sort fields. */
function compareBy(sort: Record<string, 1 | -1>): (a: Doc, b: Doc) => number {
	const criteria = Object.entries(sort);
	return (a, b) => {
		for (const [field, direction] of criteria) {
			const order = model.compareThings(model.getDotValue(a, field), model.getDotValue(b, field));
			if (order !== 0) return direction * order;
		}
		return 0;
	};
}
