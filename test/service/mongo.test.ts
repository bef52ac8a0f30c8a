/**
 * The store contract (test/helpers/store-contract.ts) against a real MongoDB
 * through createAdapter(), the same scenario the NeDB backend passes in
 * test/unit/db-mixin.test.ts.
 *
 * - MONGO_URI set: that server (a throw-away database mint-contract-<pid>-<time>).
 * - MONGOMS_SYSTEM_BINARY set: mongodb-memory-server-core (a dev dependency:
 *   the core package downloads nothing at install) started on that mongod binary.
 * - neither: skipped with the reason printed (also under REQUIRE_INFRA=1).
 */
import os from "node:os";
import { MongoMemoryServer } from "mongodb-memory-server-core";
import { createAdapter } from "../../mixins/db.mixin";
import { MongooseAdapter } from "../../mixins/db/mongo-adapter";
import { describeWithInfra } from "../helpers/infra";
import { testConfig } from "../helpers/mint";
import { CONTRACT_SPEC, storeRoundTrip, type ContractDoc } from "../helpers/store-contract";

const MONGO_URI = process.env.MONGO_URI?.trim() || undefined;
const SYSTEM_BINARY = process.env.MONGOMS_SYSTEM_BINARY?.trim() || undefined;
describeWithInfra(
	"MongoDB store (createAdapter with MONGO_URI)",
	{ name: "MongoDB (set MONGO_URI or MONGOMS_SYSTEM_BINARY)", available: !!(MONGO_URI || SYSTEM_BINARY), required: false },
	() => {
		// A database of its own, so a shared server's data is never touched.
		const serviceName = `contract-${process.pid}-${Date.now()}`;
		let uri: string;
		let memoryServer: MongoMemoryServer | undefined;

		const open = (spec: typeof CONTRACT_SPEC) => createAdapter<ContractDoc>(testConfig({ MONGO_URI: uri, DATA_DIR: os.tmpdir() }), serviceName, spec);
		/** The same, as the Mongoose adapter it must be (connection, database and model are its own). */
		const openMongoose = (spec: typeof CONTRACT_SPEC) => {
			const adapter = open(spec);
			if (!(adapter instanceof MongooseAdapter)) throw new Error("createAdapter with MONGO_URI did not build a MongooseAdapter");
			return adapter;
		};

		beforeAll(async () => {
			if (MONGO_URI) {
				uri = MONGO_URI;
				return;
			}
			memoryServer = await MongoMemoryServer.create({ binary: { systemBinary: SYSTEM_BINARY } });
			uri = memoryServer.getUri();
		}, 60_000);

		afterAll(async () => {
			if (uri) {
				const adapter = openMongoose(CONTRACT_SPEC);
				try {
					await adapter.connect();
					await adapter.conn.dropDatabase();
				} finally {
					await adapter.disconnect();
				}
			}
			await memoryServer?.stop();
		}, 60_000);

		it("keeps the store contract: unique index, compare-and-set, queries, $regex, persistence, removal", async () => {
			await storeRoundTrip(open);
		});

		it("opens one connection per service database: its collections share it, and it closes with the last", async () => {
			const first = openMongoose(CONTRACT_SPEC);
			const second = openMongoose({ name: "contract-other" });
			await first.connect();
			await second.connect();
			const conn = first.conn;
			try {
				expect(second.conn).toBe(conn);
				await first.disconnect();
				// Still open for the other collection.
				expect(await second.count({})).toBe(0);
				expect(conn.readyState).toBe(1);
			} finally {
				await first.disconnect();
				await second.disconnect();
			}
			expect(conn.readyState).toBe(0);
		});

		it("connects to the service's own database, mint-<service>", async () => {
			const adapter = openMongoose(CONTRACT_SPEC);
			try {
				await adapter.connect();
				expect(adapter.db?.databaseName).toBe(`mint-${serviceName}`);
				const indexes = await adapter.model.collection.indexes();
				expect(indexes).toEqual(expect.arrayContaining([expect.objectContaining({ key: { email: 1 }, unique: true })]));
			} finally {
				await adapter.disconnect();
			}
		});
	},
);
