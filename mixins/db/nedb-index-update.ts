/**
 * NeDB re-indexes a document on every update: for each index it removes the
 * old document under its key, then inserts the new one. Where many documents
 * share a key (a non-unique index: `parties` holds every transaction of a
 * user, `userId` every delivery record of a user), the removal rebuilds that
 * key's array of documents without the old one, in time and garbage
 * proportional to the documents sharing it; on a unique index (`_id`) it
 * takes the tree's node out and rebalances, and the insert puts it back. A
 * transfer updates its transaction three times and each of its two delivery
 * records twice, and the key rarely changes (a transaction's parties never do).
 *
 * `indexUpdatesInPlace` gives each of a datastore's indexes an update that,
 * when a document's key under that index is the same before and after,
 * swaps the new document in where the old one is (a pointer found with
 * indexOf in the key's array: no copy, no rebalancing), as NeDB's own insert
 * pushes into that same array. Anything else (a key that changed, appeared or
 * went, an array key holding more than plain values, a document the index
 * does not hold where expected) takes NeDB's own update, so a unique key's
 * check is unchanged. When that refuses (a unique key taken), the swaps of
 * the same update are undone before the error goes on, as NeDB expects of
 * the index that failed; the indexes updated before it are reverted by
 * NeDB with an update back, which swaps back.
 *
 * Relies on NeDB 3's index internals (`tree.tree`, nodes with `key`, `data`,
 * `left`, `right`, `compareKeys`): the versions are pinned by
 * package-lock.json, and test/unit/nedb-index-update.test.ts checks the
 * indexes against a rebuilt copy after every kind of update.
 */
import { getDotValue } from "@seald-io/nedb/lib/model.js";

/** A node of NeDB's AVL tree (@seald-io/binary-search-tree). */
interface TreeNode {
	key?: unknown;
	data: unknown[];
	left: TreeNode | null;
	right: TreeNode | null;
	compareKeys(a: unknown, b: unknown): number;
}

/** A NeDB index (@seald-io/nedb/lib/indexes.js), as much of it as this uses. */
interface NedbIndex {
	fieldName: string;
	sparse: boolean;
	tree: { tree: TreeNode };
	update(oldDoc: unknown, newDoc?: unknown): void;
}

type Pair = { oldDoc: unknown; newDoc: unknown };

/** Gives every index of this datastore the in-place update (once each; indexes made later keep NeDB's). */
export function indexUpdatesInPlace(datastore: unknown): void {
	const indexes = (datastore as { indexes: Record<string, NedbIndex> }).indexes;
	for (const index of Object.values(indexes)) {
		if ((index as { inPlace?: true }).inPlace) continue;
		const nedbUpdate = index.update.bind(index);
		index.update = (oldDoc: unknown, newDoc?: unknown) => {
			const pairs: Pair[] = Array.isArray(oldDoc) ? oldDoc : [{ oldDoc, newDoc }];
			const moved = pairs.filter(pair => !swapInPlace(index, pair));
			if (moved.length === 0) return;
			try {
				nedbUpdate(moved);
			} catch (err) {
				// NeDB rolled its part back (a unique key refused): so are the swaps, as the datastore expects of a failed index.
				for (const pair of pairs) if (!moved.includes(pair)) swapInPlace(index, { oldDoc: pair.newDoc, newDoc: pair.oldDoc });
				throw err;
			}
		};
		Object.assign(index, { inPlace: true });
	}
}

const isPlain = (value: unknown) => value === null || typeof value === "string" || typeof value === "number" || typeof value === "boolean";

/** This index's keys of a document, as NeDB keys it (an array: each distinct element); undefined when not a case for a swap. */
function keysOf(index: NedbIndex, doc: unknown): unknown[] | undefined {
	const key = getDotValue(doc, index.fieldName);
	if (!Array.isArray(key)) return [key];
	// NeDB tells array elements apart by type and value for plain values, by identity for others: plain ones only.
	if (!key.every(isPlain)) return undefined;
	return [...new Set(key)];
}

/** Swaps the new document in for the old under the same keys; false (nothing touched) when that is not the case. */
function swapInPlace(index: NedbIndex, { oldDoc, newDoc }: Pair): boolean {
	const oldKeys = keysOf(index, oldDoc);
	const newKeys = keysOf(index, newDoc);
	if (!oldKeys || !newKeys || oldKeys.length !== newKeys.length) return false;
	const root = index.tree.tree;
	if (!oldKeys.every((key, i) => root.compareKeys(key, newKeys[i]) === 0)) return false;
	// A sparse index holds no document without the field.
	if (index.sparse && oldKeys.length === 1 && oldKeys[0] === undefined) return true;
	// Found everywhere first, then swapped: never half done.
	const places: [unknown[], number][] = [];
	for (const key of oldKeys) {
		const data = nodeOf(root, key)?.data;
		const at = data ? data.indexOf(oldDoc) : -1;
		if (!data || at < 0) return false;
		places.push([data, at]);
	}
	for (const [data, at] of places) data[at] = newDoc;
	return true;
}

function nodeOf(root: TreeNode, key: unknown): TreeNode | undefined {
	let node: TreeNode | null = root;
	while (node && Object.hasOwn(node, "key")) {
		const order = node.compareKeys(key, node.key);
		if (order === 0) return node;
		node = order < 0 ? node.left : node.right;
	}
	return undefined;
}
