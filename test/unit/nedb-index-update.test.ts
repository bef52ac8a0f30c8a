/**
 * NeDB's indexes with updates in place (mixins/db/nedb-index-update.ts): after
 * any sequence of inserts, updates (keys kept, changed, added, removed; one
 * document or many; refused by a unique index) and removals, every index
 * holds exactly what NeDB's own indexing of the same documents holds, and an
 * update that keeps a key leaves that key's array of documents where it was.
 */
import Nedb from "@seald-io/nedb";
import fc from "fast-check";
import { indexUpdatesInPlace } from "../../mixins/db/nedb-index-update";

interface Doc {
	_id: string;
	n: number;
	tags?: unknown;
	owner?: string;
	slot?: number;
}

const INDEXES = [
	{ fieldName: "owner", unique: false, sparse: false },
	{ fieldName: "tags", unique: false, sparse: false },
	{ fieldName: "slot", unique: true, sparse: true },
	{ fieldName: "n", unique: false, sparse: true },
];

async function datastore(inPlace: boolean): Promise<Nedb<Doc>> {
	const db = new Nedb<Doc>({ inMemoryOnly: true });
	for (const index of INDEXES) await db.ensureIndexAsync(index);
	if (inPlace) indexUpdatesInPlace(db);
	return db;
}

type Tree = { key?: unknown; data: { _id: string }[]; left: Tree | null; right: Tree | null };
type Indexes = Record<string, { tree: { tree: Tree } }>;

/** An index's contents: each key (as JSON, in the tree's order) with the ids it holds, sorted. */
function contentsOf(db: Nedb<Doc>, field: string): [string, string[]][] {
	const out: [string, string[]][] = [];
	const walk = (node: Tree | null) => {
		if (!node || !Object.hasOwn(node, "key")) return;
		walk(node.left);
		out.push([JSON.stringify(node.key) ?? "undefined", node.data.map(d => d._id).sort()]);
		walk(node.right);
	};
	walk((db as unknown as { indexes: Indexes }).indexes[field].tree.tree);
	return out;
}

/** Every index, and that each document an index holds is the datastore's current one (not a stale copy). */
function snapshot(db: Nedb<Doc>) {
	const indexes = (db as unknown as { indexes: Indexes }).indexes;
	const current = new Map<string, unknown>();
	const stale: string[] = [];
	const byId = indexes._id;
	const collect = (node: Tree | null) => {
		if (!node || !Object.hasOwn(node, "key")) return;
		collect(node.left);
		for (const doc of node.data) current.set(doc._id, doc);
		collect(node.right);
	};
	collect(byId.tree.tree);
	for (const field of Object.keys(indexes)) {
		const visit = (node: Tree | null) => {
			if (!node || !Object.hasOwn(node, "key")) return;
			visit(node.left);
			for (const doc of node.data) if (current.get(doc._id) !== doc) stale.push(`${field}:${doc._id}`);
			visit(node.right);
		};
		visit(indexes[field].tree.tree);
	}
	return { indexes: Object.fromEntries(Object.keys(indexes).map(field => [field, contentsOf(db, field)])), stale };
}

const ids = ["a", "b", "c", "d", "e"];
const tagValue = fc.oneof(fc.constantFrom("x", "y", "1"), fc.constantFrom(1, 2), fc.constant(null), fc.boolean());
const fields = fc.record(
	{
		tags: fc.oneof(fc.array(tagValue, { maxLength: 3 }), fc.constant([{ o: 1 }]), fc.constant("x")),
		owner: fc.constantFrom("u1", "u2", "u3"),
		slot: fc.integer({ min: 1, max: 4 }),
	},
	{ requiredKeys: [] },
);
const operation = fc.oneof(
	fc.record({ op: fc.constant("insert" as const), id: fc.constantFrom(...ids), fields }),
	fc.record({ op: fc.constant("inc" as const), id: fc.constantFrom(...ids, "all") }),
	fc.record({ op: fc.constant("set" as const), id: fc.constantFrom(...ids, "all"), fields }),
	fc.record({ op: fc.constant("unset" as const), id: fc.constantFrom(...ids), field: fc.constantFrom("tags", "owner", "slot", "n") }),
	fc.record({ op: fc.constant("remove" as const), id: fc.constantFrom(...ids) }),
);
type Operation = typeof operation extends fc.Arbitrary<infer O> ? O : never;

async function apply(db: Nedb<Doc>, o: Operation): Promise<string> {
	// (Tags of any shape: NeDB indexes a string, an array of values or of objects alike.)
	const query = "id" in o && o.id !== "all" ? { _id: o.id } : {};
	const multi = "id" in o && o.id === "all";
	try {
		if (o.op === "insert") await db.insertAsync({ _id: o.id, n: 0, ...o.fields } as Doc);
		else if (o.op === "inc") await db.updateAsync(query, { $inc: { n: 1 } }, { multi });
		else if (o.op === "set") await db.updateAsync(query, { $set: o.fields }, { multi });
		else if (o.op === "unset") await db.updateAsync(query, { $unset: { [o.field]: true } });
		else await db.removeAsync(query, {});
		return "ok";
	} catch (err) {
		return (err as { errorType?: string }).errorType ?? (err as Error).message;
	}
}

describe("NeDB indexes updated in place", () => {
	it("hold what NeDB's own indexing holds, after any inserts, updates (one or many, refused or not) and removals", async () => {
		await fc.assert(
			fc.asyncProperty(fc.array(operation, { maxLength: 40 }), async operations => {
				const patched = await datastore(true);
				const plain = await datastore(false);
				for (const o of operations) {
					expect(await apply(patched, o)).toBe(await apply(plain, o));
					const [mine, nedbs] = [snapshot(patched), snapshot(plain)];
					expect(mine.stale).toEqual([]);
					expect(mine.indexes).toEqual(nedbs.indexes);
				}
				expect(await patched.findAsync({}).sort({ _id: 1 })).toEqual(await plain.findAsync({}).sort({ _id: 1 }));
			}),
			{ numRuns: 300 },
		);
	});

	it("keep a shared key's array of documents in place when an update keeps the key, and find the new document through it", async () => {
		const db = await datastore(true);
		for (const id of ids) await db.insertAsync({ _id: id, n: 0, owner: "u1", tags: ["x", "y"] });
		const keyArrays = () => {
			const indexes = (db as unknown as { indexes: Indexes }).indexes;
			const root = indexes.owner.tree.tree;
			return [root.data, indexes.tags.tree.tree.data];
		};
		const before = keyArrays();
		await db.updateAsync({ _id: "c" }, { $inc: { n: 5 } });
		expect(keyArrays()[0]).toBe(before[0]);
		expect(keyArrays()[1]).toBe(before[1]);
		expect((await db.findAsync({ owner: "u1", n: 5 })).map(d => d._id)).toEqual(["c"]);
		expect((await db.findAsync({ tags: "y", n: 5 })).map(d => d._id)).toEqual(["c"]);
		// A key that changes takes NeDB's way: the document leaves the old key's array.
		await db.updateAsync({ _id: "c" }, { $set: { owner: "u2" } });
		expect((await db.findAsync({ owner: "u1" })).map(d => d._id).sort()).toEqual(["a", "b", "d", "e"]);
		expect((await db.findAsync({ owner: "u2" })).map(d => d._id)).toEqual(["c"]);
	});
});
