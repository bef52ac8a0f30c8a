import { MINOR_PER_MAJOR, formatMinor, formatMoney, parseMajorAmount, toMajor } from "../../lib/money";

const MAX = 1_000_000_00; // 1,000,000.00 in minor units

const minorOf = (value: unknown, max = MAX): number => {
	const result = parseMajorAmount(value, max);
	if (!result.ok) throw new Error(`expected ${String(value)} to parse, got: ${result.reason}`);
	return result.minor;
};
const reasonFor = (value: unknown, max = MAX): string => {
	const result = parseMajorAmount(value, max);
	if (result.ok) throw new Error(`expected ${String(value)} to be rejected, got ${result.minor}`);
	return result.reason;
};

describe("parseMajorAmount", () => {
	it.each([
		[12.5, 1250],
		[0.1, 10],
		[0.2, 20],
		[0.29, 29],
		[0.01, 1],
		[1, 100],
		[19.99, 1999],
		[1.1, 110],
		[4.35, 435],
	])("converts %p major units to %p minor units without float error", (value, expected) => {
		expect(minorOf(value)).toBe(expected);
	});

	it.each([1.005, 10.001, 0.001, 0.3 + 0.6 /* 0.8999999999999999 */, 0.1 + 0.2 /* 0.30000000000000004 */])(
		"refuses %p because it has more than 2 decimal places",
		value => {
			expect(reasonFor(value)).toBe("must have at most 2 decimal places");
		},
	);

	it.each([0, -0, -1, -0.01, -12.5])("refuses the non-positive amount %p", value => {
		expect(reasonFor(value)).toBe("must be greater than 0");
	});

	it.each([["10"], ["12.50"], [null], [undefined], [{}], [[10]], [true], [10n]])("refuses the non-number %p", value => {
		expect(reasonFor(value)).toBe("must be a number");
	});

	it.each([NaN, Infinity, -Infinity])("refuses the non-finite number %p", value => {
		expect(reasonFor(value)).toBe("must be a finite number");
	});

	it("refuses 1e21, whose text form is exponent notation", () => {
		expect(String(1e21)).toBe("1e+21");
		expect(parseMajorAmount(1e21, Number.MAX_SAFE_INTEGER).ok).toBe(false);
	});

	it("refuses 1e-7, whose text form is exponent notation", () => {
		expect(reasonFor(1e-7)).toBe("must have at most 2 decimal places");
	});

	it("refuses Number.MAX_VALUE even with the largest safe maximum", () => {
		expect(parseMajorAmount(Number.MAX_VALUE, Number.MAX_SAFE_INTEGER).ok).toBe(false);
	});

	it("refuses a whole part longer than 13 digits even when the maximum would allow it", () => {
		// 10^13 major units = 10^15 minor units: safe as an integer, but over the 13-digit whole-part limit.
		expect(parseMajorAmount(10_000_000_000_000, Number.MAX_SAFE_INTEGER).ok).toBe(false);
		expect(minorOf(9_999_999_999_999.99, Number.MAX_SAFE_INTEGER)).toBe(999_999_999_999_999);
	});

	it("accepts exactly the maximum and refuses one minor unit more, naming the maximum", () => {
		expect(minorOf(1_000_000, MAX)).toBe(MAX);
		expect(reasonFor(1_000_000.01, MAX)).toBe("must be at most 1000000.00");
		expect(reasonFor(5000, 250_00)).toBe("must be at most 250.00");
	});

	it("round-trips every 2-decimal amount from 0.01 to 99.99 through minor units", () => {
		const mismatches: string[] = [];
		for (let cents = 1; cents < 100 * MINOR_PER_MAJOR; cents++) {
			const value = Number(`${Math.floor(cents / 100)}.${String(cents % 100).padStart(2, "0")}`);
			const parsed = parseMajorAmount(value, MAX);
			if (!parsed.ok || parsed.minor !== cents || toMajor(parsed.minor) !== value) mismatches.push(String(value));
		}
		expect(mismatches).toEqual([]);
	});

	it.each([123456.78, 999999.99, 0.07, 1000000, 5555.55, 0.99])("round-trips the large or awkward amount %p", value => {
		expect(toMajor(minorOf(value))).toBe(value);
	});
});

describe("toMajor / formatMinor / formatMoney", () => {
	it.each([
		[5, "0.05"],
		[0, "0.00"],
		[1250, "12.50"],
		[-1250, "-12.50"],
		[-5, "-0.05"],
		[100, "1.00"],
		[123456789, "1234567.89"],
	])("formatMinor(%p) is %p", (minor, text) => {
		expect(formatMinor(minor)).toBe(text);
	});

	it.each([
		[1250, 12.5],
		[-1250, -12.5],
		[29, 0.29],
		[1, 0.01],
		[100, 1],
	])("toMajor(%p) is %p", (minor, major) => {
		expect(toMajor(minor)).toBe(major);
	});

	it("formatMoney appends the currency to the fixed 2-decimal amount", () => {
		expect(formatMoney(1250, "USD")).toBe("12.50 USD");
		expect(formatMoney(-7, "EUR")).toBe("-0.07 EUR");
	});

	it.each([1.5, NaN, Infinity, Number.MAX_SAFE_INTEGER + 1])("toMajor and formatMinor refuse the non-integer amount %p", minor => {
		expect(() => toMajor(minor)).toThrow(TypeError);
		expect(() => formatMinor(minor)).toThrow(/Not an integer amount of minor units/);
	});
});
