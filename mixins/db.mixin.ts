/**
 * The DB mixin: one way for every service to own its collections.
 *
 * - MONGO_URI set: MongooseAdapter (mongoose 8), a database per service
 *   (`mint-<service>`) on one connection shared by the service's collections,
 *   indexes declared here and synced at connect.
 * - otherwise: NedbAdapter, an @seald-io/nedb file per collection under DATA_DIR.
 *
 * Both are typed classes implementing the adapter API moleculer-db's DbService
 * calls (`DbAdapter`); services see only the `Store` part of it (insert,
 * findOne, find, count, updateMany, removeMany) and never learn which one they
 * got: both return plain objects. Documents use string `_id`s chosen by the
 * service, so ids look the same on both. moleculer-db's generated CRUD actions
 * are switched off: nothing outside the service can reach its collections.
 */
import fs from "node:fs";
import path from "node:path";
import Nedb from "@seald-io/nedb";
import type { Logger, ServiceSchema } from "moleculer";
import DbService from "moleculer-db";
import mongoose from "mongoose";
import type { Config } from "../lib/config";
import { defineMixin } from "../lib/define-service";

export interface IndexSpec {
	fields: Record<string, 1 | -1>;
	unique?: boolean;
	sparse?: boolean;
}

export interface CollectionSpec {
	name: string;
	indexes?: IndexSpec[];
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
	/** Returns the number of documents changed: the compare-and-set primitive. */
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
	logger: Pick<Logger, "info" | "warn">;
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

/** What DbMixin adds to `this`: the main collection (moleculer-db's adapter) and the extra ones by name. */
export interface DbVars<TMain, TStores extends Record<string, object> = Record<never, object>> {
	adapter: Store<TMain>;
	stores: { [K in keyof TStores]: Store<TStores[K]> };
}

/** A unique index refused the document (NeDB and MongoDB report it differently). */
export function isDuplicateKeyError(err: unknown): boolean {
	const e = err as { errorType?: string; code?: number } | null;
	return !!e && (e.errorType === "uniqueViolated" || e.code === 11000);
}

/** DbMixin fixes moleculer-db's idField to `_id`, the field both backends store, so ids need no transformation. */
function sameIdField(idField: string): void {
	if (idField !== "_id") throw new Error(`Mint's stores keep their ids in _id, not ${idField}`);
}

/** moleculer-db's offset and limit: applied only when positive numbers. */
function paging(params?: CursorParams | null): { skip?: number; limit?: number } {
	const { limit, offset } = params ?? {};
	return {
		skip: typeof offset === "number" && offset > 0 ? offset : undefined,
		limit: typeof limit === "number" && limit > 0 ? limit : undefined,
	};
}

/** Sort fields as moleculer-db takes them (an array, or one string separated by spaces or commas), `-field` descending. */
function sortSpec(sort: string | string[]): Record<string, 1 | -1> {
	const fields = typeof sort === "string" ? sort.split(/[\s,]+/) : sort;
	return Object.fromEntries(fields.filter(f => f.length > 0).map(f => (f.startsWith("-") ? [f.slice(1), -1] : [f, 1])));
}

/** Mint never searches; both backends refuse rather than silently match everything. */
function refuseSearch(params: CursorParams | null | undefined, adapter: string): void {
	if (params?.search) throw new Error(`${adapter} does not support search`);
}

/**
 * NeDB (@seald-io/nedb), one file per collection, on NeDB's own promise API
 * (moleculer-db's MemoryAdapter wraps it in util.promisify, one wrapper of
 * which returns a Promise, so Node warns, DEP0174, on every update).
 */
export class NedbAdapter<T> implements DbAdapter<T> {
	private db: Nedb<T> | null = null;

	constructor(
		private readonly spec: CollectionSpec,
		readonly filename: string,
	) {
		fs.mkdirSync(path.dirname(filename), { recursive: true, mode: 0o700 });
	}

	init(): void {
		// Nothing to keep: a file store needs neither the broker nor the service.
	}

	async connect(): Promise<void> {
		const db = new Nedb<T>({ filename: this.filename });
		await db.loadDatabaseAsync();
		for (const index of this.spec.indexes ?? []) {
			const fields = Object.keys(index.fields);
			if (fields.length !== 1) throw new Error(`NeDB supports single-field indexes only (${this.spec.name})`);
			await db.ensureIndexAsync({ fieldName: fields[0], unique: !!index.unique, sparse: !!index.sparse });
		}
		// NeDB appends every write; compact the file now and then.
		db.setAutocompactionInterval(10 * 60_000);
		this.db = db;
	}

	async disconnect(): Promise<void> {
		const db = this.db;
		this.db = null;
		if (db) {
			db.stopAutocompaction();
			await db.compactDatafileAsync();
		}
	}

	private get store(): Nedb<T> {
		if (!this.db) throw new Error(`NeDB store ${this.spec.name} is not connected`);
		return this.db;
	}

	async find(params?: CursorParams | null): Promise<T[]> {
		refuseSearch(params, "NedbAdapter");
		const cursor = this.store.findAsync(params?.query ?? {});
		if (params?.sort) cursor.sort(sortSpec(params.sort));
		const { skip, limit } = paging(params);
		if (limit) cursor.limit(limit);
		if (skip) cursor.skip(skip);
		return cursor.execAsync();
	}

	async findOne(query: object): Promise<T | null> {
		return this.store.findOneAsync(query).execAsync();
	}

	async findById(id: unknown): Promise<T | null> {
		return this.findOne({ _id: id });
	}

	async findByIds(ids: unknown[]): Promise<T[]> {
		return this.store.findAsync({ _id: { $in: ids } }).execAsync();
	}

	// Counts in place: no copy of each matching document, unlike find().
	async count(params?: CursorParams | null): Promise<number> {
		refuseSearch(params, "NedbAdapter");
		const cursor = this.store.countAsync(params?.query ?? {});
		const { skip, limit } = paging(params);
		if (limit) cursor.limit(limit);
		if (skip) cursor.skip(skip);
		return cursor.execAsync();
	}

	async insert(doc: T): Promise<T> {
		return this.store.insertAsync(doc);
	}

	async insertMany(docs: T[]): Promise<T[]> {
		return this.store.insertAsync(docs);
	}

	async updateMany(query: object, update: object): Promise<number> {
		return (await this.store.updateAsync(query, update, { multi: true })).numAffected;
	}

	async updateById(id: unknown, update: object): Promise<T | null> {
		const { affectedDocuments } = await this.store.updateAsync<T>({ _id: id }, update, { returnUpdatedDocs: true });
		return Array.isArray(affectedDocuments) ? (affectedDocuments[0] ?? null) : affectedDocuments;
	}

	async removeMany(query: object): Promise<number> {
		return this.store.removeAsync(query, { multi: true });
	}

	async removeById(id: unknown): Promise<number> {
		return this.store.removeAsync({ _id: id }, {});
	}

	async clear(): Promise<number> {
		return this.store.removeAsync({}, { multi: true });
	}

	// NeDB hands out plain copies already.
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

/** A connection to one service database, shared by that service's collections in this process. */
interface SharedConnection {
	key: string;
	conn: mongoose.Connection;
	ready: Promise<mongoose.Connection>;
	users: number;
}

const mongoConnections = new Map<string, SharedConnection>();

/** The service database's connection, opened by its first collection; a failed open is forgotten, so a retry opens anew. */
async function acquireConnection(uri: string, dbName: string, owner: AdapterOwner | undefined): Promise<SharedConnection> {
	const key = `${dbName}\n${uri}`;
	let shared = mongoConnections.get(key);
	if (!shared) {
		const conn = mongoose.createConnection(uri, { dbName, serverSelectionTimeoutMS: 5000 });
		conn.on("disconnected", () => owner?.logger.warn(`MongoDB ${dbName} disconnected`));
		conn.on("reconnected", () => owner?.logger.info(`MongoDB ${dbName} reconnected`));
		const opening: SharedConnection = { key, conn, ready: conn.asPromise(), users: 0 };
		opening.ready.catch(() => {
			if (mongoConnections.get(key) === opening) mongoConnections.delete(key);
			conn.close().catch(() => undefined);
		});
		mongoConnections.set(key, opening);
		shared = opening;
	}
	shared.users++;
	try {
		await shared.ready;
	} catch (err) {
		shared.users--;
		throw err;
	}
	return shared;
}

/** Closes the connection when the last collection on it lets go. */
async function releaseConnection(shared: SharedConnection): Promise<void> {
	shared.users--;
	if (shared.users > 0) return;
	if (mongoConnections.get(shared.key) === shared) mongoConnections.delete(shared.key);
	await shared.conn.close();
}

/** A document as mongoose sees it: a string `_id` and whatever else the service stores (strict: false). */
interface StoredDocument {
	_id: string;
	[field: string]: unknown;
}

/**
 * MongoDB through mongoose, a database per service (`mint-<service>`).
 * Reads are lean: plain objects, as NeDB returns them, since services compare,
 * spread and serialise documents, which mongoose documents (getters,
 * MongooseArrays, internal state) do differently.
 */
export class MongooseAdapter<T> implements DbAdapter<T> {
	/** String `_id`s chosen by the service; undeclared fields kept in documents (strict) and in filters (strictQuery). */
	readonly schema: mongoose.Schema<StoredDocument>;
	private owner?: AdapterOwner;
	private shared?: SharedConnection;
	// The model is typed by the stored shape, not by T: mongoose's types over an
	// open type parameter exhaust the compiler. Reads name T through lean<T>().
	private bound?: { conn: mongoose.Connection; model: mongoose.Model<StoredDocument> };

	constructor(
		readonly uri: string,
		readonly dbName: string,
		private readonly spec: CollectionSpec,
	) {
		this.schema = new mongoose.Schema<StoredDocument>({ _id: String }, { strict: false, strictQuery: false, versionKey: false, collection: spec.name });
		for (const index of spec.indexes ?? []) this.schema.index(index.fields, { unique: index.unique, sparse: index.sparse });
	}

	get collectionName(): string {
		return this.spec.name;
	}

	init(_broker: unknown, service: AdapterOwner): void {
		this.owner = service;
	}

	async connect(): Promise<void> {
		const shared = await acquireConnection(this.uri, this.dbName, this.owner);
		try {
			this.useConnection(shared.conn);
			await this.model.syncIndexes();
		} catch (err) {
			this.bound = undefined;
			await releaseConnection(shared);
			throw err;
		}
		this.shared = shared;
	}

	/** Compiles the model on a connection, without any I/O: connect() does it on the opened one. */
	useConnection(conn: mongoose.Connection): void {
		// overwriteModels: another adapter for the same collection (a second broker in this process) may have compiled it.
		const model = conn.model<StoredDocument>(this.spec.name, this.schema, this.spec.name, { overwriteModels: true });
		this.bound = { conn, model };
	}

	async disconnect(): Promise<void> {
		const shared = this.shared;
		this.shared = undefined;
		this.bound = undefined;
		if (shared) await releaseConnection(shared);
	}

	private get connected(): { conn: mongoose.Connection; model: mongoose.Model<StoredDocument> } {
		if (!this.bound) throw new Error(`MongoDB store ${this.spec.name} is not connected`);
		return this.bound;
	}

	get conn(): mongoose.Connection {
		return this.connected.conn;
	}

	get model(): mongoose.Model<StoredDocument> {
		return this.connected.model;
	}

	get db(): mongoose.Connection["db"] {
		return this.conn.db;
	}

	/** As moleculer-db's mongoose adapter: the filter, then sort, skip and limit (the last two only when positive). */
	private cursor(params?: CursorParams | null) {
		refuseSearch(params, "MongooseAdapter");
		const query = this.model.find(params?.query ?? {});
		if (params?.sort) query.sort(sortSpec(params.sort));
		const { skip, limit } = paging(params);
		if (skip) query.skip(skip);
		if (limit) query.limit(limit);
		return query;
	}

	async find(params?: CursorParams | null): Promise<T[]> {
		return this.cursor(params).lean<T[]>().exec();
	}

	async findOne(query: object): Promise<T | null> {
		return this.model.findOne(query).lean<T>().exec();
	}

	async findById(id: unknown): Promise<T | null> {
		return this.model.findById(id).lean<T>().exec();
	}

	async findByIds(ids: unknown[]): Promise<T[]> {
		return this.model
			.find({ _id: { $in: ids } })
			.lean<T[]>()
			.exec();
	}

	async count(params?: CursorParams | null): Promise<number> {
		refuseSearch(params, "MongooseAdapter");
		const query = this.model.countDocuments(params?.query ?? {});
		const { skip, limit } = paging(params);
		if (skip) query.skip(skip);
		if (limit) query.limit(limit);
		return query.exec();
	}

	/** Answers the saved document as a plain object. */
	async insert(doc: T): Promise<T> {
		const saved: StoredDocument = (await new this.model(doc).save()).toObject();
		// The store's premise: this collection holds the service's T.
		return saved as T;
	}

	/** As moleculer-db's mongoose adapter (Model.create of an array): each document saved on its own. */
	async insertMany(docs: T[]): Promise<T[]> {
		return Promise.all(docs.map(doc => this.insert(doc)));
	}

	async updateMany(query: object, update: object): Promise<number> {
		return (await this.model.updateMany(query, update).exec()).modifiedCount;
	}

	async updateById(id: unknown, update: object): Promise<T | null> {
		return this.model.findByIdAndUpdate(id, update, { new: true }).lean<T>().exec();
	}

	async removeMany(query: object): Promise<number> {
		return (await this.model.deleteMany(query).exec()).deletedCount;
	}

	async removeById(id: unknown): Promise<number> {
		return (await this.model.deleteOne({ _id: id }).exec()).deletedCount;
	}

	async clear(): Promise<number> {
		return (await this.model.deleteMany({}).exec()).deletedCount;
	}

	// Reads are lean and inserts answer toObject(): already plain.
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

/** The adapter for one collection of a service, on the backend the config names. */
export function createAdapter<T>(config: Config, serviceName: string, spec: CollectionSpec): DbAdapter<T> {
	if (config.mongoUri) return new MongooseAdapter<T>(config.mongoUri, `mint-${serviceName}`, spec);
	return new NedbAdapter<T>(spec, path.join(config.dataDir, serviceName, `${spec.name}.db`));
}

// moleculer-db's typings declare its default export as a Service class; at run time it is the mixin schema.
const DbServiceMixin = DbService as unknown as Partial<ServiceSchema>;

const CRUD_ACTIONS = ["find", "count", "list", "create", "insert", "get", "update", "remove"] as const;

/** The schema DbMixin returns: moleculer-db's own keys (`adapter`, `collection`) beside a service schema's. */
export interface DbMixinSchema extends Partial<ServiceSchema> {
	adapter: DbAdapter<unknown>;
	collection: string;
}

/**
 * The service's main collection through moleculer-db (`this.adapter`), plus
 * extra collections it owns (`this.stores.<name>`), all on the same backend.
 */
export function DbMixin(config: Config, serviceName: string, main: CollectionSpec, extra: CollectionSpec[] = []): DbMixinSchema {
	const lifecycle = defineMixin<{ stores: Record<string, DbAdapter<unknown>> }>()({
		mixins: [DbServiceMixin],
		settings: { idField: "_id" },
		actions: Object.fromEntries(CRUD_ACTIONS.map(name => [name, false as const])),
		async started() {
			this.stores = {};
			for (const spec of extra) {
				const adapter = createAdapter(config, serviceName, spec);
				adapter.init(this.broker, this);
				await adapter.connect();
				this.stores[spec.name] = adapter;
			}
		},
		async stopped() {
			for (const adapter of Object.values(this.stores ?? {})) await adapter.disconnect();
		},
	});
	return { ...lifecycle, adapter: createAdapter(config, serviceName, main), collection: main.name };
}
