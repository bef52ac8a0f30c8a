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
import mongoose from "mongoose";
import { createAdapter, DbMixin, isDuplicateKeyError } from "../../mixins/db.mixin";
import { testConfig } from "../helpers/mint";
import { CONTRACT_SPEC, storeRoundTrip } from "../helpers/store-contract";

const { MemoryAdapter } = require("moleculer-db");
const MongooseAdapter = require("moleculer-db-adapter-mongoose");

const MONGO_URI = "mongodb://127.0.0.1:27017";
const USERS = { name: "users", indexes: [{ fields: { email: 1 as const }, unique: true }] };

const dataDirs: string[] = [];
function config(env: Record<string, string> = {}) {
	const c = testConfig(env);
	dataDirs.push(c.dataDir);
	return c;
}
afterAll(() => {
	for (const dir of dataDirs) fs.rmSync(dir, { recursive: true, force: true });
});

describe("createAdapter with MONGO_URI (nothing connects)", () => {
	const mongo = () => createAdapter(config({ MONGO_URI }), "auth", USERS);

	it("builds a moleculer-db Mongoose adapter for the configured URI", () => {
		const adapter = mongo();
		expect(adapter).toBeInstanceOf(MongooseAdapter);
		expect(adapter).not.toBeInstanceOf(MemoryAdapter);
		expect(adapter.uri).toBe(MONGO_URI);
		expect(adapter.modelName).toBe("users");
	});

	it("gives every service its own database, mint-<service>", () => {
		const auth = mongo();
		expect(auth.dbName).toBe("mint-auth");
		expect(auth.opts).toEqual({ dbName: "mint-auth" });
		expect(createAdapter(config({ MONGO_URI }), "wallet", { name: "wallets" }).dbName).toBe("mint-wallet");
	});

	it("declares the collection's indexes on the mongoose schema (unique email)", () => {
		const { schema } = mongo();
		expect(schema).toBeInstanceOf(mongoose.Schema);
		expect(schema.options.collection).toBe("users");
		expect(schema.indexes()).toEqual([[{ email: 1 }, expect.objectContaining({ unique: true })]]);
		const sparse = createAdapter(config({ MONGO_URI }), "auth", { name: "sessions", indexes: [{ fields: { familyId: 1 }, sparse: true }, { fields: { userId: -1 } }] });
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

	it("overrides the global strictQuery the adapter sets, so a filter on an undeclared field is not stripped to {}", () => {
		const { schema } = mongo();
		// moleculer-db-adapter-mongoose sets strictQuery globally on load.
		expect(mongoose.get("strictQuery")).toBe(true);
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
	});
});

describe("createAdapter without MONGO_URI", () => {
	it("returns moleculer-db's NeDB MemoryAdapter persisted at DATA_DIR/<service>/<collection>.db", () => {
		const c = config();
		const adapter = createAdapter(c, "auth", USERS);
		expect(adapter).toBeInstanceOf(MemoryAdapter);
		expect(adapter).not.toBeInstanceOf(MongooseAdapter);
		expect(adapter.opts.filename).toBe(path.join(c.dataDir, "auth", "users.db"));
		expect(fs.statSync(path.join(c.dataDir, "auth")).isDirectory()).toBe(true);
		expect(createAdapter(c, "wallet", { name: "wallets" }).opts.filename).toBe(path.join(c.dataDir, "wallet", "wallets.db"));
	});

	it("refuses a compound index NeDB cannot enforce, at connect", async () => {
		const adapter = createAdapter(config(), "svc", { name: "pairs", indexes: [{ fields: { a: 1, b: 1 }, unique: true }] });
		await expect(adapter.connect()).rejects.toThrow("NeDB supports single-field indexes only (pairs)");
	});
});

describe("DbMixin", () => {
	it("switches off every CRUD action moleculer-db would generate", () => {
		const mixin = DbMixin(config(), "auth", USERS) as any;
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
		await storeRoundTrip(spec => createAdapter(c, "contract", spec));
		// It really was a file under DATA_DIR, not memory.
		expect(fs.existsSync(path.join(c.dataDir, "contract", `${CONTRACT_SPEC.name}.db`))).toBe(true);
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
		const store = createAdapter(config(), "quiet", USERS);
		store.init({}, { logger: console, schema: {}, settings: {} });
		await store.connect();
		try {
			expect(await store.insert({ _id: "u1", email: "a@example.com", rank: 3 })).toEqual({ _id: "u1", email: "a@example.com", rank: 3 });
			expect(await store.insertMany([{ _id: "u2", email: "b@example.com", rank: 1 }, { _id: "u3", email: "c@example.com", rank: 2 }])).toHaveLength(2);
			expect(isDuplicateKeyError(await store.insert({ _id: "u4", email: "a@example.com" }).catch((err: unknown) => err))).toBe(true);

			expect((await store.find({ sort: ["-rank"], limit: 2, offset: 1 })).map((d: any) => d._id)).toEqual(["u3", "u2"]);
			expect((await store.findOne({ email: "b@example.com" }))._id).toBe("u2");
			expect(await store.findOne({ email: "nobody@example.com" })).toBeNull();
			expect((await store.findById("u3")).rank).toBe(2);
			expect((await store.findByIds(["u1", "u3", "zz"])).map((d: any) => d._id).sort()).toEqual(["u1", "u3"]);
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

describe("the Mongoose adapter returns plain objects, as NeDB does", () => {
	it("reads with lean() and answers inserts with a plain object", async () => {
		const adapter = createAdapter(config({ MONGO_URI }), "auth", USERS);
		const calls: string[] = [];
		const query = (result: unknown) => ({ lean: () => (calls.push("lean"), { exec: async () => result }) });
		adapter.model = Object.assign(
			function (this: any, entity: object) {
				this.save = async () => ({ toObject: () => ({ ...entity, plain: true }) });
			},
			{ findOne: () => query({ _id: "u1" }), findById: () => query({ _id: "u2" }) },
		);
		expect(await adapter.findOne({ _id: "u1" })).toEqual({ _id: "u1" });
		expect(await adapter.findById("u2")).toEqual({ _id: "u2" });
		expect(calls).toEqual(["lean", "lean"]);
		expect(await adapter.insert({ _id: "u3", email: "x@example.com" })).toEqual({ _id: "u3", email: "x@example.com", plain: true });
	});
});
