/**
 * NeDB turns each document into its line (every append, every rewrite) and
 * each line back into a document (every line of the file, at every load)
 * with JSON.stringify and JSON.parse, each given a function that V8 calls for
 * every key and value: to write a Date as `{"$$date": <ms>}` and read it
 * back, and to refuse a key that starts with `$` or holds a `.`. Such a
 * function takes V8 off its fast JSON path: starting a node on a world of
 * 300,000 transactions spent 15% of its CPU in NeDB's deserialize and 7% in
 * its serialize (a profile, 2026-12-02); apart, on 400,000 of that world's
 * lines, reading took 3.9-4.5 s and 1.0-1.3 s without the function, writing
 * 1.1-1.8 s and 0.6-1.3 s.
 *
 * `fastDocumentJson()` gives NeDB's model (lib/model.js, whose `serialize`
 * and `deserialize` its persistence and Mint's own writers look up at each
 * call) the same two functions, each with a fast path taken only where
 * NeDB's function cannot change the result:
 *
 * - reading: a line holding neither `$$date` nor a `\u` escape has no key
 *   `$$date` anywhere (every key is spelled out in the text), the only thing
 *   NeDB's reviver changes: JSON.parse alone gives the same document;
 * - writing: a document made only of plain objects and arrays holding
 *   strings, numbers, booleans, null and undefined, with no key starting
 *   with `$` or holding a `.`, has nothing NeDB's replacer changes or
 *   refuses: JSON.stringify alone gives the same line. Anything else (a
 *   Date, a `$$deleted` marker, a class instance, a key NeDB refuses, a
 *   cycle, a document of more than 10,000 objects and arrays) takes NeDB's
 *   own.
 *
 * Relies on NeDB 3's model module being one shared object (pinned by
 * package-lock.json); test/unit/nedb-json.test.ts checks both functions
 * against NeDB's own on random documents and lines.
 */

/** NeDB's document model (lib/model.js): the functions this replaces. */
interface NedbModel {
	serialize(doc: unknown): string;
	deserialize(line: string): unknown;
}

const model: NedbModel = require("@seald-io/nedb/lib/model");
const nedbSerialize = model.serialize;
const nedbDeserialize = model.deserialize;

/** Past this many objects and arrays, a document is left to NeDB's serializer (which refuses a cycle). */
const MAX_WALKED = 10_000;
const DOLLAR = 36;

/** NeDB's deserialize: the same document, without a reviver where it cannot change it. */
export function deserializeDocument(line: string): unknown {
	return line.includes("$$date") || line.includes("\\u") ? nedbDeserialize(line) : JSON.parse(line);
}

/** NeDB's serialize: the same line, without a replacer where it cannot change it. */
export function serializeDocument(doc: unknown): string {
	return plainData(doc) ? JSON.stringify(doc) : nedbSerialize(doc);
}

/** Whether `value` is only plain objects and arrays of JSON's own values and undefined, under keys NeDB takes as they are. */
function plainData(value: unknown): boolean {
	if (!isContainer(value)) return false;
	const pending: object[] = [value];
	let walked = 0;
	while (pending.length > 0) {
		if (++walked > MAX_WALKED) return false;
		const node = pending.pop() as Record<string, unknown> | unknown[];
		if (Array.isArray(node)) {
			for (let i = 0; i < node.length; i++) {
				const item = node[i];
				if (isContainer(item)) pending.push(item);
				else if (!isScalar(item)) return false;
			}
			continue;
		}
		const proto = Object.getPrototypeOf(node);
		if (proto !== Object.prototype && proto !== null) return false;
		for (const key of Object.keys(node)) {
			if (key.charCodeAt(0) === DOLLAR || key.includes(".")) return false;
			const item = node[key];
			if (isContainer(item)) pending.push(item);
			else if (!isScalar(item)) return false;
		}
	}
	return true;
}

const isContainer = (value: unknown): value is object => typeof value === "object" && value !== null;

function isScalar(value: unknown): boolean {
	const type = typeof value;
	return type === "string" || type === "number" || type === "boolean" || value === null || value === undefined;
}

/** Gives NeDB's model the two functions above (once per process; every datastore shares the model). */
export function fastDocumentJson(): void {
	model.serialize = serializeDocument;
	model.deserialize = deserializeDocument;
}
