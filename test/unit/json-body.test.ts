/** The JSON bounds scan: refuses what is too deep or too wide before anything parses it, and passes everything else. */
import fc from "fast-check";
import { JSON_BOUNDS, forbiddenKeyIn, jsonBoundsProblem } from "../../services/api/json-body";

const scan = (text: string, bounds = JSON_BOUNDS) => jsonBoundsProblem(Buffer.from(text, "utf8"), bounds);

/** Nesting depth and widest container of a parsed value, the slow obvious way. */
function shapeOf(value: unknown): { depth: number; widest: number } {
	if (value === null || typeof value !== "object") return { depth: 0, widest: 0 };
	const children = Object.values(value as object).map(shapeOf);
	return {
		depth: 1 + Math.max(0, ...children.map(c => c.depth)),
		widest: Math.max(Object.keys(value as object).length, ...children.map(c => c.widest)),
	};
}

describe("jsonBoundsProblem", () => {
	it("passes Mint's ordinary bodies", () => {
		expect(scan(JSON.stringify({ amount: 12.5, toUserId: "0b9a0a5e-7d0c-4a53-9b59-1f0c4b8e2f11" }))).toBeUndefined();
		expect(
			scan(JSON.stringify({ firstName: "李小龍", lastName: 'O\'Brien "Jr" [x] {y}', email: "a@b.c", password: "]]]]}}}}", passwordConfirm: "\\" })),
		).toBeUndefined();
	});

	it("refuses nesting one level deeper than the bound, and only that", () => {
		const nested = (levels: number) => "[".repeat(levels) + "]".repeat(levels);
		expect(scan(nested(JSON_BOUNDS.maxDepth))).toBeUndefined();
		expect(scan(nested(JSON_BOUNDS.maxDepth + 1))).toBe(`The JSON body is nested deeper than ${JSON_BOUNDS.maxDepth} levels`);
		// The finding: 15,000 nested objects in a login email, 50,000 nested arrays in a top-up.
		expect(scan(`{"email":${'{"a":'.repeat(15_000)}1${"}".repeat(15_000)},"password":"x"}`)).toMatch(/nested deeper/);
		expect(scan(`{"amount":${"[".repeat(50_000)}${"]".repeat(50_000)}}`)).toMatch(/nested deeper/);
	});

	it("refuses an object or array wider than the bound, and only that", () => {
		const wideArray = (n: number) => JSON.stringify(Array.from({ length: n }, () => 0));
		const wideObject = (n: number) => JSON.stringify(Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, i])));
		expect(scan(wideArray(JSON_BOUNDS.maxMembers))).toBeUndefined();
		expect(scan(wideArray(JSON_BOUNDS.maxMembers + 1))).toBe(`An object or array in the JSON body has more than ${JSON_BOUNDS.maxMembers} entries`);
		expect(scan(wideObject(JSON_BOUNDS.maxMembers))).toBeUndefined();
		expect(scan(wideObject(10_000))).toMatch(/more than 1000 entries/);
	});

	it("refuses too many values in all, however they are spread", () => {
		const body = JSON.stringify(Array.from({ length: 20 }, () => Array.from({ length: 600 }, () => 1)));
		expect(scan(body)).toBe(`The JSON body has more than ${JSON_BOUNDS.maxValues} values`);
	});

	it("does not count brackets and commas inside strings, escaped quotes included", () => {
		const tricky = JSON.stringify({ s: `${"[".repeat(100)}\\"${"{,".repeat(2000)}` });
		expect(scan(tricky)).toBeUndefined();
	});

	it("agrees with the parsed value's real shape for any JSON (property)", () => {
		const small = { maxDepth: 4, maxMembers: 5, maxValues: 1_000_000 };
		fc.assert(
			fc.property(fc.jsonValue({ maxDepth: 7 }), value => {
				const text = JSON.stringify(value);
				const { depth, widest } = shapeOf(JSON.parse(text));
				const problem = jsonBoundsProblem(Buffer.from(text, "utf8"), small);
				expect(problem === undefined).toBe(depth <= small.maxDepth && widest <= small.maxMembers);
			}),
			{ numRuns: 500 },
		);
	});
});

describe("forbiddenKeyIn", () => {
	it("finds a prototype key at any depth without recursion", () => {
		const deep = JSON.parse(`${'{"a":'.repeat(20_000)}{"constructor":1}${"}".repeat(20_000)}`);
		expect(forbiddenKeyIn(deep)?.endsWith("a.a.constructor")).toBe(true);
	});
});
