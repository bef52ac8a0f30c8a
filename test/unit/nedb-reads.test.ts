/**
 * Sorted pages and counts from NeDB (mixins/db/nedb-reads.ts): for any
 * documents, filter (on indexed fields or not, plain, array, null or date
 * values, in any order), sort (ties, missing fields, mixed types, either
 * direction, ending on _id or not), skip, limit and projection, exactly what
 * NeDB's own cursor answers, in the same order, as copies.
 */
import Nedb from "@seald-io/nedb";
import fc from "fast-check";
import { countMatching, sortedPage } from "../../mixins/db/nedb-reads";

type Doc = Record<string, unknown> & { _id: string };

const value = fc.oneof(
	fc.constantFrom("a", "b", "B", ""),
	fc.integer({ min: -2, max: 2 }),
	fc.constant(null),
	fc.boolean(),
	fc.constant(new Date(1_700_000_000_000)),
);
const doc = fc.record(
	{ k: fc.constantFrom("p", "q", "r"), x: value, y: value, t: fc.array(fc.constantFrom("p", "q"), { maxLength: 2 }) },
	{ requiredKeys: ["k"] },
);
const filter = fc.oneof(
	fc.constant({}),
	fc.record({ k: fc.constantFrom("p", "q", "z") }),
	fc.record({ t: fc.constantFrom("p", "q") }),
	fc.record({ k: fc.constantFrom("p", "q"), x: value }),
	// Two indexed fields, either order: NeDB reads the last one's candidates.
	fc.record({ k: fc.constantFrom("p", "q"), t: fc.constantFrom("p", "q") }),
	fc.record({ t: fc.constantFrom("p", "q"), k: fc.constantFrom("p", "q") }),
	// An indexed field with any value (a null or a date: the whole filter is matched), beside another.
	fc.record({ k: fc.constantFrom("p", "q"), y: value }),
	fc.record({ y: value }),
	fc.record({ x: fc.record({ $gte: fc.integer({ min: -2, max: 2 }) }) }),
	fc.record({ k: fc.record({ $in: fc.constantFrom(["p"], ["p", "q"]) }), x: value }),
);
const field = fc.constantFrom("x", "y", "k", "_id");
const sort = fc.uniqueArray(fc.tuple(field, fc.constantFrom(1, -1)), { minLength: 1, maxLength: 3, selector: ([f]) => f });

async function datastore(docs: Omit<Doc, "_id">[]): Promise<Nedb<Doc>> {
	const db = new Nedb<Doc>({ inMemoryOnly: true });
	await db.ensureIndexAsync({ fieldName: "k" });
	await db.ensureIndexAsync({ fieldName: "t" });
	await db.ensureIndexAsync({ fieldName: "y" });
	// Ids in an order of their own: neither insertion nor sort order.
	await db.insertAsync(docs.map((d, i) => ({ ...d, _id: `${(i * 7919) % 1000}`.padStart(3, "0") })));
	return db;
}

const cursorOf = (db: Nedb<Doc>, query: object, spec: [string, number][], skip: number, limit: number, projection?: object) => {
	const cursor = db.findAsync(query, projection).sort(Object.fromEntries(spec)).limit(limit);
	return skip ? cursor.skip(skip) : cursor;
};

describe("NeDB's sorted pages and counts", () => {
	it("are NeDB's own pages and counts, for any documents, filter, sort, skip and limit", async () => {
		await fc.assert(
			fc.asyncProperty(
				fc.array(doc, { maxLength: 60 }),
				filter,
				sort,
				fc.integer({ min: 0, max: 30 }),
				fc.integer({ min: 1, max: 25 }),
				async (docs, query, spec, skip, limit) => {
					const db = await datastore(docs);
					const mine = await sortedPage<Doc>(cursorOf(db, query, spec, skip, limit));
					expect(mine).toEqual(await cursorOf(db, query, spec, skip, limit).execAsync());
					expect(await countMatching(db, query)).toBe(await db.countAsync(query).execAsync());
				},
			),
			{ numRuns: 400 },
		);
	});

	it("with a projection, and as copies: changing a page leaves the datastore as it was", async () => {
		const db = await datastore([
			{ k: "p", x: 2, y: "b" },
			{ k: "p", x: 1, y: "a" },
			{ k: "q", x: 3, y: "c" },
		]);
		const page = (await sortedPage<Doc>(cursorOf(db, { k: "p" }, [["x", -1]], 0, 5, { y: 1, _id: 0 })))!;
		expect(page).toEqual([{ y: "b" }, { y: "a" }]);
		const full = (await sortedPage<Doc>(cursorOf(db, { k: "p" }, [["x", 1]], 0, 1)))!;
		full[0].x = 99;
		expect((await db.findAsync({ k: "p" }).sort({ x: 1 }).limit(1).execAsync())[0].x).toBe(1);
	});

	it("leaves a cursor without a sort or a limit to NeDB", async () => {
		const db = await datastore([{ k: "p" }]);
		expect(sortedPage(db.findAsync({}).limit(3))).toBeUndefined();
		expect(sortedPage(db.findAsync({}).sort({ k: 1 }))).toBeUndefined();
	});
});
