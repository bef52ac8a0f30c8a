/**
 * The store contract every Mint service relies on, whichever backend holds
 * its collections (mixins/db/nedb-adapter.ts, mixins/db/mongo-adapter.ts):
 * the `Store` the services use, the adapter API moleculer-db's DbService
 * calls, and what both backends share (paging, sorting, filter checks).
 *
 * Both backends answer with MongoDB's semantics where they could differ:
 * - an update answers the number of documents its filter *matched* (a no-op
 *   update of a matching document counts 1 on both);
 * - `{f: null}` matches a document without `f` too, `{f: {$ne: null}}` only
 *   one where `f` is set and not null;
 * - `undefined` anywhere in a filter is refused (MongoDB would read it as
 *   null, NeDB as "no such document"): a missing value is a bug, not a query;
 * - an empty object is stored and read back as `{}`.
 */
import type { Logger } from "moleculer";

export interface IndexSpec {
	fields: Record<string, 1 | -1>;
	unique?: boolean;
	sparse?: boolean;
}

export interface CollectionSpec {
	name: string;
	indexes?: IndexSpec[];
	/**
	 * Counts the SQLite store keeps, in the same writes as the documents: for each list of fields, how many
	 * documents hold each combination of their values (the first field's array: each of its elements; the
	 * others' values whole, as in an index). A count() whose filter is equalities on the first field and any of
	 * the others sums that first value's rows instead of walking the matching documents (a user's transactions
	 * of one type, for a list's `total`): the later fields should have few values. Ignored by the other stores.
	 */
	counts?: string[][];
}

/** What Mint's services pass to find() and count(): a MongoDB-style filter, sort fields (`-field` descending), paging. */
export interface FindParams {
	query?: object;
	sort?: string[];
	limit?: number;
	offset?: number;
}

/** The part of the adapter API that Mint's services use, typed by the documents of the collection. */
export interface Store<T> {
	insert(doc: T): Promise<T>;
	findOne(query: object): Promise<T | null>;
	find(params: FindParams): Promise<T[]>;
	count(params?: { query?: object }): Promise<number>;
	/**
	 * The compare-and-set primitive, for one document (a filter on `_id` plus
	 * the expected state): updates at most one document and answers how many
	 * matched (0 or 1). On MongoDB it is a retryable write: after a failover or
	 * a network error the driver retries it once and the server applies it at
	 * most once, so its answer is never "unknown". With `upsert`, inserts the
	 * document when none matches (and answers 1).
	 */
	updateOne(query: object, update: object, opts?: { upsert?: boolean }): Promise<number>;
	/** Updates every matching document; answers how many matched. Not retryable on MongoDB: never a compare-and-set. */
	updateMany(query: object, update: object): Promise<number>;
	removeMany(query: object): Promise<number>;
}

/** What moleculer-db's DbService may pass to find() and count() (its `find`/`list` actions, switched off here). */
export interface CursorParams {
	query?: object;
	sort?: string | string[];
	limit?: number;
	offset?: number;
	search?: string;
}

/** What an adapter keeps of the service that owns it (DbService passes the whole service). */
export interface AdapterOwner {
	/** The owning service's name (DbService passes the service); labels the store's metrics. */
	name?: string;
	logger: Pick<Logger, "info" | "warn" | "error">;
}

/**
 * The adapter API moleculer-db's DbService calls (created(): init; started():
 * connect, retried every second until it succeeds; stopped(): disconnect; its
 * methods: the rest), and the Store the services use.
 */
export interface DbAdapter<T> extends Store<T> {
	init(broker: unknown, service: AdapterOwner): void;
	connect(): Promise<void>;
	disconnect(): Promise<void>;
	find(params?: CursorParams | null): Promise<T[]>;
	count(params?: CursorParams | null): Promise<number>;
	findById(id: unknown): Promise<T | null>;
	findByIds(ids: unknown[]): Promise<T[]>;
	insertMany(docs: T[]): Promise<T[]>;
	/** The document after the update, or null when there is none with that id. */
	updateById(id: unknown, update: object): Promise<T | null>;
	/** How many documents were removed (0 or 1). */
	removeById(id: unknown): Promise<number>;
	/** Empties the collection; how many documents were removed. */
	clear(): Promise<number>;
	entityToObject(entity: T): T;
	beforeSaveTransformID(entity: T, idField: string): T;
	afterRetrieveTransformID(entity: T, idField: string): T;
}

/** A unique index refused the document (NeDB and MongoDB report it differently). */
export function isDuplicateKeyError(err: unknown): boolean {
	const e = err as { errorType?: string; code?: number } | null;
	return !!e && (e.errorType === "uniqueViolated" || e.code === 11000);
}

/** DbMixin fixes moleculer-db's idField to `_id`, the field both backends store, so ids need no transformation. */
export function sameIdField(idField: string): void {
	if (idField !== "_id") throw new Error(`Mint's stores keep their ids in _id, not ${idField}`);
}

/** What both adapters answer moleculer-db alike: documents are plain objects already, ids are `_id` as stored. */
export abstract class PlainDocuments<T> {
	entityToObject(entity: T): T {
		return entity;
	}

	beforeSaveTransformID(entity: T, idField: string): T {
		sameIdField(idField);
		return entity;
	}

	afterRetrieveTransformID(entity: T, idField: string): T {
		sameIdField(idField);
		return entity;
	}
}

/** moleculer-db's offset and limit: applied only when positive numbers. */
export function paging(params?: CursorParams | null): { skip?: number; limit?: number } {
	const { limit, offset } = params ?? {};
	return {
		skip: typeof offset === "number" && offset > 0 ? offset : undefined,
		limit: typeof limit === "number" && limit > 0 ? limit : undefined,
	};
}

/** Sort fields as moleculer-db takes them (an array, or one string separated by spaces or commas), `-field` descending. */
export function sortSpec(sort: string | string[]): Record<string, 1 | -1> {
	const fields = typeof sort === "string" ? sort.split(/[\s,]+/) : sort;
	return Object.fromEntries(fields.filter(f => f.length > 0).map(f => (f.startsWith("-") ? [f.slice(1), -1] : [f, 1])));
}

/** Mint never searches; both backends refuse rather than silently match everything. */
export function refuseSearch(params: CursorParams | null | undefined, adapter: string): void {
	if (params?.search) throw new Error(`${adapter} does not support search`);
}

/** A filter's condition on a field that is operators (`{$in: [...]}`, `{$lt: 5}`), not a value to equal. */
export const isOperatorObject = (value: unknown): value is Record<string, unknown> =>
	value !== null &&
	typeof value === "object" &&
	!Array.isArray(value) &&
	!(value instanceof Date) &&
	!(value instanceof RegExp) &&
	Object.keys(value).some(k => k.startsWith("$"));

/** How deep a filter may nest ($and/$or/$nor, $elemMatch): Mint's own filters are shallow; deeper is a bug. */
const MAX_FILTER_DEPTH = 8;

/** Refuses `undefined` anywhere in a filter (both backends): a missing value is a bug, never "match nothing" or "match null". */
export function checkFilter(query: object, collection: string): void {
	const walk = (value: unknown, where: string, depth: number): void => {
		if (value === undefined) throw new Error(`${collection}: undefined in a filter (${where})`);
		if (value === null || typeof value !== "object" || value instanceof Date || value instanceof RegExp) return;
		if (depth > MAX_FILTER_DEPTH) throw new Error(`${collection}: filter nested deeper than ${MAX_FILTER_DEPTH} (${where})`);
		for (const [key, inner] of Object.entries(value)) walk(inner, where ? `${where}.${key}` : key, depth + 1);
	};
	walk(query, "", 0);
}
