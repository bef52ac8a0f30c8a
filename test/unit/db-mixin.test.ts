/**
 * The DB mixin without any server: which adapter createAdapter() builds for
 * which config, how the Mongoose one is set up, and the store contract on a
 * real NeDB file.
 *
 * The environment re-emits Node's own warnings on the test's `process`, so the
 * NeDB store can be shown to cause no DEP0174.
 * @jest-environment ./test/unit/helpers/host-warnings.environment.ts
 */
import fs from "node:fs";
import path from "node:path";
import util from "node:util";
import { ServiceBroker } from "moleculer";
import mongoose from "mongoose";
import { STORE_OPERATIONS } from "../../lib/business-metrics";
import { createAdapter, DbMixin, isDuplicateKeyError, NedbAdapter, type CollectionSpec } from "../../mixins/db.mixin";
import { MONGO_CLIENT_OPTIONS, MONGO_EVENTS_METRIC, MongooseAdapter } from "../../mixins/db/mongo-adapter";
import { testConfig } from "../helpers/mint";
import { CONTRACT_SPEC, storeRoundTrip, type ContractDoc } from "../helpers/store-contract";

const MONGO_URI = "mongodb://127.0.0.1:27017";
const USERS = { name: "users", indexes: [{ fields: { email: 1 as const }, unique: true }] };

const dataDirs: string[] = [];
/** A config on the NeDB engine whatever EMBEDDED_STORE the suite runs with (the SQLite store has test/unit/sqlite-adapter.test.ts). */
function config(env: Record<string, string> = {}) {
	const c = testConfig({ EMBEDDED_STORE: "nedb", ...env });
	dataDirs.push(c.dataDir);
	return c;
}
afterAll(() => {
	for (const dir of dataDirs) fs.rmSync(dir, { recursive: true, force: true });
});

/** A broker with Moleculer's metrics, never started: the registry the adapters count in. */
const metricsBroker = () => new ServiceBroker({ logger: false, metrics: { enabled: true } });

/** `service collection operation` -> count, as the broker's registry holds mint_store_operations_total. */
function storeOperations(broker: ServiceBroker): Record<string, number> {
	// A counter's snapshot: one { labels, value } per label set.
	const values = (broker.metrics.getMetric(STORE_OPERATIONS.name)?.snapshot() ?? []) as { labels: Record<string, string>; value: number }[];
	return Object.fromEntries(values.map(({ labels, value }) => [`${labels.service} ${labels.collection} ${labels.operation}`, value]));
}

/** createAdapter with MONGO_URI, which must build the Mongoose adapter. */
function mongoAdapter<T = Record<string, unknown>>(serviceName: string, spec: CollectionSpec): MongooseAdapter<T> {
	const adapter = createAdapter<T>(config({ MONGO_URI }), serviceName, spec);
	if (!(adapter instanceof MongooseAdapter)) throw new Error(`expected a MongooseAdapter, got ${adapter.constructor.name}`);
	return adapter;
}

describe("createAdapter with MONGO_URI (nothing connects)", () => {
	const mongo = () => mongoAdapter("auth", USERS);

	it("builds the Mongoose adapter for the configured URI", () => {
		const adapter = createAdapter(config({ MONGO_URI }), "auth", USERS);
		expect(adapter).toBeInstanceOf(MongooseAdapter);
		expect(adapter).not.toBeInstanceOf(NedbAdapter);
		expect(mongo().uri).toBe(MONGO_URI);
		expect(mongo().collectionName).toBe("users");
	});

	it("gives every service its own database, <NAMESPACE>-<service> (mint-<service> by default)", () => {
		expect(mongo().dbName).toBe("mint-auth");
		expect((createAdapter(config({ MONGO_URI, NAMESPACE: "staging" }), "wallet", { name: "wallets" }) as MongooseAdapter<unknown>).dbName).toBe(
			"staging-wallet",
		);
		expect(mongoAdapter("wallet", { name: "wallets" }).dbName).toBe("mint-wallet");
	});

	it("declares the collection's indexes on the mongoose schema (unique email)", () => {
		const { schema } = mongo();
		expect(schema).toBeInstanceOf(mongoose.Schema);
		expect(schema.options.collection).toBe("users");
		expect(schema.indexes()).toEqual([[{ email: 1 }, expect.objectContaining({ unique: true })]]);
		const sparse = mongoAdapter("auth", { name: "sessions", indexes: [{ fields: { familyId: 1 }, sparse: true }, { fields: { userId: -1 } }] });
		expect(sparse.schema.indexes()).toEqual([
			[{ familyId: 1 }, expect.objectContaining({ sparse: true })],
			[{ userId: -1 }, expect.not.objectContaining({ unique: true })],
		]);
	});

	it("uses String _ids chosen by the service, not ObjectIds", () => {
		const { schema } = mongo();
		expect(schema.path("_id").instance).toBe("String");
		expect(schema.options.versionKey).toBe(false);
	});

	it("keeps undeclared fields in documents (strict false) and in filters (strictQuery false)", () => {
		const { schema } = mongo();
		expect(schema.options.strict).toBe(false);
		expect(schema.options.strictQuery).toBe(false);
	});

	it("keeps a filter on an undeclared field even where mongoose's global strictQuery is on, so it is not stripped to {}", () => {
		const { schema } = mongo();
		// moleculer-db's mongoose adapter used to switch strictQuery on globally; the schema's option must win over it.
		const globalStrictQuery = mongoose.get("strictQuery");
		mongoose.set("strictQuery", true);
		try {
			// A connection that never opens: enough to build models and cast filters.
			const conn = mongoose.createConnection();
			const Users = conn.model("users", schema);
			expect(Users.find({ familyId: "f1", revokedAt: null }).cast(Users)).toEqual({ familyId: "f1", revokedAt: null });
			// What would happen without the schema option: the filter matches every document.
			const Plain = conn.model("plain", new mongoose.Schema({ _id: String }, { strict: false }));
			expect(Plain.find({ familyId: "f1", revokedAt: null }).cast(Plain)).toEqual({});
			// And documents keep their undeclared fields.
			const doc = new Users({ _id: "u1", email: "a@example.com", rotatedAt: null });
			expect(doc.toObject()).toEqual({ _id: "u1", email: "a@example.com", rotatedAt: null });
		} finally {
			mongoose.set("strictQuery", globalStrictQuery);
		}
	});
});

describe("the Mongoose adapter's client (mongoose.createConnection stubbed: nothing leaves the process)", () => {
	let opened: { uri: string; options: unknown; conn: mongoose.Connection; closed: number }[];
	let openFails: boolean;
	let indexed: { db: string; collection: string }[];
	let metric: { registered: object[]; counted: object[] };
	beforeEach(() => {
		opened = [];
		openFails = false;
		indexed = [];
		metric = { registered: [], counted: [] };
		const createConnection = mongoose.createConnection.bind(mongoose);
		jest.spyOn(mongoose, "createConnection").mockImplementation(((uri: string, options: unknown) => {
			// A real connection that never opens: models compile on it, no I/O happens.
			const conn = createConnection();
			const record = { uri, options, conn, closed: 0 };
			jest.spyOn(conn, "asPromise").mockImplementation(() => (openFails ? Promise.reject(new Error("server selection timed out")) : Promise.resolve(conn)));
			jest.spyOn(conn, "close").mockImplementation(async () => void record.closed++);
			opened.push(record);
			return conn;
		}) as typeof mongoose.createConnection);
		jest.spyOn(mongoose.Model, "createIndexes").mockImplementation(async function (this: mongoose.Model<unknown>) {
			indexed.push({ db: this.db.name, collection: this.collection.collectionName });
		});
		jest.spyOn(mongoose.Model, "syncIndexes").mockImplementation(async () => {
			throw new Error("syncIndexes drops indexes: never called");
		});
	});
	afterEach(() => jest.restoreAllMocks());

	const owner = { logger: { info: jest.fn(), warn: jest.fn(), error: jest.fn() } };
	const broker = {
		metrics: {
			hasMetric: (name: string) => metric.registered.some(def => (def as { name: string }).name === name),
			register: (def: object) => void metric.registered.push(def),
			increment: (name: string, labels?: object) => void metric.counted.push({ name, ...labels }),
		},
	};
	const connected = async (serviceName: string, spec: CollectionSpec) => {
		const adapter = mongoAdapter(serviceName, spec);
		adapter.init(broker, owner);
		await adapter.connect();
		return adapter;
	};

	it("opens one client per process, a database per service on it (useDb), and creates each collection's indexes without dropping any", async () => {
		const users = await connected("auth", USERS);
		const sessions = await connected("auth", { name: "sessions", indexes: [{ fields: { familyId: 1 } }] });
		const wallets = await connected("wallet", { name: "wallets" });
		expect(opened.map(o => o.uri)).toEqual([MONGO_URI]);
		expect([users.conn.name, sessions.conn.name, wallets.conn.name]).toEqual(["mint-auth", "mint-auth", "mint-wallet"]);
		expect(users.conn).toBe(sessions.conn);
		expect(users.conn.getClient()).toBe(opened[0].conn.getClient());
		expect(wallets.conn.getClient()).toBe(opened[0].conn.getClient());
		expect(indexed).toEqual([
			{ db: "mint-auth", collection: "users" },
			{ db: "mint-auth", collection: "sessions" },
			{ db: "mint-wallet", collection: "wallets" },
		]);

		// The client closes with the last collection on it, once.
		await users.disconnect();
		await sessions.disconnect();
		await sessions.disconnect();
		expect(opened[0].closed).toBe(0);
		expect(() => users.model).toThrow("MongoDB store users is not connected");
		await wallets.disconnect();
		expect(opened[0].closed).toBe(1);

		// The next connect opens a new one.
		const again = await connected("auth", USERS);
		expect(opened).toHaveLength(2);
		expect(again.conn.getClient()).toBe(opened[1].conn.getClient());
		await again.disconnect();
	});

	it("pins the concerns, whatever the URI says: majority and journaled writes with a timeout, primary reads, retryable writes, a 30 s selection timeout", async () => {
		const weak = "mongodb://127.0.0.1:27017/?w=1&journal=false&readPreference=secondary&retryWrites=false&serverSelectionTimeoutMS=1000";
		jest.restoreAllMocks(); // the real createConnection: a client that never reaches a server
		const adapter = createAdapter(config({ MONGO_URI: weak }), "wallet", { name: "wallets" });
		if (!(adapter instanceof MongooseAdapter)) throw new Error("expected a MongooseAdapter");
		const conn = mongoose.createConnection(weak, MONGO_CLIENT_OPTIONS);
		conn.on("error", () => undefined);
		conn.asPromise().catch(() => undefined);
		try {
			const options = conn.getClient().options;
			expect(options.writeConcern).toMatchObject({ w: "majority", journal: true, wtimeoutMS: 10_000 });
			expect(options.readPreference.mode).toBe("primary");
			expect([options.retryWrites, options.retryReads, options.serverSelectionTimeoutMS]).toEqual([true, true, 30_000]);
			// And the adapter opens its client with exactly these options.
			const seen: unknown[] = [];
			const createConnection = mongoose.createConnection.bind(mongoose);
			jest.spyOn(mongoose, "createConnection").mockImplementation(((uri: string, opts: unknown) => {
				seen.push([uri, opts]);
				const stub = createConnection();
				jest.spyOn(stub, "asPromise").mockResolvedValue(stub);
				jest.spyOn(stub, "close").mockResolvedValue(undefined);
				return stub;
			}) as typeof mongoose.createConnection);
			jest.spyOn(mongoose.Model, "createIndexes").mockResolvedValue(undefined);
			adapter.init({}, owner);
			await adapter.connect();
			expect(seen).toEqual([[weak, MONGO_CLIENT_OPTIONS]]);
			await adapter.disconnect();
		} finally {
			// Force: a plain close() waits for the server selection that can never succeed here.
			await conn.getClient().close(true);
		}
	});

	it("forgets a client that failed to open and closes it, so the next attempt opens a new one", async () => {
		openFails = true;
		const users = mongoAdapter("auth", USERS);
		users.init(broker, owner);
		await expect(users.connect()).rejects.toThrow("server selection timed out");
		expect(opened).toHaveLength(1);
		await new Promise(resolve => setImmediate(resolve));
		expect(opened[0].closed).toBe(1);
		expect(() => users.conn).toThrow("not connected");

		openFails = false;
		await users.connect();
		expect(opened).toHaveLength(2);
		expect(users.conn.getClient()).toBe(opened[1].conn.getClient());
		await users.disconnect();
		expect(opened[1].closed).toBe(1);
	});

	it("releases the client when creating an index fails (an option conflict), and the retry connects anew", async () => {
		jest.spyOn(mongoose.Model, "createIndexes").mockRejectedValueOnce(Object.assign(new Error("Index already exists with different options"), { code: 85 }));
		const users = mongoAdapter("auth", USERS);
		users.init(broker, owner);
		await expect(users.connect()).rejects.toThrow("different options");
		expect(opened[0].closed).toBe(1);
		expect(() => users.model).toThrow("not connected");
		await users.connect();
		expect(opened).toHaveLength(2);
		await users.disconnect();
	});

	it("logs and counts the client's connection events", async () => {
		const users = await connected("auth", USERS);
		expect(metric.registered).toEqual([
			expect.objectContaining({ type: "counter", name: MONGO_EVENTS_METRIC, labelNames: ["event"] }),
			expect.objectContaining({ type: "counter", name: STORE_OPERATIONS.name, labelNames: ["service", "collection", "operation"] }),
		]);
		const base = opened[0].conn;
		base.emit("disconnected");
		base.emit("reconnected");
		base.emit("error", new Error("boom"));
		expect(metric.counted).toEqual([
			{ name: MONGO_EVENTS_METRIC, event: "disconnected" },
			{ name: MONGO_EVENTS_METRIC, event: "reconnected" },
			{ name: MONGO_EVENTS_METRIC, event: "error" },
		]);
		expect(owner.logger.warn).toHaveBeenCalledWith({}, "MongoDB disconnected");
		expect(owner.logger.info).toHaveBeenCalledWith({}, "MongoDB reconnected");
		expect(owner.logger.error).toHaveBeenCalledWith({ err: expect.objectContaining({ message: "boom" }) }, "MongoDB connection error");
		await users.disconnect();
	});
});

describe("the Mongoose adapter's queries (each one caught where it would go to MongoDB)", () => {
	interface UserDoc {
		_id: string;
		email: string;
		rank?: number;
	}
	type Sent = { op: string; filter: object; options: object; lean: unknown; update: unknown };
	let sent: Sent[];
	let adapter: MongooseAdapter<UserDoc>;
	const answers: Record<string, unknown> = {
		find: [{ _id: "u1", email: "a@example.com" }],
		findOne: { _id: "u2", email: "b@example.com" },
		countDocuments: 3,
		updateMany: { acknowledged: true, matchedCount: 2, modifiedCount: 1 },
		updateOne: { acknowledged: true, matchedCount: 1, modifiedCount: 0, upsertedCount: 0 },
		deleteMany: { acknowledged: true, deletedCount: 2 },
		deleteOne: { acknowledged: true, deletedCount: 1 },
		findOneAndUpdate: { _id: "u2", email: "b@example.com", rank: 7 },
	};
	beforeEach(() => {
		sent = [];
		adapter = mongoAdapter<UserDoc>("auth", USERS);
		// A connection that never opens: the model compiles, every query is caught at exec().
		adapter.useConnection(mongoose.createConnection());
		jest.spyOn(mongoose.Query.prototype, "exec").mockImplementation(async function (this: mongoose.Query<unknown, unknown>) {
			// The operation's name: a Query property mongoose's typings leave out.
			const op = "op" in this ? String(this.op) : "unknown";
			sent.push({ op, filter: this.getFilter(), options: this.getOptions(), lean: this.mongooseOptions().lean, update: this.getUpdate() });
			return answers[op];
		});
	});
	afterEach(() => jest.restoreAllMocks());

	it("reads with lean(), so services get plain objects, as from NeDB", async () => {
		expect(await adapter.findOne({ email: "b@example.com" })).toEqual(answers.findOne);
		expect(await adapter.findById("u2")).toEqual(answers.findOne);
		expect(await adapter.find({ query: { email: "a@example.com" } })).toEqual(answers.find);
		expect(await adapter.findByIds(["u1", "zz"])).toEqual(answers.find);
		expect(await adapter.updateById("u2", { $set: { rank: 7 } })).toEqual(answers.findOneAndUpdate);
		expect(sent.map(s => [s.op, s.filter, s.lean])).toEqual([
			["findOne", { email: "b@example.com" }, true],
			["findOne", { _id: "u2" }, true],
			["find", { email: "a@example.com" }, true],
			["find", { _id: { $in: ["u1", "zz"] } }, true],
			["findOneAndUpdate", { _id: "u2" }, true],
		]);
		expect(sent[4]).toMatchObject({ options: { new: true }, update: { $set: { rank: 7 } } });
	});

	it("sorts, skips and limits as moleculer-db's mongoose adapter does (skip and limit only when positive)", async () => {
		await adapter.find({ query: { rank: { $gt: 1 } }, sort: ["-rank", "email"], limit: 2, offset: 1 });
		await adapter.find({ sort: "rank,-email", limit: 0, offset: 0 });
		await adapter.find({});
		await adapter.find();
		expect(sent.map(s => [s.filter, s.options])).toEqual([
			[{ rank: { $gt: 1 } }, { sort: { rank: -1, email: 1 }, skip: 1, limit: 2 }],
			[{}, { sort: { rank: 1, email: -1 } }],
			[{}, {}],
			[{}, {}],
		]);
	});

	it("counts with countDocuments, paged like find()", async () => {
		expect(await adapter.count({ query: { rank: { $gt: 1 } } })).toBe(3);
		expect(await adapter.count()).toBe(3);
		await adapter.count({ limit: 2, offset: 2 });
		expect(sent.map(s => [s.op, s.filter, s.options])).toEqual([
			["countDocuments", { rank: { $gt: 1 } }, {}],
			["countDocuments", {}, {}],
			["countDocuments", {}, { skip: 2, limit: 2 }],
		]);
	});

	it("answers updates with the number of documents matched (a no-op counts, as on NeDB), removals with the number deleted", async () => {
		expect(await adapter.updateOne({ _id: "u1", rank: 1 }, { $set: { rank: 1 } })).toBe(1);
		expect(await adapter.updateMany({ _id: "u1", rank: 1 }, { $inc: { rank: 1 } })).toBe(2);
		expect(await adapter.removeMany({ rank: { $gt: 10 } })).toBe(2);
		expect(await adapter.removeById("u2")).toBe(1);
		expect(await adapter.clear()).toBe(2);
		expect(sent.map(s => [s.op, s.filter, s.update])).toEqual([
			["updateOne", { _id: "u1", rank: 1 }, { $set: { rank: 1 } }],
			["updateMany", { _id: "u1", rank: 1 }, { $inc: { rank: 1 } }],
			["deleteMany", { rank: { $gt: 10 } }, undefined],
			["deleteOne", { _id: "u2" }, undefined],
			["deleteMany", {}, undefined],
		]);
	});

	it("answers an insert with a plain object, not a mongoose document", async () => {
		const saved: unknown[] = [];
		jest.spyOn(mongoose.Model.prototype, "save").mockImplementation(async function (this: mongoose.Document) {
			saved.push(this);
			return this;
		});
		const inserted = await adapter.insert({ _id: "u3", email: "c@example.com" });
		expect(inserted).toEqual({ _id: "u3", email: "c@example.com" });
		expect(inserted).not.toBeInstanceOf(mongoose.Document);
		expect(saved[0]).toBeInstanceOf(mongoose.Document);
		const many = await adapter.insertMany([
			{ _id: "u4", email: "d@example.com" },
			{ _id: "u5", email: "e@example.com", rank: 1 },
		]);
		expect(many).toEqual([
			{ _id: "u4", email: "d@example.com" },
			{ _id: "u5", email: "e@example.com", rank: 1 },
		]);
		expect(many.some(doc => doc instanceof mongoose.Document)).toBe(false);
		expect(sent).toEqual([]);
	});

	it("counts each operation in mint_store_operations_total{service,collection,operation}, an insertMany once", async () => {
		const broker = metricsBroker();
		adapter.init(broker, { logger: console, name: "auth" });
		jest.spyOn(mongoose.Model.prototype, "save").mockImplementation(async function (this: mongoose.Document) {
			return this;
		});
		await adapter.findOne({ email: "b@example.com" });
		await adapter.findById("u2");
		await adapter.updateOne({ _id: "u1" }, { $set: { rank: 1 } });
		await adapter.updateOne({ _id: "u1" }, { $set: { rank: 2 } });
		await adapter.insertMany([
			{ _id: "u4", email: "d@example.com" },
			{ _id: "u5", email: "e@example.com" },
		]);
		await adapter.count();
		expect(storeOperations(broker)).toEqual({
			"auth users findOne": 1,
			"auth users findById": 1,
			"auth users updateOne": 2,
			"auth users insertMany": 1,
			"auth users count": 1,
		});
		// Each is one query sent (the two saves of insertMany are caught by the save stub, not here).
		expect(sent.map(s => s.op)).toEqual(["findOne", "findOne", "updateOne", "updateOne", "countDocuments"]);
	});

	it("refuses a search rather than match everything, like the NeDB adapter", async () => {
		await expect(adapter.find({ search: "ada" })).rejects.toThrow("MongooseAdapter does not support search");
	});
});

describe("createAdapter without MONGO_URI", () => {
	it("returns the NeDB adapter persisted at DATA_DIR/<service>/<collection>.db", () => {
		const c = config();
		const filename = (serviceName: string, spec: CollectionSpec) => {
			const adapter = createAdapter(c, serviceName, spec);
			expect(adapter).toBeInstanceOf(NedbAdapter);
			expect(adapter).not.toBeInstanceOf(MongooseAdapter);
			return adapter instanceof NedbAdapter ? adapter.filename : undefined;
		};
		expect(filename("auth", USERS)).toBe(path.join(c.dataDir, "auth", "users.db"));
		expect(fs.statSync(path.join(c.dataDir, "auth")).isDirectory()).toBe(true);
		expect(filename("wallet", { name: "wallets" })).toBe(path.join(c.dataDir, "wallet", "wallets.db"));
	});

	it("refuses a compound index NeDB cannot enforce, at connect", async () => {
		const adapter = createAdapter(config(), "svc", { name: "pairs", indexes: [{ fields: { a: 1, b: 1 }, unique: true }] });
		await expect(adapter.connect()).rejects.toThrow("NeDB supports single-field unique indexes only (pairs)");
	});
});

describe("DbMixin", () => {
	it("switches off every CRUD action moleculer-db would generate", () => {
		const mixin = DbMixin(config(), "auth", USERS);
		expect(mixin.actions).toEqual({ find: false, count: false, list: false, create: false, insert: false, get: false, update: false, remove: false });
		expect(mixin.collection).toBe("users");
		expect(mixin.settings).toEqual({ idField: "_id" });
	});
});

describe("isDuplicateKeyError", () => {
	it.each([
		["NeDB's uniqueViolated", { errorType: "uniqueViolated", key: "a@example.com" }],
		["MongoDB's code 11000", { code: 11000, keyValue: { email: "a@example.com" } }],
		["an Error carrying code 11000", Object.assign(new Error("E11000 duplicate key error"), { code: 11000 })],
	])("recognises %s", (_label, err) => {
		expect(isDuplicateKeyError(err)).toBe(true);
	});

	it.each([
		["null", null],
		["undefined", undefined],
		["an empty object", {}],
		["a plain Error mentioning E11000", new Error("E11000 duplicate key error")],
		["another MongoDB code", { code: 11001 }],
		["the code as a string", { code: "11000" }],
		["another NeDB errorType", { errorType: "indexViolated" }],
		["the errorType in other case", { errorType: "uniqueviolated" }],
		["a string", "uniqueViolated"],
		["a number", 11000],
	])("rejects %s", (_label, err) => {
		expect(isDuplicateKeyError(err)).toBe(false);
	});
});

describe("NeDB store (the embedded backend)", () => {
	it("keeps the store contract: unique index, compare-and-set, queries, persistence, removal", async () => {
		const c = config();
		await storeRoundTrip(spec => createAdapter<ContractDoc>(c, "contract", spec));
		// It really was a file under DATA_DIR, not memory.
		expect(fs.existsSync(path.join(c.dataDir, "contract", `${CONTRACT_SPEC.name}.db`))).toBe(true);
	});
});

describe("the NeDB store's indexes", () => {
	it("drops an index the spec no longer has (an older version's), keeps the others and the documents", async () => {
		const c = config();
		const open = async (spec: CollectionSpec) => {
			const adapter = createAdapter<{ _id: string; status: string; userId: string }>(c, "transactions", spec);
			adapter.init({}, { logger: console });
			await adapter.connect();
			return adapter;
		};
		const older = await open({ name: "tx", indexes: [{ fields: { userId: 1 } }, { fields: { status: 1 } }] });
		await older.insert({ _id: "t1", status: "Completed", userId: "u1" });
		await older.disconnect();
		const file = path.join(c.dataDir, "transactions", "tx.db");
		expect(fs.readFileSync(file, "utf8")).toContain('"$$indexCreated":{"fieldName":"status"');

		const newer = await open({ name: "tx", indexes: [{ fields: { userId: 1 } }] });
		try {
			expect(fs.readFileSync(file, "utf8")).toContain('{"$$indexRemoved":"status"}');
			expect(fs.readFileSync(file, "utf8")).not.toContain('{"$$indexRemoved":"userId"}');
			expect(await newer.find({ query: { status: "Completed" } })).toEqual([{ _id: "t1", status: "Completed", userId: "u1" }]);
		} finally {
			await newer.disconnect();
		}
	});
});

describe("the NeDB store uses NeDB's own promises", () => {
	let warnings: Error[];
	const collect = (warning: Error) => void warnings.push(warning);
	beforeEach(() => {
		warnings = [];
		process.on("warning", collect);
	});
	afterEach(() => {
		process.off("warning", collect);
		jest.restoreAllMocks();
	});

	it("runs every adapter operation without util.promisify and without a DEP0174 warning", async () => {
		const promisify = jest.spyOn(util, "promisify");
		const store = createAdapter<{ _id: string; email: string; rank?: number }>(config(), "quiet", USERS);
		store.init({}, { logger: console });
		await store.connect();
		try {
			expect(await store.insert({ _id: "u1", email: "a@example.com", rank: 3 })).toEqual({ _id: "u1", email: "a@example.com", rank: 3 });
			expect(
				await store.insertMany([
					{ _id: "u2", email: "b@example.com", rank: 1 },
					{ _id: "u3", email: "c@example.com", rank: 2 },
				]),
			).toHaveLength(2);
			expect(isDuplicateKeyError(await store.insert({ _id: "u4", email: "a@example.com" }).catch((err: unknown) => err))).toBe(true);

			expect((await store.find({ sort: ["-rank"], limit: 2, offset: 1 })).map(d => d._id)).toEqual(["u3", "u2"]);
			expect((await store.findOne({ email: "b@example.com" }))?._id).toBe("u2");
			expect(await store.findOne({ email: "nobody@example.com" })).toBeNull();
			expect((await store.findById("u3"))?.rank).toBe(2);
			expect((await store.findByIds(["u1", "u3", "zz"])).map(d => d._id).sort()).toEqual(["u1", "u3"]);
			expect(await store.count()).toBe(3);
			expect(await store.count({ query: { rank: { $gt: 1 } } })).toBe(2);
			expect(await store.count({ limit: 2, offset: 2 })).toBe(1);

			expect(await store.updateMany({ rank: { $gte: 2 } }, { $inc: { rank: 10 } })).toBe(2);
			expect(await store.updateMany({ rank: 3 }, { $set: { rank: 0 } })).toBe(0);
			expect(await store.updateById("u2", { $set: { rank: 7 } })).toEqual({ _id: "u2", email: "b@example.com", rank: 7 });

			expect(await store.removeById("u2")).toBe(1);
			expect(await store.removeMany({ rank: { $gt: 10 } })).toBe(2);
			await store.insert({ _id: "u5", email: "e@example.com" });
			expect(await store.clear()).toBe(1);
			expect(await store.count()).toBe(0);
		} finally {
			await store.disconnect();
		}
		// Node emits the warning on a later tick.
		await new Promise(resolve => setImmediate(resolve));
		expect(promisify).not.toHaveBeenCalled();
		expect(warnings.map(w => (w as NodeJS.ErrnoException).code)).not.toContain("DEP0174");
	});
});

describe("the NeDB store counts its operations", () => {
	it("in mint_store_operations_total{service,collection,operation}, each collection apart, on the broker it is given", async () => {
		const broker = metricsBroker();
		const c = config();
		const users = createAdapter<{ _id: string; email: string; rank?: number }>(c, "auth", USERS);
		const sessions = createAdapter<{ _id: string; userId: string }>(c, "auth", { name: "sessions" });
		// The service itself, as DbMixin passes it: its name labels the counts.
		const service = { logger: console, name: "auth" };
		users.init(broker, service);
		// A second collection of the same service registers nothing anew: the first one's counts stay.
		await users.connect();
		await users.insert({ _id: "u1", email: "a@example.com" });
		sessions.init(broker, service);
		await sessions.connect();
		try {
			await users.insertMany([
				{ _id: "u2", email: "b@example.com" },
				{ _id: "u3", email: "c@example.com" },
			]);
			await users.findOne({ email: "b@example.com" });
			await users.findById("u3");
			await users.updateOne({ _id: "u1" }, { $set: { rank: 1 } });
			await users.updateOne({ _id: "u1", rank: 1 }, { $set: { rank: 2 } });
			await users.updateById("u2", { $set: { rank: 3 } });
			await users.count({ query: { rank: { $gt: 0 } } });
			await sessions.insert({ _id: "s1", userId: "u1" });
			await sessions.find({ query: { userId: "u1" } });
			await sessions.removeMany({ userId: "u1" });
			expect(storeOperations(broker)).toEqual({
				"auth users insert": 1,
				"auth users insertMany": 1,
				"auth users findOne": 1,
				"auth users findById": 1,
				"auth users updateOne": 2,
				"auth users updateById": 1,
				"auth users count": 1,
				"auth sessions insert": 1,
				"auth sessions find": 1,
				"auth sessions removeMany": 1,
			});
		} finally {
			await users.disconnect();
			await sessions.disconnect();
		}
	});

	it("labels with the folder's service when the owner has no name, and counts nothing without a broker", async () => {
		const broker = metricsBroker();
		const c = config();
		const named = createAdapter<{ _id: string }>(c, "wallet", { name: "wallets" });
		named.init(broker, { logger: console });
		const unmetered = createAdapter<{ _id: string }>(c, "wallet", { name: "ledger" });
		unmetered.init(null, { logger: console });
		await named.connect();
		await unmetered.connect();
		try {
			await named.insert({ _id: "w1" });
			await unmetered.insert({ _id: "l1" });
			expect(await unmetered.count()).toBe(1);
			expect(storeOperations(broker)).toEqual({ "wallet wallets insert": 1 });
		} finally {
			await named.disconnect();
			await unmetered.disconnect();
		}
	});
});
