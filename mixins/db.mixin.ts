/**
 * The DB mixin: one way for every service to own its collections.
 *
 * - MONGO_URI set: moleculer-db-adapter-mongoose (mongoose 8), a database per
 *   service (`mint-<service>`), indexes declared here.
 * - otherwise: moleculer-db's NeDB-based MemoryAdapter, persisted in files
 *   under DATA_DIR.
 *
 * Services see the moleculer-db adapter API (insert, findOne, find, count,
 * updateMany, removeMany) and never learn which one they got. Documents use
 * string `_id`s chosen by the service, so ids look the same on both.
 * moleculer-db's generated CRUD actions are switched off: nothing outside the
 * service can reach its collections.
 */
import fs from "node:fs";
import path from "node:path";
import Nedb from "@seald-io/nedb";
import type { ServiceSchema } from "moleculer";
import DbService from "moleculer-db";
import MongooseAdapter from "moleculer-db-adapter-mongoose";
import mongoose from "mongoose";
import type { Config } from "../lib/config";

export interface IndexSpec {
	fields: Record<string, 1 | -1>;
	unique?: boolean;
	sparse?: boolean;
}

export interface CollectionSpec {
	name: string;
	indexes?: IndexSpec[];
}

/** The part of the moleculer-db adapter API that Mint uses. */
export interface Store<T = any> {
	insert(doc: T): Promise<T>;
	findOne(query: object): Promise<T | null>;
	find(params: { query?: object; sort?: string[]; limit?: number; offset?: number }): Promise<T[]>;
	count(params?: { query?: object }): Promise<number>;
	/** Returns the number of documents changed: the compare-and-set primitive. */
	updateMany(query: object, update: object): Promise<number>;
	removeMany(query: object): Promise<number>;
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

/** moleculer-db's mongoose adapter shares one global connection; Mint wants a database per service. */
class PerServiceMongooseAdapter extends (MongooseAdapter as any) {
	constructor(
		uri: string,
		private readonly dbName: string,
		private readonly spec: CollectionSpec,
	) {
		const schema = new mongoose.Schema({ _id: String }, { strict: false, strictQuery: false, versionKey: false, collection: spec.name });
		for (const index of spec.indexes ?? []) schema.index(index.fields, { unique: index.unique, sparse: index.sparse });
		super(uri, { dbName });
		(this as any).schema = schema;
		(this as any).modelName = spec.name;
	}

	init(broker: unknown, service: unknown) {
		(this as any).broker = broker;
		(this as any).service = service;
	}

	async connect() {
		const self = this as any;
		self.conn = await mongoose.createConnection(self.uri, { dbName: this.dbName, serverSelectionTimeoutMS: 5000 }).asPromise();
		self.model = self.conn.model(this.spec.name, self.schema);
		self.db = self.conn.db;
		await self.model.syncIndexes();
	}

	async disconnect() {
		await (this as any).conn?.close();
	}

	// Plain objects, as NeDB returns them: services compare, spread and
	// serialise documents, which mongoose documents (getters, MongooseArrays,
	// internal state) do differently.
	find(filters: object) {
		return (this as any).createCursor(filters).lean().exec();
	}

	findOne(query: object) {
		return (this as any).model.findOne(query).lean().exec();
	}

	findById(_id: string) {
		return (this as any).model.findById(_id).lean().exec();
	}

	async insert(entity: object) {
		const saved = await new (this as any).model(entity).save();
		return saved.toObject();
	}
}

/** What moleculer-db and Mint pass to find() and count(). */
interface CursorParams {
	query?: object;
	sort?: string[];
	limit?: number;
	offset?: number;
	search?: string;
}

/**
 * NeDB through moleculer-db's MemoryAdapter, one file per collection.
 *
 * Every method is overridden to use NeDB's own promise API: the base
 * connect() swaps the datastore's methods for util.promisify wrappers, one of
 * which returns a Promise, so Node warns (DEP0174) on every update.
 */
class FileMemoryAdapter extends (DbService.MemoryAdapter as any) {
	declare opts: { filename: string };
	declare db: Nedb | null;

	constructor(private readonly spec: CollectionSpec, filename: string) {
		fs.mkdirSync(path.dirname(filename), { recursive: true, mode: 0o700 });
		super({ filename });
	}

	async connect() {
		const db = new Nedb({ filename: this.opts.filename });
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

	async disconnect() {
		const db = this.db;
		this.db = null;
		if (db) {
			db.stopAutocompaction();
			await db.compactDatafileAsync();
		}
	}

	private get store(): Nedb {
		if (!this.db) throw new Error(`NeDB store ${this.spec.name} is not connected`);
		return this.db;
	}

	createCursor(params?: CursorParams | null) {
		const { query, sort, search } = params ?? {};
		// Mint never searches; refuse rather than silently match everything.
		if (search) throw new Error("FileMemoryAdapter does not support search");
		const cursor = this.store.findAsync(query ?? {});
		if (sort) cursor.sort(Object.fromEntries(sort.map(f => (f.startsWith("-") ? [f.slice(1), -1] : [f, 1]))));
		return paginate(cursor, params);
	}

	async find(params?: CursorParams | null) {
		return this.createCursor(params).execAsync();
	}

	async findOne(query: object) {
		return this.store.findOneAsync(query).execAsync();
	}

	async findById(_id: unknown) {
		return this.findOne({ _id });
	}

	async findByIds(ids: unknown[]) {
		return this.store.findAsync({ _id: { $in: ids } }).execAsync();
	}

	// Counts in place: no copy of each matching document, unlike find().
	async count(params?: CursorParams | null) {
		return paginate(this.store.countAsync(params?.query ?? {}), params).execAsync();
	}

	async insert(entity: object) {
		return this.store.insertAsync(entity);
	}

	async insertMany(entities: object[]) {
		return this.store.insertAsync(entities);
	}

	async updateMany(query: object, update: object): Promise<number> {
		return (await this.store.updateAsync(query, update, { multi: true })).numAffected;
	}

	async updateById(_id: unknown, update: object) {
		return (await this.store.updateAsync({ _id }, update, { returnUpdatedDocs: true })).affectedDocuments;
	}

	async removeMany(query: object): Promise<number> {
		return this.store.removeAsync(query, { multi: true });
	}

	async removeById(_id: unknown): Promise<number> {
		return this.store.removeAsync({ _id }, {});
	}

	async clear(): Promise<number> {
		return this.store.removeAsync({}, { multi: true });
	}
}

/** moleculer-db's offset and limit: applied only when positive. */
function paginate<T>(cursor: Nedb.Cursor<T>, params?: CursorParams | null): Nedb.Cursor<T> {
	const { limit, offset } = params ?? {};
	if (typeof limit === "number" && limit > 0) cursor.limit(limit);
	if (typeof offset === "number" && offset > 0) cursor.skip(offset);
	return cursor;
}

export function createAdapter(config: Config, serviceName: string, spec: CollectionSpec): any {
	if (config.mongoUri) return new PerServiceMongooseAdapter(config.mongoUri, `mint-${serviceName}`, spec);
	return new FileMemoryAdapter(spec, path.join(config.dataDir, serviceName, `${spec.name}.db`));
}

const CRUD_ACTIONS = ["find", "count", "list", "create", "insert", "get", "update", "remove"];

/**
 * The service's main collection through moleculer-db (`this.adapter`), plus
 * extra collections it owns (`this.stores.<name>`), all on the same backend.
 */
export function DbMixin(config: Config, serviceName: string, main: CollectionSpec, extra: CollectionSpec[] = []): Partial<ServiceSchema> {
	return {
		mixins: [DbService],
		adapter: createAdapter(config, serviceName, main),
		collection: main.name,
		settings: { idField: "_id" },
		actions: Object.fromEntries(CRUD_ACTIONS.map(name => [name, false])),
		async started(this: any) {
			this.stores = {};
			for (const spec of extra) {
				const adapter = createAdapter(config, serviceName, spec);
				adapter.init(this.broker, this);
				await adapter.connect();
				this.stores[spec.name] = adapter;
			}
		},
		async stopped(this: any) {
			for (const adapter of Object.values(this.stores ?? {})) await (adapter as any).disconnect();
		},
	} as Partial<ServiceSchema>;
}
