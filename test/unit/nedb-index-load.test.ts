/**
 * NeDB's indexes filled in bulk (mixins/db/nedb-index-load.ts): for random
 * documents (string, number, boolean, null, missing and array keys, and keys
 * it leaves to NeDB: dates, NaN, -0, objects) under unique, sparse and plain
 * indexes, the tree built holds what NeDB's own insertions hold (the same
 * keys in the same order, each with the same documents in the same order),
 * is a valid AVL tree, refuses what NeDB refuses, and stays equal to NeDB's
 * through later inserts and removals. And a datastore loads through it.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import Nedb from "@seald-io/nedb";
import fc from "fast-check";
import { buildIndexTree, bulkIndexLoads, nedbInsertMultipleDocs } from "../../mixins/db/nedb-index-load";

type Tree = { key?: unknown; data: object[]; left: Tree | null; right: Tree | null; parent: Tree | null; checkIsAVLT(): void };
interface TestIndex {
	tree: { tree: Tree; insert(key: unknown, doc: object): void };
	insert(doc: object | object[]): void;
	remove(doc: object): void;
	insertMultipleDocs(docs: object[]): void;
	getMatching(value: unknown): object[];
}
const Index: new (options: { fieldName: string; unique?: boolean; sparse?: boolean }) => TestIndex = require("@seald-io/nedb/lib/indexes");

interface Doc {
	_id: string;
	k?: unknown;
	n?: number;
}

/** An index's contents: each key (tagged with its type, in the tree's order) with its documents' ids in order; and every parent link checked. */
function contentsOf(index: TestIndex): string[] {
	const out: string[] = [];
	const walk = (node: Tree | null, parent: Tree | null) => {
		if (!node || !Object.hasOwn(node, "key")) return;
		if (node.parent !== parent) throw new Error("a node's parent link is wrong");
		walk(node.left, node);
		out.push(`${typeof node.key}:${String(node.key)} ${node.data.map(d => (d as Doc)._id).join(",")}`);
		walk(node.right, node);
	};
	walk(index.tree.tree, null);
	index.tree.tree.checkIsAVLT();
	return out;
}

const key = fc.oneof(
	{ weight: 4, arbitrary: fc.constantFrom("a", "b", "c", "d", "A", "", "10", "9") },
	{ weight: 3, arbitrary: fc.integer({ min: -3, max: 3 }) },
	{ weight: 1, arbitrary: fc.constantFrom(true, false, null, undefined, 1.5, Infinity) },
);
const oddKey = fc.constantFrom(new Date(5), Number.NaN, -0, { x: 1 }, [1]);
const fieldValue = fc.oneof(
	{ weight: 6, arbitrary: key },
	{ weight: 3, arbitrary: fc.array(key, { maxLength: 4 }) },
	{ weight: 1, arbitrary: oddKey },
	{ weight: 1, arbitrary: fc.array(fc.oneof(key, oddKey), { maxLength: 3 }) },
);
const documents = fc
	.array(
		fc.record({ k: fieldValue, present: fc.boolean() }).map(({ k, present }) => (present ? { k } : {})),
		{ minLength: 0, maxLength: 200 },
	)
	.map(list => list.map((doc, i) => ({ _id: `d${i}`, ...doc }) as Doc));
const options = fc.record({ unique: fc.boolean(), sparse: fc.boolean() });

/** NeDB's own insertions into an empty index, or the error they end with (the index then empty). */
function nedbBuilt(opts: { unique: boolean; sparse: boolean }, docs: object[], fieldName = "k") {
	const index = new Index({ fieldName, ...opts });
	try {
		nedbInsertMultipleDocs.call(index, docs);
		return { index, error: undefined };
	} catch (err) {
		return { index, error: (err as Error).message };
	}
}

describe("NeDB indexes filled in bulk", () => {
	bulkIndexLoads();

	it("builds what NeDB's insertions build, or leaves the documents to them", () => {
		let built = 0;
		fc.assert(
			fc.property(options, documents, (opts, docs) => {
				const expected = nedbBuilt(opts, docs);
				const index = new Index({ fieldName: "k", ...opts });
				const tree = buildIndexTree(index as never, docs);
				if (tree) {
					built++;
					expect(expected.error).toBeUndefined();
					index.tree.tree = tree as Tree;
					expect(contentsOf(index)).toEqual(contentsOf(expected.index));
				}
				// Through the installed path, whichever way it goes: NeDB's answer, its error, an empty index after one.
				const installed = new Index({ fieldName: "k", ...opts });
				let error: string | undefined;
				try {
					installed.insertMultipleDocs(docs);
				} catch (err) {
					error = (err as Error).message;
				}
				expect(error).toBe(expected.error);
				expect(contentsOf(installed)).toEqual(contentsOf(expected.index));
			}),
			{ numRuns: 400 },
		);
		// Most runs take the bulk build: the property is about it.
		expect(built).toBeGreaterThan(100);
	});

	it("stays equal to NeDB's through later inserts and removals", () => {
		// Not NaN: NeDB's order has no place for it (equal to anything), so where NeDB puts one depends on the tree's shape.
		const noNaN = fieldValue.filter(k => !Number.isNaN(k) && !(Array.isArray(k) && k.some(e => Number.isNaN(e))));
		const change = fc.record({ remove: fc.boolean(), at: fc.nat(), k: noNaN });
		fc.assert(
			fc.property(fc.boolean(), documents, fc.array(change, { maxLength: 60 }), (sparse, docs, changes) => {
				const expected = nedbBuilt({ unique: false, sparse }, docs).index;
				const index = new Index({ fieldName: "k", unique: false, sparse });
				const tree = buildIndexTree(index as never, docs);
				fc.pre(tree !== undefined);
				index.tree.tree = tree as Tree;
				const live = [...docs];
				let next = docs.length;
				for (const { remove, at, k } of changes) {
					if (remove && live.length > 0) {
						const [doc] = live.splice(at % live.length, 1);
						expected.remove(doc);
						index.remove(doc);
					} else {
						const doc = { _id: `n${next++}`, k };
						live.push(doc);
						expected.insert(doc);
						index.insert(doc);
					}
				}
				expect(contentsOf(index)).toEqual(contentsOf(expected));
				for (const value of ["a", 1, null, true]) expect(index.getMatching(value)).toEqual(expected.getMatching(value));
			}),
			{ numRuns: 200 },
		);
	});

	it("is what a datastore loads its indexes with", async () => {
		const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mint-nedb-index-load-"));
		try {
			const filename = path.join(dir, "docs.db");
			const lines = Array.from({ length: 500 }, (_, i) => JSON.stringify({ _id: `t${i}`, parties: [`u${i % 7}`, `u${(i + 1) % 7}`], n: i }));
			lines.push('{"$$indexCreated":{"fieldName":"parties","unique":false,"sparse":false}}');
			lines.push('{"$$indexCreated":{"fieldName":"n","unique":true,"sparse":false}}');
			fs.writeFileSync(filename, `${lines.join("\n")}\n`);
			const db = new Nedb<{ _id: string; parties: string[]; n: number }>({ filename });
			await db.loadDatabaseAsync();
			const indexes = (db as unknown as { indexes: Record<string, TestIndex> }).indexes;
			// Built in bulk: the median at the root, where NeDB's insertions of the same documents leave another key.
			const docs = lines.slice(0, 500).map(line => JSON.parse(line));
			expect(indexes.n.tree.tree.key).toBe(249);
			expect(nedbBuilt({ unique: true, sparse: false }, docs, "n").index.tree.tree.key).not.toBe(249);
			expect((await db.findAsync({ parties: "u3" })).map(d => d._id).sort()).toEqual(
				Array.from({ length: 500 }, (_, i) => i)
					.filter(i => i % 7 === 3 || (i + 1) % 7 === 3)
					.map(i => `t${i}`)
					.sort(),
			);
			await expect(db.insertAsync({ _id: "dup", parties: [], n: 42 })).rejects.toThrow(/unique constraint/);
			const withU3 = docs.filter(doc => doc.parties.includes("u3")).length;
			await db.insertAsync({ _id: "t500", parties: ["u3"], n: 500 });
			expect(await db.countAsync({ parties: "u3" })).toBe(withU3 + 1);
			// Two documents under one key of a unique index: the load refuses as NeDB does.
			fs.appendFileSync(filename, '{"_id":"x","parties":[],"n":7}\n');
			const refused = new Nedb({ filename });
			await expect(refused.loadDatabaseAsync()).rejects.toThrow(/unique constraint/);
		} finally {
			fs.rmSync(dir, { recursive: true, force: true });
		}
	});
});
