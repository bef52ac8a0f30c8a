/**
 * A MongoDB for the tests that need one, when this machine has one:
 * - MONGO_URI set: that server; each test works in databases of its own
 *   namespace (`<namespace>-<service>`) and drops them after;
 * - MONGOMS_SYSTEM_BINARY set: a three-member replica set started by
 *   mongodb-memory-server-core on that mongod binary (it downloads nothing);
 * - neither: the tests are skipped with the reason printed (describeWithInfra).
 */
import crypto from "node:crypto";
import { MongoMemoryReplSet } from "mongodb-memory-server-core";
import mongoose from "mongoose";

const MONGO_URI = process.env.MONGO_URI?.trim() || undefined;
const SYSTEM_BINARY = process.env.MONGOMS_SYSTEM_BINARY?.trim() || undefined;

/** What describeWithInfra needs: never required by REQUIRE_INFRA (no mongod can run where CI runs). */
export const MONGO_NEED = {
	name: "MongoDB (set MONGO_URI to a replica set, or MONGOMS_SYSTEM_BINARY to a mongod binary)",
	available: !!(MONGO_URI || SYSTEM_BINARY),
	required: false,
};

export interface TestMongo {
	uri: string;
	/** Whether the server is a replica set (a step-down needs one). */
	replicaSet: boolean;
	/** A namespace of its own: Mint's databases in it are `<namespace>-<service>`. */
	namespace(): string;
	/** Asks the primary to step down (an election follows); resolves once a primary answers again. */
	stepDown(): Promise<void>;
	/** Drops every database of the namespaces handed out, and stops a server this helper started. */
	stop(): Promise<void>;
}

export async function startMongo(): Promise<TestMongo> {
	let replSet: MongoMemoryReplSet | undefined;
	let uri = MONGO_URI;
	if (!uri) {
		replSet = await MongoMemoryReplSet.create({ replSet: { count: 3 }, binary: { systemBinary: SYSTEM_BINARY } });
		await replSet.waitUntilRunning();
		uri = replSet.getUri();
	}
	const admin = await mongoose.createConnection(uri, { serverSelectionTimeoutMS: 30_000 }).asPromise();
	const hello = (await admin.db?.admin().command({ hello: 1 })) as { setName?: string } | undefined;
	const namespaces: string[] = [];
	return {
		uri,
		replicaSet: !!hello?.setName,
		namespace() {
			const ns = `mtest${crypto.randomUUID().slice(0, 8)}`;
			namespaces.push(ns);
			return ns;
		},
		async stepDown() {
			// The primary closes its connections as it steps down: the command's own answer may be lost.
			await admin.db
				?.admin()
				.command({ replSetStepDown: 10, secondaryCatchUpPeriodSecs: 5 })
				.catch(() => undefined);
			await admin.db?.admin().command({ ping: 1 });
		},
		async stop() {
			const { databases } = (await admin.db?.admin().listDatabases()) ?? { databases: [] };
			for (const { name } of databases) {
				if (namespaces.some(ns => name.startsWith(`${ns}-`))) await admin.useDb(name).dropDatabase();
			}
			await admin.close();
			await replSet?.stop();
		},
	};
}
