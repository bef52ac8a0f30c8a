/** The validation rules auth's action params are built from (fastest-validator). */

// Names: any printable text (people's names hold digits, punctuation, every script), but no control
// characters and no markup brackets.
const NAME_TEXT = /^[^\p{C}<>]*$/u;
export const NAME = { type: "string", trim: true, min: 1, max: 100, pattern: NAME_TEXT } as const;
export const MIDDLE_NAME = { type: "string", trim: true, max: 100, optional: true, pattern: NAME_TEXT } as const;

/**
 * The WHATWG "valid email address" (what browsers accept), with a dot in the
 * domain: ASCII only, so no account can look like another's through
 * homoglyphs or invisible characters (a Cyrillic "а", a zero-width space).
 */
const EMAIL_ADDRESS = /^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$/;
export const EMAIL = {
	type: "string",
	trim: true,
	lowercase: true,
	max: 254,
	pattern: EMAIL_ADDRESS,
	messages: { stringPattern: "The '{field}' field must be a valid email address." },
} as const;

export const PASSWORD = { type: "string", min: 8, max: 128 } as const;
export const PASSWORD_CONFIRM = { type: "equal", field: "password", strict: true } as const;
/** One-time tokens (verify-email, password reset) as they arrive from the links. */
export const TOKEN = { type: "string", min: 10, max: 200, pattern: /^[A-Za-z0-9_-]+$/ } as const;
/** A user id from another service or an operator. */
export const USER_ID = { type: "string", min: 1, max: 64 } as const;
