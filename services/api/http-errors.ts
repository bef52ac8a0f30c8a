/**
 * The one mapping from errors to HTTP. Only messages written for users
 * (MintError types, validation) leave the gateway; everything else becomes
 * a generic message for its status.
 */
import { MINT_ERROR_TYPES, type FieldProblem } from "../../lib/errors";

export interface HttpError {
	status: number;
	body: { error: { message: string; status: number; details?: FieldProblem[] } };
	headers: Record<string, string>;
}

const GENERIC: Record<number, string> = {
	400: "Bad request",
	401: "Not authenticated",
	403: "Forbidden",
	404: "Not found",
	405: "Method not allowed",
	408: "Request timeout",
	409: "Conflict",
	413: "Request body too large",
	415: "Content-Type must be application/json",
	431: "Request headers too large",
	422: "Unprocessable request",
	429: "Too many requests, try again later",
	500: "Internal server error",
	503: "Service temporarily unavailable, try again later",
};

// Moleculer and moleculer-web conditions that mean "a dependency is down".
const UNAVAILABLE_TYPES = new Set([
	"SERVICE_NOT_FOUND",
	"SERVICE_NOT_AVAILABLE",
	"REQUEST_TIMEOUT",
	"REQUEST_SKIPPED",
	"QUEUE_FULL",
	"CIRCUIT_BREAKER_OPEN",
	"BROKER_DISCONNECTED",
	"SERVICE_UNAVAILABLE",
	"MAX_CALL_LEVEL",
]);

export const RETRY_AFTER_UNAVAILABLE_SEC = 5;

interface AnyError {
	code?: unknown;
	status?: unknown;
	type?: unknown;
	name?: string;
	message?: string;
	data?: unknown;
}

/** What Mint, Moleculer and moleculer-web put in an error's `data`, as far as this mapping reads it. */
interface ErrorData {
	retryAfter?: unknown;
	details?: unknown;
}

/** One fastest-validator problem, as Moleculer's ValidationError carries it. */
interface ValidatorProblem {
	type?: unknown;
	field?: unknown;
	path?: unknown;
	actual?: unknown;
	message?: unknown;
}

const dataOf = (e: AnyError): ErrorData => (typeof e.data === "object" && e.data !== null ? e.data : {});

export function toHttpError(err: unknown): HttpError {
	const e = (err ?? {}) as AnyError;
	const type = typeof e.type === "string" ? e.type : "";
	const data = dataOf(e);
	const make = (status: number, message = GENERIC[status] ?? GENERIC[500], details?: FieldProblem[], headers: Record<string, string> = {}): HttpError => ({
		status,
		body: { error: { message, status, ...(details ? { details } : {}) } },
		headers,
	});

	const status = Number(e.code ?? e.status);
	if (UNAVAILABLE_TYPES.has(type) || status === 503) {
		// Mint's own (e.g. "Mint is starting") say why and when to retry; Moleculer's stay generic.
		const ours = e.name === "MintError";
		const retryAfter = ours ? Number(data.retryAfter ?? RETRY_AFTER_UNAVAILABLE_SEC) : RETRY_AFTER_UNAVAILABLE_SEC;
		return make(503, ours ? String(e.message) : GENERIC[503], undefined, { "Retry-After": String(retryAfter) });
	}

	// fastest-validator through Moleculer: ValidationError, code 422, data = [{ field, message }].
	if (type === "VALIDATION_ERROR") {
		const raw = (Array.isArray(e.data) ? e.data : Array.isArray(data.details) ? data.details : []) as ValidatorProblem[];
		const details: FieldProblem[] = raw.flatMap((d): FieldProblem[] =>
			// $$strict: one problem per unknown field, named.
			d.type === "objectStrict"
				? String(d.actual ?? "")
						.split(",")
						.map(name => ({ path: [d.field, name.trim()].filter(Boolean).join("."), message: "This field is not allowed" }))
				: [{ path: String(d.path ?? d.field ?? ""), message: String(d.message ?? "Invalid value") }],
		);
		return make(400, details.length && e.name === "MintError" ? String(e.message) : "Validation failed", details);
	}

	if ((MINT_ERROR_TYPES as readonly string[]).includes(type) && status >= 400 && status < 500) {
		const headers: Record<string, string> = {};
		if (status === 429) headers["Retry-After"] = String(data.retryAfter ?? 60);
		return make(status, String(e.message), undefined, headers);
	}

	// moleculer-web's own client errors (not found, rate limit, unauthorized...).
	if (status >= 400 && status < 500 && GENERIC[status]) {
		const headers: Record<string, string> = status === 429 ? { "Retry-After": "60" } : {};
		return make(status, GENERIC[status], undefined, headers);
	}
	return make(500);
}
