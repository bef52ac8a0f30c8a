/**
 * The one money module. Inside Mint every amount is an integer number of
 * minor units (cents); major units exist only on the wire, converted here.
 */

export const MINOR_PER_MAJOR = 100;

export type ParseResult = { ok: true; minor: number } | { ok: false; reason: string };

/**
 * Converts a wire amount (a JSON number in major units, at most 2 decimals)
 * to minor units without float arithmetic: the number's shortest decimal
 * representation is parsed as text.
 */
export function parseMajorAmount(value: unknown, maxMinor: number): ParseResult {
	if (typeof value !== "number") return { ok: false, reason: "must be a number" };
	if (!Number.isFinite(value)) return { ok: false, reason: "must be a finite number" };
	if (value <= 0) return { ok: false, reason: "must be greater than 0" };
	const text = String(value);
	// String(n) uses exponent notation below 1e-6 and from 1e21; neither is a
	// valid amount (too many decimals, or far over any limit).
	const match = /^(\d+)(?:\.(\d{1,2}))?$/.exec(text);
	if (!match) {
		if (/e/i.test(text) || /\.\d{3,}$/.test(text)) return { ok: false, reason: "must have at most 2 decimal places" };
		return { ok: false, reason: "must be a plain decimal number" };
	}
	const whole = match[1];
	const fraction = (match[2] ?? "").padEnd(2, "0");
	if (whole.length > 13) return { ok: false, reason: `must be at most ${formatMinor(maxMinor)}` };
	const minor = Number(whole) * MINOR_PER_MAJOR + Number(fraction);
	if (!Number.isSafeInteger(minor)) return { ok: false, reason: `must be at most ${formatMinor(maxMinor)}` };
	if (minor > maxMinor) return { ok: false, reason: `must be at most ${formatMinor(maxMinor)}` };
	return { ok: true, minor };
}

/** Minor units to a wire number in major units, e.g. 1250 -> 12.5. */
export function toMajor(minor: number): number {
	assertMinor(minor);
	return Number(formatMinor(minor));
}

/** Minor units to a fixed 2-decimal string, e.g. 1250 -> "12.50". */
export function formatMinor(minor: number): string {
	assertMinor(minor);
	const sign = minor < 0 ? "-" : "";
	const abs = Math.abs(minor);
	const whole = Math.floor(abs / MINOR_PER_MAJOR);
	const cents = abs % MINOR_PER_MAJOR;
	return `${sign}${whole}.${String(cents).padStart(2, "0")}`;
}

/** Minor units with the currency, for people: 1250, "USD" -> "12.50 USD". */
export function formatMoney(minor: number, currency: string): string {
	return `${formatMinor(minor)} ${currency}`;
}

export function assertMinor(minor: number): void {
	if (!Number.isSafeInteger(minor)) throw new TypeError(`Not an integer amount of minor units: ${minor}`);
}
