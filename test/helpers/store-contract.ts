/**
 * The store contract: what every Mint service relies on from the adapter
 * createAdapter() hands it, whichever backend it is (NeDB file or MongoDB).
 * One scenario, run by test/unit/db-mixin.test.ts on NeDB and by
 * test/service/mongo.test.ts on a real MongoDB.
 */
import { isDuplicateKeyError, type CollectionSpec, type DbAdapter } from "../../mixins/db.mixin";

/** The collection the scenario uses: a unique index, as on auth's users. */
export const CONTRACT_SPEC: CollectionSpec = { name: "contract", indexes: [{ fields: { email: 1 }, unique: true }] };

/** The documents the scenario stores: users, a wallet, transactions and an outbox row, all in one collection. */
export interface ContractDoc {
	_id: string;
	email?: string;
	state?: string;
	rank?: number;
	revokedAt?: number | null;
	hits?: number;
	balanceMinor?: number;
	version?: number;
	updatedAt?: string;
	status?: string;
	leaseUntil?: number;
	history?: { status: string; at: string }[];
	fromUserId?: string;
	toUserId?: string;
	outbox?: { eventId: string; name: string }[];
	pendingEvents?: number;
	meta?: Record<string, unknown>;
	expiresAt?: number;
}

/** Opens a new adapter on the same storage each time it is called (same file, same database). */
export type OpenAdapter = (spec: CollectionSpec) => DbAdapter<ContractDoc>;

const ids = (docs: ContractDoc[]) => docs.map(d => String(d._id));

/** Runs one step; a failure names the step, so a red run says which promise the backend broke. */
async function step(name: string, body: () => Promise<void>): Promise<void> {
	try {
		await body();
	} catch (err) {
		if (err instanceof Error) err.message = `[store contract: ${name}] ${err.message}`;
		throw err;
	}
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
	try {
		await promise;
	} catch (err) {
		return err;
	}
	throw new Error("expected the operation to be refused, but it succeeded");
}

async function openConnected(open: OpenAdapter): Promise<DbAdapter<ContractDoc>> {
	const adapter = open(CONTRACT_SPEC);
	// As DbMixin does for extra collections: init, then connect.
	adapter.init({}, { logger: console });
	await adapter.connect();
	return adapter;
}

/**
 * insert, unique violation, compare-and-set updateOne (1 then 0, also under
 * a race), matched counts (a no-op counts), MongoDB's null semantics,
 * undefined refused in filters, {} round trip, upserts with $max, find with query/sort/limit/offset, $regex with a RegExp, filters
 * on undeclared fields, count, the ledger's $inc/$set version CAS, the state
 * machine's status CAS with $push, the sweeper's $in/$lt claim, $or queries,
 * persistence across reconnect, removeMany.
 * Expects empty storage.
 */
export async function storeRoundTrip(open: OpenAdapter): Promise<void> {
	let store = await openConnected(open);
	try {
		await step("insert stores documents under the service's string _id", async () => {
			const ada = await store.insert({ _id: "u1", email: "ada@example.com", state: "next", rank: 2, revokedAt: null, hits: 0 });
			await store.insert({ _id: "u2", email: "bob@example.com", state: "next", rank: 1, revokedAt: null, hits: 0 });
			expect(String(ada._id)).toBe("u1");
			expect(await store.count({})).toBe(2);
			const found = await store.findOne({ _id: "u1" });
			expect(found).not.toBeNull();
			expect(found?.email).toBe("ada@example.com");
			expect(found?.revokedAt).toBeNull();
			expect(await store.findOne({ _id: "nope" })).toBeNull();
		});

		await step("a unique index refuses a duplicate and the error is recognised", async () => {
			const err = await rejection(store.insert({ _id: "u3", email: "ada@example.com", state: "next", rank: 3 }));
			expect(isDuplicateKeyError(err)).toBe(true);
			const sameId = await rejection(store.insert({ _id: "u1", email: "other@example.com", state: "next", rank: 4 }));
			expect(isDuplicateKeyError(sameId)).toBe(true);
			expect(await store.count({})).toBe(2);
			expect(await store.findOne({ email: "other@example.com" })).toBeNull();
		});

		await step("updateOne is a compare-and-set: 1 the first time, 0 once the condition no longer holds", async () => {
			expect(await store.updateOne({ _id: "u1", state: "next" }, { $set: { state: "current" } })).toBe(1);
			expect(await store.updateOne({ _id: "u1", state: "next" }, { $set: { state: "current" } })).toBe(0);
			expect((await store.findOne({ _id: "u1" }))?.state).toBe("current");
			// null as "not yet": how sessions and one-time tokens are claimed.
			expect(await store.updateOne({ _id: "u2", revokedAt: null }, { $set: { revokedAt: 1234 } })).toBe(1);
			expect(await store.updateOne({ _id: "u2", revokedAt: null }, { $set: { revokedAt: 5678 } })).toBe(0);
			expect((await store.findOne({ _id: "u2" }))?.revokedAt).toBe(1234);
		});

		await step("racing compare-and-sets let exactly one through", async () => {
			const counts = await Promise.all(Array.from({ length: 5 }, () => store.updateOne({ _id: "u1", hits: 0 }, { $set: { hits: 1 } })));
			expect(counts.reduce((a, b) => a + b, 0)).toBe(1);
			expect((await store.findOne({ _id: "u1" }))?.hits).toBe(1);
		});

		await step("a filter on a field no schema declares matches only the documents that have it", async () => {
			expect(ids(await store.find({ query: { state: "current" } }))).toEqual(["u1"]);
			expect(await store.count({ query: { state: "current" } })).toBe(1);
			expect(await store.count({ query: { state: "retired" } })).toBe(0);
			expect(await store.updateMany({ state: "retired" }, { $set: { rank: 99 } })).toBe(0);
		});

		await step("find sorts, limits and skips", async () => {
			expect(ids(await store.find({ sort: ["rank"] }))).toEqual(["u2", "u1"]);
			expect(ids(await store.find({ sort: ["-rank"], limit: 1 }))).toEqual(["u1"]);
			expect(ids(await store.find({ sort: ["email"], limit: 1, offset: 1 }))).toEqual(["u2"]);
			expect(ids(await store.find({ query: { _id: { $in: ["u2", "zz"] } } }))).toEqual(["u2"]);
			expect(ids(await store.find({ query: { _id: { $ne: "u1" } } }))).toEqual(["u2"]);
		});

		await step("$regex takes a RegExp, flags included", async () => {
			expect(ids(await store.find({ query: { email: { $regex: /^BOB@/i } } }))).toEqual(["u2"]);
			expect(ids(await store.find({ query: { email: { $regex: /^BOB@/ } } }))).toEqual([]);
			expect(await store.count({ query: { email: { $regex: /@example\.com$/ } } })).toBe(2);
			// A regex metacharacter escaped as the services do matches only itself.
			expect(await store.count({ query: { email: { $regex: /a\.a/ } } })).toBe(0);
		});

		await step("the ledger's write: $inc and $set in one compare-and-set on a version", async () => {
			await store.insert({ _id: "w1", email: "wallet@example.com", balanceMinor: 0, version: 0 });
			expect(await store.updateOne({ _id: "w1", version: 0 }, { $inc: { balanceMinor: 250, version: 1 }, $set: { updatedAt: "t1" } })).toBe(1);
			expect(await store.updateOne({ _id: "w1", version: 0 }, { $inc: { balanceMinor: 250, version: 1 }, $set: { updatedAt: "t2" } })).toBe(0);
			const counts = await Promise.all(
				Array.from({ length: 5 }, () => store.updateOne({ _id: "w1", version: 1 }, { $inc: { balanceMinor: -100, version: 1 }, $set: { updatedAt: "t3" } })),
			);
			expect(counts.reduce((a, b) => a + b, 0)).toBe(1);
			const wallet = await store.findOne({ _id: "w1" });
			expect([wallet?.balanceMinor, wallet?.version, wallet?.updatedAt]).toEqual([150, 2, "t3"]);
		});

		await step("the state machine's write: a status compare-and-set that $pushes its history record", async () => {
			await store.insert({ _id: "t1", email: "tx@example.com", status: "Pending", leaseUntil: 100, history: [{ status: "Pending", at: "a" }] });
			const move = (from: string, to: string) =>
				store.updateOne({ _id: "t1", status: from }, { $set: { status: to }, $push: { history: { status: to, at: to } } });
			expect(await move("Pending", "Processing")).toBe(1);
			expect(await move("Pending", "Processing")).toBe(0);
			expect(await move("Processing", "Completed")).toBe(1);
			expect(await move("Processing", "Failed")).toBe(0);
			expect((await store.findOne({ _id: "t1" }))?.history?.map(h => h.status)).toEqual(["Pending", "Processing", "Completed"]);
		});

		await step("the sweeper's claim and the list query: $in with $lt, and $or", async () => {
			await store.insert({ _id: "t2", email: "t2@example.com", status: "Processing", leaseUntil: 100, fromUserId: "a", toUserId: "b" });
			const claim = (now: number) =>
				store.updateOne({ _id: "t2", status: { $in: ["Pending", "Processing"] }, leaseUntil: { $lt: now } }, { $set: { leaseUntil: now + 1000 } });
			expect(await claim(50)).toBe(0); // lease still running
			expect(await claim(200)).toBe(1);
			expect(await claim(300)).toBe(0); // the first claimant now holds it
			expect(ids(await store.find({ query: { $or: [{ fromUserId: "b" }, { toUserId: "b" }] } }))).toEqual(["t2"]);
			expect(await store.count({ query: { $or: [{ fromUserId: "zz" }, { toUserId: "zz" }] } })).toBe(0);
			await store.removeMany({ _id: { $in: ["w1", "t1", "t2"] } });
		});

		await step("the outbox's writes: $push a record, then $pull it by a field with a compare on its presence", async () => {
			await store.insert({ _id: "o1", email: "outbox@example.com", outbox: [], pendingEvents: 0 });
			for (const eventId of ["e1", "e2"]) {
				expect(await store.updateOne({ _id: "o1" }, { $push: { outbox: { eventId, name: "x" } }, $inc: { pendingEvents: 1 } })).toBe(1);
			}
			const take = (eventId: string) =>
				store.updateOne({ _id: "o1", "outbox.eventId": eventId }, { $pull: { outbox: { eventId } }, $inc: { pendingEvents: -1 } });
			expect(await take("e1")).toBe(1);
			expect(await take("e1")).toBe(0);
			expect(ids(await store.find({ query: { pendingEvents: { $gt: 0 } } }))).toEqual(["o1"]);
			const row = await store.findOne({ _id: "o1" });
			expect([row?.outbox?.map(r => r.eventId), row?.pendingEvents]).toEqual([["e2"], 1]);
			await store.removeMany({ _id: "o1" });
		});

		await step("an update answers how many documents matched: a no-op update of a match counts, on both updateOne and updateMany", async () => {
			expect(await store.updateOne({ _id: "u1" }, { $set: { state: "current" } })).toBe(1);
			expect(await store.updateMany({ _id: { $in: ["u1", "u2"] } }, { $set: { rank: 5 } })).toBe(2);
			expect(await store.updateMany({ _id: { $in: ["u1", "u2"] } }, { $set: { rank: 5 } })).toBe(2);
			// updateOne touches one document even when its filter matches several.
			expect(await store.updateOne({ rank: 5 }, { $set: { rank: 6 } })).toBe(1);
			expect(await store.count({ query: { rank: 6 } })).toBe(1);
			await store.updateMany({ _id: "u1" }, { $set: { rank: 2 } });
			await store.updateMany({ _id: "u2" }, { $set: { rank: 1 } });
		});

		await step("null matches a missing field as MongoDB does; $ne null only a present, non-null one", async () => {
			await store.insert({ _id: "n1", email: "n1@example.com" });
			// u1 and u2 have revokedAt (null, 1234); n1 has none.
			expect(ids(await store.find({ query: { revokedAt: null }, sort: ["_id"] }))).toEqual(["n1", "u1"]);
			expect(await store.count({ query: { revokedAt: { $eq: null } } })).toBe(2);
			expect(ids(await store.find({ query: { revokedAt: { $ne: null } } }))).toEqual(["u2"]);
			expect(ids(await store.find({ query: { _id: "n1", revokedAt: null } }))).toEqual(["n1"]);
			expect(ids(await store.find({ query: { $or: [{ _id: "zz" }, { _id: "n1", revokedAt: null }] } }))).toEqual(["n1"]);
			// A compare-and-set on "not yet" works on a document that never had the field.
			expect(await store.updateOne({ _id: "n1", revokedAt: null }, { $set: { revokedAt: 1 } })).toBe(1);
			expect(await store.updateOne({ _id: "n1", revokedAt: null }, { $set: { revokedAt: 2 } })).toBe(0);
			expect(await store.removeMany({ _id: "n1" })).toBe(1);
		});

		await step("undefined in a filter is refused by every operation, and changes nothing", async () => {
			const before = await store.find({ sort: ["_id"] });
			for (const attempt of [
				() => store.find({ query: { _id: undefined } }),
				() => store.findOne({ email: undefined }),
				() => store.count({ query: { $or: [{ _id: "u1" }, { state: undefined }] } }),
				() => store.updateOne({ _id: "u1", state: undefined }, { $set: { rank: 0 } }),
				() => store.updateMany({ rank: { $gt: undefined } }, { $set: { rank: 0 } }),
				() => store.removeMany({ _id: undefined }),
			]) {
				expect(String(await rejection(attempt()))).toMatch(/undefined in a filter/);
			}
			expect(await store.find({ sort: ["_id"] })).toEqual(before);
		});

		await step("an empty object is stored and read back as {}", async () => {
			await store.insert({ _id: "e1", email: "e1@example.com", meta: {} });
			expect((await store.findOne({ _id: "e1" }))?.meta).toEqual({});
			await store.updateOne({ _id: "e1" }, { $set: { meta: { nested: {} } } });
			expect((await store.findOne({ _id: "e1" }))?.meta).toEqual({ nested: {} });
			await store.removeMany({ _id: "e1" });
		});

		await step("an upsert inserts once, then updates; racing upserts of one _id leave one document with the largest value", async () => {
			// (Every document needs its own email here: the collection's unique index counts a missing one as a value.)
			const revoke = (_id: string, expiresAt: number) =>
				store.updateOne({ _id }, { $max: { expiresAt }, $set: { email: `${_id}@example.com` } }, { upsert: true });
			expect(await revoke("r1", 10)).toBe(1);
			expect(await revoke("r1", 5)).toBe(1);
			expect((await store.findOne({ _id: "r1" }))?.expiresAt).toBe(10);
			expect(await Promise.all([30, 20, 40, 25].map(expiresAt => revoke("r2", expiresAt)))).toEqual([1, 1, 1, 1]);
			expect(await store.find({ query: { _id: "r2" } })).toEqual([{ _id: "r2", email: "r2@example.com", expiresAt: 40 }]);
			expect(await store.removeMany({ _id: { $in: ["r1", "r2"] } })).toBe(2);
		});

		await step("data survives a disconnect and a new adapter on the same storage", async () => {
			await store.disconnect();
			store = await openConnected(open);
			expect(await store.count({})).toBe(2);
			const ada = await store.findOne({ _id: "u1" });
			expect(ada?.state).toBe("current");
			expect(ada?.hits).toBe(1);
			expect((await store.findOne({ _id: "u2" }))?.revokedAt).toBe(1234);
			// The unique index is back too.
			const err = await rejection(store.insert({ _id: "u5", email: "bob@example.com" }));
			expect(isDuplicateKeyError(err)).toBe(true);
		});

		await step("removeMany removes what matches and reports how many", async () => {
			expect(await store.removeMany({ _id: "u2" })).toBe(1);
			expect(await store.removeMany({ _id: "u2" })).toBe(0);
			expect(ids(await store.find({}))).toEqual(["u1"]);
			// The freed unique value can be used again.
			await store.insert({ _id: "u6", email: "bob@example.com" });
			expect(await store.removeMany({ email: { $regex: /@example\.com$/ } })).toBe(2);
			expect(await store.count({})).toBe(0);
		});
	} finally {
		await store.disconnect();
	}
}
