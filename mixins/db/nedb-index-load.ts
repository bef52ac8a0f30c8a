/**
 * NeDB builds each index of a collection it loads by inserting the
 * documents into the index's AVL tree one at a time: a walk from the root,
 * a new node, a rebalancing on the way back, for every document under every
 * index. Starting a node on a world of 300,000 transactions, that was a
 * third of the start's CPU (a profile, 2026-12-02), after the JSON lines.
 *
 * `bulkIndexLoads()` gives NeDB's indexes another way to fill an *empty*
 * index with many documents at once (the load; an index created on a
 * collection that has documents): each document's keys are read as NeDB's
 * insert reads them (the field's value; each distinct element of an array;
 * nothing for a missing field of a sparse index), sorted once with NeDB's
 * own order (a stable sort: documents sharing a key keep the order NeDB
 * would have pushed them in), and the tree is built balanced from the
 * sorted keys, each node holding its key's documents. The keys it takes
 * are strings, numbers (not NaN, not -0), booleans, null and undefined,
 * where NeDB's order is plain; anything else (a date, an object, an array
 * within the array), a key shared by two documents in a unique index (NeDB
 * refuses it, and says so), an index that is not empty, or a handful of
 * documents takes NeDB's own insertions.
 *
 * Relies on NeDB 3's index internals (`Index` in lib/indexes.js, the AVL
 * tree's nodes of @seald-io/binary-search-tree: `key`, `data`, `left`,
 * `right`, `parent`, `height`): the versions are pinned by package-lock.json,
 * and test/unit/nedb-index-load.test.ts checks each built tree against the
 * one NeDB's insertions build (the same keys in the same order, each with
 * the same documents in the same order, a valid AVL tree), and that later
 * inserts and removals keep it so.
 */
import { compareThings, getDotValue } from "@seald-io/nedb/lib/model.js";

/** A node of NeDB's AVL tree (@seald-io/binary-search-tree's _AVLTree). */
interface TreeNode {
	key?: unknown;
	data: unknown[];
	left: TreeNode | null;
	right: TreeNode | null;
	parent: TreeNode | null;
	height?: number;
}

/** NeDB's Index (lib/indexes.js), as much of it as this uses. */
interface NedbIndex {
	fieldName: string;
	unique: boolean;
	sparse: boolean;
	treeOptions: object;
	tree: { tree: TreeNode };
	insertMultipleDocs(docs: object[]): void;
}

const Index: { prototype: NedbIndex } = require("@seald-io/nedb/lib/indexes");
/** NeDB's own: one insertion after another, undone on a refusal. */
export const nedbInsertMultipleDocs = Index.prototype.insertMultipleDocs;

/** Below this many documents NeDB's insertions are as quick. */
const MIN_DOCUMENTS = 64;

/** Gives NeDB's indexes the bulk build for an empty index (once per process; every datastore shares the class). */
export function bulkIndexLoads(): void {
	Index.prototype.insertMultipleDocs = function (this: NedbIndex, docs: object[]) {
		if (docs.length >= MIN_DOCUMENTS && isEmpty(this.tree.tree)) {
			const root = buildIndexTree(this, docs);
			if (root) {
				this.tree.tree = root;
				return;
			}
		}
		nedbInsertMultipleDocs.call(this, docs);
	};
}

const isEmpty = (root: TreeNode) => !Object.hasOwn(root, "key");

/**
 * The tree NeDB's insertions of `docs` into this empty index would hold (the
 * same keys, each with the same documents in the same order), balanced; or
 * undefined where it leaves them to NeDB.
 */
export function buildIndexTree(index: NedbIndex, docs: object[]): TreeNode | undefined {
	const entries = keyedEntries(index, docs);
	if (!entries) return undefined;
	// Stable: documents under one key stay in the order NeDB would have pushed them.
	entries.sort((a, b) => compareThings(a.key, b.key));
	const keys: unknown[] = [];
	const groups: unknown[][] = [];
	for (const { key, doc } of entries) {
		if (keys.length > 0 && compareThings(keys[keys.length - 1], key) === 0) {
			if (index.unique) return undefined;
			groups[groups.length - 1].push(doc);
		} else {
			keys.push(key);
			groups.push([doc]);
		}
	}
	if (keys.length === 0) return undefined;
	const Node = (index.tree.tree as object).constructor as new (options: object) => TreeNode;
	const build = (from: number, to: number, parent: TreeNode | null): TreeNode | null => {
		if (from > to) return null;
		const middle = (from + to) >>> 1;
		const node = new Node({ ...index.treeOptions, key: keys[middle], parent });
		node.data = groups[middle];
		node.left = build(from, middle - 1, node);
		node.right = build(middle + 1, to, node);
		node.height = 1 + Math.max(node.left?.height ?? 0, node.right?.height ?? 0);
		return node;
	};
	return build(0, keys.length - 1, null) ?? undefined;
}

/** Each document under each key NeDB's insert would give it, in order; undefined at the first key this leaves to NeDB. */
function keyedEntries(index: NedbIndex, docs: object[]): { key: unknown; doc: object }[] | undefined {
	const entries: { key: unknown; doc: object }[] = [];
	for (const doc of docs) {
		const key = getDotValue(doc, index.fieldName);
		if (key === undefined && index.sparse) continue;
		if (!Array.isArray(key)) {
			if (!plainKey(key)) return undefined;
			entries.push({ key, doc });
			continue;
		}
		// NeDB's insert takes each distinct element once (its uniq, by type and value: for these keys, equal values).
		const seen = new Set<unknown>();
		for (const element of key) {
			if (!plainKey(element)) return undefined;
			if (seen.has(element)) continue;
			seen.add(element);
			entries.push({ key: element, doc });
		}
	}
	return entries;
}

/** A key whose place in NeDB's order is its plain value's: no NaN, no -0 (equal to 0 there, apart in a Set). */
function plainKey(key: unknown): boolean {
	switch (typeof key) {
		case "string":
		case "boolean":
		case "undefined":
			return true;
		case "number":
			return !Number.isNaN(key) && !Object.is(key, -0);
		default:
			return key === null;
	}
}
