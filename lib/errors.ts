/**
 * Mint's error vocabulary. Services throw these; the gateway maps them to
 * HTTP once (services/api/http-errors.ts). They are MoleculerClientErrors so
 * they cross the transporter with their code, type and data intact.
 */
import { Errors } from "moleculer";

export interface FieldProblem {
	path: string;
	message: string;
}

/** Types whose messages were written for users and may leave the gateway. */
export const MINT_ERROR_TYPES = [
	"VALIDATION_ERROR",
	"BAD_REQUEST",
	"UNAUTHORIZED",
	"FORBIDDEN",
	"NOT_FOUND",
	"CONFLICT",
	"BUSINESS_RULE",
	"TOO_MANY_REQUESTS",
	"UNSUPPORTED_MEDIA_TYPE",
	"PAYLOAD_TOO_LARGE",
	"SERVICE_UNAVAILABLE",
] as const;

export class MintError extends Errors.MoleculerClientError {
	constructor(message: string, status: number, type: (typeof MINT_ERROR_TYPES)[number], data?: unknown) {
		super(message, status, type, data);
		this.name = "MintError";
	}
}

export const validationError = (details: FieldProblem[], message = "Validation failed") => new MintError(message, 400, "VALIDATION_ERROR", { details });
/** A request that cannot be read at all (malformed JSON, a body that does not decode, too deep). */
export const badRequest = (message: string) => new MintError(message, 400, "BAD_REQUEST");
export const unauthorized = (message = "Not authenticated") => new MintError(message, 401, "UNAUTHORIZED");
export const forbidden = (message = "Forbidden") => new MintError(message, 403, "FORBIDDEN");
export const notFound = (message = "Not found") => new MintError(message, 404, "NOT_FOUND");
export const conflict = (message: string) => new MintError(message, 409, "CONFLICT");
export const businessRule = (message: string) => new MintError(message, 422, "BUSINESS_RULE");
export const unavailable = (message = "Service temporarily unavailable, try again later", retryAfterSec = 5) =>
	new MintError(message, 503, "SERVICE_UNAVAILABLE", { retryAfter: retryAfterSec });
export const tooManyRequests = (retryAfterSec: number, message = "Too many requests, try again later") =>
	new MintError(message, 429, "TOO_MANY_REQUESTS", { retryAfter: Math.max(1, Math.ceil(retryAfterSec)) });
