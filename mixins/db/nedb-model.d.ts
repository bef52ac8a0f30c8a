/** NeDB's document model (@seald-io/nedb/lib/model.js, untyped upstream): MongoDB's matching, update operators and ordering, in JavaScript. */
declare module "@seald-io/nedb/lib/model.js" {
	/** Whether a document matches a MongoDB-style filter (NeDB's semantics: withMongoNulls gives it MongoDB's null semantics). */
	export function match(doc: unknown, query: object): boolean;
	/** A new document: `doc` with a MongoDB-style update ($set, $inc, $push, $pull, $max...) or a replacement applied; throws on a bad one. */
	export function modify<T>(doc: T, update: object): T;
	/** A deep copy; with `strictKeys`, keys starting with `$` and dotted keys left out (an upsert's base from its filter). */
	export function deepCopy<T>(value: T, strictKeys?: boolean): T;
	/** Throws when a document has a key starting with `$` or holding a dot. */
	export function checkObject(doc: unknown): void;
	/** A field's value by dotted path (an array of values through arrays). */
	export function getDotValue(doc: unknown, field: string): unknown;
	/** NeDB's (and MongoDB's) order of any two values: negative, 0 or positive. */
	export function compareThings(a: unknown, b: unknown, compareStrings?: (a: string, b: string) => number): number;
}
