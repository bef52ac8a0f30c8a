/**
 * The MongoDB backend: mongoose 8, a database per service (`<NAMESPACE>-<service>`,
 * `mint-auth`...) on one MongoDB client per process (per URI), shared by every collection of
 * every service the node hosts through `useDb`.
 *
 * Concerns are pinned here and override the URI (MONGO_CLIENT_OPTIONS):
 * writes acknowledged by a majority of the replica set and journaled, with a
 * timeout; reads from the primary (a service reads back what it just wrote);
 * retryable writes and reads. An operator's URI cannot weaken them.
 *
 * Indexes are created, never dropped (createIndexes, not syncIndexes): an
 * operator's own indexes and those an older version still uses during a
 * rolling deploy stay; an index whose options changed fails the connect,
 * logged, for an operator to resolve.
 *
 * Connection events (connected, disconnected, reconnected, error) are logged
 * and counted in `mint_mongo_connection_events_total{event}`; operations in
 * `mint_store_operations_total{service,collection,operation}`, as on NeDB.
 */
import mongoose from "mongoose";
import { storeOperationCounter } from "../../lib/business-metrics";
import {
	checkFilter,
	paging,
	refuseSearch,
	PlainDocuments,
	sortSpec,
	type AdapterOwner,
	type CollectionSpec,
	type CursorParams,
	type DbAdapter,
} from "./store";

/** The client options Mint pins, whatever the URI says. */
export const MONGO_CLIENT_OPTIONS = {
	// Acknowledged by a majority and journaled: an acknowledged ledger write survives a crash or a failover.
	w: "majority",
	journal: true,
	wtimeoutMS: 10_000,
	writeConcern: { w: "majority", journal: true, wtimeoutMS: 10_000 },
	// Read-your-write: a secondary may not have the write a service just made.
	readPreference: "primary",
	retryWrites: true,
	retryReads: true,
	// Longer than a replica-set election (about 12 s at most with default settings).
	serverSelectionTimeoutMS: 30_000,
	// Indexes are created by connect(), with createIndexes, not by mongoose in the background.
	autoIndex: false,
} as const satisfies mongoose.ConnectOptions;

export const MONGO_EVENTS_METRIC = "mint.mongo.connection.events.total";
const LOGGED_EVENTS = ["connected", "disconnected", "reconnected", "error"] as const;

/** The part of a Moleculer broker the adapter counts connection events with. */
interface MetricsHost {
	metrics?: { register(def: object): unknown; hasMetric(name: string): boolean; increment(name: string, labels?: object): void };
}

/** The process's client for one URI, shared by every service database on it. */
interface SharedClient {
	uri: string;
	base: mongoose.Connection;
	ready: Promise<mongoose.Connection>;
	users: number;
}

const mongoClients = new Map<string, SharedClient>();

/** Logs and counts the client's connection events, on behalf of whoever opened it. */
function watch(base: mongoose.Connection, owner: AdapterOwner | undefined, broker: MetricsHost | undefined): void {
	for (const event of LOGGED_EVENTS) {
		base.on(event, (err?: unknown) => {
			broker?.metrics?.increment(MONGO_EVENTS_METRIC, { event });
			if (event === "error") owner?.logger.error({ err }, "MongoDB connection error");
			else if (event === "disconnected") owner?.logger.warn({}, "MongoDB disconnected");
			else owner?.logger.info({}, `MongoDB ${event}`);
		});
	}
}

/**
 * A service database on the process's client, opened by the first collection
 * that needs it. A failed open closes the client and is forgotten, so the
 * next attempt opens a new one.
 */
async function acquireDb(
	uri: string,
	dbName: string,
	owner: AdapterOwner | undefined,
	broker: MetricsHost | undefined,
): Promise<{ shared: SharedClient; conn: mongoose.Connection }> {
	let shared = mongoClients.get(uri);
	if (!shared) {
		const base = mongoose.createConnection(uri, MONGO_CLIENT_OPTIONS);
		watch(base, owner, broker);
		const opening: SharedClient = { uri, base, ready: base.asPromise(), users: 0 };
		opening.ready.catch(() => {
			if (mongoClients.get(uri) === opening) mongoClients.delete(uri);
			base.close().catch(() => undefined);
		});
		mongoClients.set(uri, opening);
		shared = opening;
	}
	shared.users++;
	try {
		await shared.ready;
	} catch (err) {
		shared.users--;
		throw err;
	}
	return { shared, conn: shared.base.useDb(dbName, { useCache: true }) };
}

/** Closes the client when the last collection on it lets go. */
async function releaseDb(shared: SharedClient): Promise<void> {
	shared.users--;
	if (shared.users > 0) return;
	if (mongoClients.get(shared.uri) === shared) mongoClients.delete(shared.uri);
	await shared.base.close();
}

/** A document as mongoose sees it: a string `_id` and whatever else the service stores (strict: false). */
interface StoredDocument {
	_id: string;
	[field: string]: unknown;
}

/**
 * MongoDB through mongoose, a database per service (`<NAMESPACE>-<service>`).
 * Reads are lean: plain objects, as NeDB returns them, since services compare,
 * spread and serialise documents, which mongoose documents (getters,
 * MongooseArrays, internal state) do differently.
 */
/** (Reads are lean and inserts answer toObject(): documents are plain, as PlainDocuments assumes.) */
export class MongooseAdapter<T> extends PlainDocuments<T> implements DbAdapter<T> {
	/** String `_id`s chosen by the service; undeclared fields kept in documents (strict) and in filters (strictQuery). */
	readonly schema: mongoose.Schema<StoredDocument>;
	private owner?: AdapterOwner;
	private broker?: MetricsHost;
	/** Counts each operation in `mint_store_operations_total` (lib/business-metrics.ts), once init() has the broker. */
	private counted: (operation: string) => void = () => undefined;
	private shared?: SharedClient;
	// The model is typed by the stored shape, not by T: mongoose's types over an
	// open type parameter exhaust the compiler. Reads name T through lean<T>().
	private bound?: { conn: mongoose.Connection; model: mongoose.Model<StoredDocument> };

	constructor(
		readonly uri: string,
		readonly dbName: string,
		private readonly spec: CollectionSpec,
	) {
		super();
		// minimize: false keeps an empty object as {} (NeDB does), rather than dropping the field.
		this.schema = new mongoose.Schema<StoredDocument>(
			{ _id: String },
			{ strict: false, strictQuery: false, versionKey: false, minimize: false, collection: spec.name },
		);
		for (const index of spec.indexes ?? []) this.schema.index(index.fields, { unique: index.unique, sparse: index.sparse });
	}

	get collectionName(): string {
		return this.spec.name;
	}

	init(broker: unknown, service: AdapterOwner): void {
		this.owner = service;
		this.broker = broker as MetricsHost;
		// Once per broker: registering a name again would replace the counter and its values.
		if (!this.broker?.metrics?.hasMetric(MONGO_EVENTS_METRIC))
			this.broker?.metrics?.register({
				type: "counter",
				name: MONGO_EVENTS_METRIC,
				labelNames: ["event"],
				description: "MongoDB client connection events (connected, disconnected, reconnected, error)",
			});
		this.counted = storeOperationCounter(broker, service.name ?? this.dbName, this.spec.name);
	}

	async connect(): Promise<void> {
		const { shared, conn } = await acquireDb(this.uri, this.dbName, this.owner, this.broker);
		try {
			this.useConnection(conn);
			// Creates what is missing, drops nothing.
			await this.model.createIndexes();
		} catch (err) {
			this.bound = undefined;
			await releaseDb(shared);
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
		if (shared) await releaseDb(shared);
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

	/** A filter as the services wrote it, once checked (no undefined values). */
	private filter(query: object | undefined): object {
		checkFilter(query ?? {}, this.spec.name);
		return query ?? {};
	}

	/** As moleculer-db's mongoose adapter: the filter, then sort, skip and limit (the last two only when positive). */
	private cursor(params?: CursorParams | null) {
		refuseSearch(params, "MongooseAdapter");
		const query = this.model.find(this.filter(params?.query));
		if (params?.sort) query.sort(sortSpec(params.sort));
		const { skip, limit } = paging(params);
		if (skip) query.skip(skip);
		if (limit) query.limit(limit);
		return query;
	}

	async find(params?: CursorParams | null): Promise<T[]> {
		this.counted("find");
		return this.cursor(params).lean<T[]>().exec();
	}

	async findOne(query: object): Promise<T | null> {
		this.counted("findOne");
		return this.model.findOne(this.filter(query)).lean<T>().exec();
	}

	async findById(id: unknown): Promise<T | null> {
		this.counted("findById");
		return this.model.findById(id).lean<T>().exec();
	}

	async findByIds(ids: unknown[]): Promise<T[]> {
		this.counted("findByIds");
		return this.model
			.find({ _id: { $in: ids } })
			.lean<T[]>()
			.exec();
	}

	async count(params?: CursorParams | null): Promise<number> {
		this.counted("count");
		refuseSearch(params, "MongooseAdapter");
		const query = this.model.countDocuments(this.filter(params?.query));
		const { skip, limit } = paging(params);
		if (skip) query.skip(skip);
		if (limit) query.limit(limit);
		return query.exec();
	}

	/** Answers the saved document as a plain object. */
	async insert(doc: T): Promise<T> {
		this.counted("insert");
		return this.save(doc);
	}

	/** As moleculer-db's mongoose adapter (Model.create of an array): each document saved on its own. */
	async insertMany(docs: T[]): Promise<T[]> {
		this.counted("insertMany");
		return Promise.all(docs.map(doc => this.save(doc)));
	}

	private async save(doc: T): Promise<T> {
		const saved: StoredDocument = (await new this.model(doc).save()).toObject({ minimize: false });
		// The store's premise: this collection holds the service's T.
		return saved as T;
	}

	/** updateOne is a retryable write (retryWrites): at most once, even when the driver retries it after a failover. */
	async updateOne(query: object, update: object, opts: { upsert?: boolean } = {}): Promise<number> {
		this.counted("updateOne");
		const result = await this.model.updateOne(this.filter(query), update, { upsert: !!opts.upsert }).exec();
		return result.matchedCount + result.upsertedCount;
	}

	/** Matched, not modified: a no-op update of a matching document counts, as on NeDB. */
	async updateMany(query: object, update: object): Promise<number> {
		this.counted("updateMany");
		return (await this.model.updateMany(this.filter(query), update).exec()).matchedCount;
	}

	async updateById(id: unknown, update: object): Promise<T | null> {
		this.counted("updateById");
		return this.model.findByIdAndUpdate(id, update, { new: true }).lean<T>().exec();
	}

	async removeMany(query: object): Promise<number> {
		this.counted("removeMany");
		return (await this.model.deleteMany(this.filter(query)).exec()).deletedCount;
	}

	async removeById(id: unknown): Promise<number> {
		this.counted("removeById");
		return (await this.model.deleteOne({ _id: id }).exec()).deletedCount;
	}

	async clear(): Promise<number> {
		this.counted("clear");
		return (await this.model.deleteMany({}).exec()).deletedCount;
	}
}
