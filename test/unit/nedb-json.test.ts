/**
 * NeDB's document lines without its per-key functions where they change
 * nothing (mixins/db/nedb-json.ts): on random documents (dates, `$` keys,
 * dotted keys, undefined, NaN, holes, class instances, cycles) the line
 * written is NeDB's own, or the same error; on random lines (NeDB's, and
 * JSON with escapes and `$$date` spelled every way) the document read is
 * NeDB's own. And a datastore loads and writes through them.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { inspect } from "node:util";
import Nedb from "@seald-io/nedb";
import fc from "fast-check";
import { deserializeDocument, fastDocumentJson, serializeDocument } from "../../mixins/db/nedb-json";

const model: { serialize(doc: unknown): string; deserialize(line: string): unknown } = require("@seald-io/nedb/lib/model");
// NeDB's own, as loaded, before anything replaces them.
const nedbSerialize = model.serialize;
const nedbDeserialize = model.deserialize;

class Money {
	constructor(readonly minor: number) {}
}

const key = fc.oneof(
	{ weight: 6, arbitrary: fc.constantFrom("a", "b", "amountMinor", "history", "status", "__proto__", "getTime", "toJSON", "0", "1") },
	{ weight: 1, arbitrary: fc.constantFrom("$$date", "$$deleted", "$$indexCreated", "$inc", "a.b", "x.", "$") },
	{ weight: 2, arbitrary: fc.string({ maxLength: 6 }) },
);
const scalar = fc.oneof(
	fc.string({ maxLength: 12 }),
	fc.constantFrom("$$date", "\\u0024$date", "a\u2028b", "é", "\u0000"),
	fc.integer(),
	fc.double(),
	fc.boolean(),
	fc.constant(null),
	fc.constant(undefined),
);
const odd = fc.oneof(
	fc.date({ noInvalidDate: false }),
	fc.integer().map(n => new Money(n)),
	fc.constant(() => 1),
	fc.bigInt(),
	fc.constant(Symbol("s")),
	fc.constant(Object.create(null) as object),
	fc.constant({ toJSON: () => "x" }),
);
const { value } = fc.letrec(tie => ({
	value: fc.oneof({ depthSize: "small", withCrossShrink: true }, scalar, scalar, odd, tie("array"), tie("object")),
	array: fc.oneof(
		fc.array(tie("value"), { maxLength: 4 }),
		fc.array(tie("value"), { maxLength: 3 }).map(a => {
			const holey = [...a];
			holey.length += 2;
			return holey;
		}),
	),
	object: fc.dictionary(key, tie("value"), { maxKeys: 5 }),
}));
/** Mostly documents NeDB takes; some it refuses or changes. */
const documents = fc.oneof(
	{ weight: 3, arbitrary: fc.dictionary(key, value, { maxKeys: 6 }) },
	{ weight: 1, arbitrary: fc.record({ _id: fc.uuid(), createdAt: fc.date({ noInvalidDate: true }), tags: fc.array(fc.string()) }) },
	{ weight: 1, arbitrary: fc.record({ _id: fc.uuid(), $$deleted: fc.constant(true) }) },
);

/** What a function gives, or the error it throws, comparably. */
function outcome<T>(run: () => T): { value: T } | { error: string } {
	try {
		return { value: run() };
	} catch (err) {
		return { error: `${(err as Error).constructor.name}: ${(err as Error).message}` };
	}
}

describe("NeDB document lines", () => {
	it("writes every document as NeDB does, or refuses it with NeDB's error", () => {
		fc.assert(
			fc.property(documents, doc => {
				expect(outcome(() => serializeDocument(doc))).toEqual(outcome(() => nedbSerialize(doc)));
			}),
			{ numRuns: 3000 },
		);
	});

	it("reads every line as NeDB does: its own lines, and JSON spelling $$date and other keys with escapes", () => {
		const unicodeEscape = (c: string) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`;
		// Every dollar sign escaped, or every letter.
		const escaped = (text: string, letters: boolean) => text.replace(letters ? /[a-z]/g : /\$/g, unicodeEscape);
		const lines = fc.oneof(
			documents
				.map(doc => outcome(() => nedbSerialize(doc)))
				.filter((o): o is { value: string } => "value" in o)
				.map(o => o.value),
			fc.record({ $$date: fc.integer(), at: fc.record({ $$date: fc.integer() }) }).map(o => JSON.stringify(o)),
			fc.tuple(fc.record({ a: fc.record({ $$date: fc.integer() }), b: fc.string() }), fc.boolean()).map(([o, letters]) => escaped(JSON.stringify(o), letters)),
		);
		fc.assert(
			fc.property(lines, line => {
				// As inspect shows them: types and prototypes, dates (an invalid one too), own keys such as __proto__.
				expect(
					inspect(
						outcome(() => deserializeDocument(line)),
						{ depth: null },
					),
				).toBe(
					inspect(
						outcome(() => nedbDeserialize(line)),
						{ depth: null },
					),
				);
			}),
			{ numRuns: 3000 },
		);
		// A date spelled with an escape is still a date.
		const date = deserializeDocument('{"at":{"\\u0024$date":5}}') as { at: Date };
		expect(date.at).toBeInstanceOf(Date);
		expect(date.at.getTime()).toBe(5);
		// A truncated line is refused as NeDB refuses it (the load counts it as corrupt).
		expect(outcome(() => deserializeDocument('{"_id":"a","n":'))).toEqual(outcome(() => nedbDeserialize('{"_id":"a","n":')));
	});

	it("takes the fast path for plain documents and NeDB's for the rest", () => {
		const plain = { _id: "t1", amountMinor: 5, parties: ["u1", "u2"], history: [{ status: "Pending", at: "2026-12-02T00:00:00.000Z" }], gone: undefined };
		expect(serializeDocument(plain)).toBe(JSON.stringify(plain));
		const dated = { _id: "t1", at: new Date(7) };
		expect(serializeDocument(dated)).toBe('{"_id":"t1","at":{"$$date":7}}');
		expect(() => serializeDocument({ _id: "t1", "a.b": 1 })).toThrow("Field names cannot contain a .");
		expect(() => serializeDocument({ _id: "t1", nested: [{ $set: 1 }] })).toThrow("Field names cannot begin with the $ character");
		const cyclic: Record<string, unknown> = { _id: "c" };
		cyclic.self = cyclic;
		expect(() => serializeDocument(cyclic)).toThrow(/circular/);
	});

	it("is what a datastore loads and appends with once given", async () => {
		const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mint-nedb-json-"));
		try {
			const filename = path.join(dir, "docs.db");
			fs.writeFileSync(
				filename,
				[
					'{"_id":"a","n":1,"at":{"$$date":1000}}',
					'{"_id":"b","n":2,"tags":["x","y"]}',
					'{"_id":"b","n":3,"tags":["y"]}',
					'{"$$indexCreated":{"fieldName":"tags","unique":false,"sparse":false}}',
					'{"_id":"c","$$deleted":true}',
					'{"_id":"c","n":4',
				].join("\n") + "\n",
			);
			fastDocumentJson();
			expect(model.serialize).toBe(serializeDocument);
			expect(model.deserialize).toBe(deserializeDocument);
			const db = new Nedb<{ _id: string; n: number; at?: Date; tags?: string[] }>({ filename, corruptAlertThreshold: 0.5 });
			await db.loadDatabaseAsync();
			const docs = await db.findAsync({}).sort({ _id: 1 });
			expect(docs).toEqual([
				{ _id: "a", n: 1, at: new Date(1000) },
				{ _id: "b", n: 3, tags: ["y"] },
			]);
			expect(await db.findAsync({ tags: "y" })).toHaveLength(1);
			await db.insertAsync({ _id: "d", n: 5, at: new Date(2000) });
			await db.compactDatafileAsync();
			expect(fs.readFileSync(filename, "utf8").split("\n")).toEqual([
				'{"_id":"a","n":1,"at":{"$$date":1000}}',
				'{"_id":"b","n":3,"tags":["y"]}',
				'{"_id":"d","n":5,"at":{"$$date":2000}}',
				'{"$$indexCreated":{"fieldName":"tags","unique":false,"sparse":false}}',
				"",
			]);
		} finally {
			fs.rmSync(dir, { recursive: true, force: true });
		}
	});
});
