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
import { describeWithInfra } from "../helpers/infra";
import { testConfig } from "../helpers/mint";
import { CONTRACT_SPEC, storeRoundTrip } from "../helpers/store-contract";

const MONGO_URI = process.env.MONGO_URI?.trim() || undefined;
const SYSTEM_BINARY = process.env.MONGOMS_SYSTEM_BINARY?.trim() || undefined;
describeWithInfra(
	"MongoDB store (createAdapter with MONGO_URI)",
	{ name: "MongoDB (set MONGO_URI or MONGOMS_SYSTEM_BINARY)", available: !!(MONGO_URI || SYSTEM_BINARY), required: false },
	() => {
		// A database of its own, so a shared server's data is never touched.
		const serviceName = `contract-${process.pid}-${Date.now()}`;
		let uri: string;
		let memoryServer: any;

		const open = (spec: typeof CONTRACT_SPEC) => createAdapter(testConfig({ MONGO_URI: uri, DATA_DIR: os.tmpdir() }), serviceName, spec);

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
				const adapter = open(CONTRACT_SPEC);
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

		it("connects to the service's own database, mint-<service>", async () => {
			const adapter = open(CONTRACT_SPEC);
			try {
				await adapter.connect();
				expect(adapter.db.databaseName).toBe(`mint-${serviceName}`);
				const indexes = await adapter.model.collection.indexes();
				expect(indexes).toEqual(expect.arrayContaining([expect.objectContaining({ key: { email: 1 }, unique: true })]));
			} finally {
				await adapter.disconnect();
			}
		});
	},
);
