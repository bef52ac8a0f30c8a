/**
 * The gateway's only body reader: JSON, bounded before anything walks it.
 *
 * body-parser reads the body: Content-Encoding identity, gzip, deflate or br,
 * at most BODY_LIMIT bytes after decoding, UTF-8. Before the text is parsed,
 * one linear scan of its bytes refuses deep nesting, wide objects or arrays
 * and too many values (JSON_BOUNDS), so JSON.parse and everything after it
 * only ever see small, shallow input; a 90 kB body of nested objects once
 * blew the stack of a recursive check and took the whole process down.
 * Afterwards an iterative walk refuses prototype keys. Every problem becomes
 * a MintError with its status, answered in the SPEC error format.
 */
import bodyParser from "body-parser";
import { MintError, badRequest, validationError } from "../../lib/errors";
import type { Req, Res } from "./http";

/** Mint's own bodies are a handful of flat fields; these bounds leave room and stop abuse. */
export const JSON_BOUNDS = {
	/** Levels of objects and arrays inside each other. */
	maxDepth: 32,
	/** Keys of one object, or items of one array. */
	maxMembers: 1000,
	/** Values in the whole body (each object, array and member counts). */
	maxValues: 10_000,
};

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const OPENERS = new Set([0x7b, 0x5b]); // { [
const CLOSERS = new Set([0x7d, 0x5d]); // } ]

/**
 * What makes a JSON text too big to parse, or undefined. One pass over the
 * bytes, outside strings, counting brackets and commas: UTF-8 multi-byte
 * sequences never contain these ASCII bytes. Malformed text is left to JSON.parse.
 */
export function jsonBoundsProblem(bytes: Uint8Array, bounds = JSON_BOUNDS): string | undefined {
	const membersAt: number[] = [];
	let values = 0;
	let inString = false;
	for (let i = 0; i < bytes.length; i++) {
		const byte = bytes[i];
		if (inString) {
			if (byte === BACKSLASH) i++;
			else if (byte === QUOTE) inString = false;
			continue;
		}
		if (byte === QUOTE) {
			inString = true;
		} else if (OPENERS.has(byte)) {
			if (membersAt.length === bounds.maxDepth) return `The JSON body is nested deeper than ${bounds.maxDepth} levels`;
			membersAt.push(1);
			values++;
		} else if (CLOSERS.has(byte)) {
			membersAt.pop();
		} else if (byte === COMMA && membersAt.length > 0) {
			if (++membersAt[membersAt.length - 1] > bounds.maxMembers) {
				return `An object or array in the JSON body has more than ${bounds.maxMembers} entries`;
			}
			values++;
		}
		if (values > bounds.maxValues) return `The JSON body has more than ${bounds.maxValues} values`;
	}
	return undefined;
}

const FORBIDDEN_KEYS = new Set(["__proto__", "constructor", "prototype"]);

/** The path of the first prototype-polluting key in a parsed JSON value, if any. Iterative: no input sets the stack depth. */
export function forbiddenKeyIn(value: unknown): string | undefined {
	const pending: [unknown, string][] = [[value, ""]];
	for (let next = pending.pop(); next; next = pending.pop()) {
		const [node, path] = next;
		if (node === null || typeof node !== "object") continue;
		for (const key of Object.keys(node)) {
			const here = path ? `${path}.${key}` : key;
			if (FORBIDDEN_KEYS.has(key)) return here;
			pending.push([(node as Record<string, unknown>)[key], here]);
		}
	}
	return undefined;
}

const hasBody = (req: Req) =>
	req.headers["transfer-encoding"] !== undefined || (req.headers["content-length"] !== undefined && req.headers["content-length"] !== "0");

const BOUNDS_TYPE = "entity.bounds";

/** body-parser's errors as Mint's, by their documented `type`; nothing internal leaves. */
function bodyError(err: { type?: string; status?: number; message?: string }, req: Req): MintError {
	const encoding = String(req.headers["content-encoding"] ?? "identity").toLowerCase();
	switch (err.type) {
		case BOUNDS_TYPE:
			return badRequest(String(err.message));
		case "entity.too.large":
			return new MintError("Request body too large", 413, "PAYLOAD_TOO_LARGE");
		case "encoding.unsupported":
			return new MintError("Content-Encoding must be identity, gzip, deflate or br", 415, "UNSUPPORTED_MEDIA_TYPE");
		case "charset.unsupported":
			return new MintError("The body must be UTF-8 JSON", 415, "UNSUPPORTED_MEDIA_TYPE");
		case "entity.parse.failed":
			return badRequest("Malformed JSON body");
		case "request.size.invalid":
			return badRequest("The body does not match its Content-Length");
		case "request.aborted":
			return badRequest("The request body was cut short");
		default:
			// zlib's errors carry no type: a body that does not decode as it says.
			return badRequest(encoding === "identity" ? "The request body could not be read" : `The request body does not decode as ${encoding}`);
	}
}

/**
 * Route middleware: reads a JSON object body, or refuses it. A request with
 * no body passes with none; every error goes to `next`, never thrown.
 */
export function jsonBody(limitBytes: number) {
	const parse = bodyParser.json({
		limit: limitBytes,
		strict: true,
		inflate: true,
		type: () => true, // the Content-Type is checked first, below
		verify(_req, _res, bytes) {
			const problem = jsonBoundsProblem(bytes);
			if (problem) throw Object.assign(new Error(problem), { type: BOUNDS_TYPE });
		},
	});
	return function jsonBodyMiddleware(req: Req, res: Res, next: (err?: unknown) => void): void {
		if (!hasBody(req)) {
			next();
			return;
		}
		if (!/^application\/json\s*(;|$)/i.test(String(req.headers["content-type"] ?? ""))) {
			next(new MintError("Content-Type must be application/json", 415, "UNSUPPORTED_MEDIA_TYPE"));
			return;
		}
		parse(req, res, (err?: unknown) => {
			if (err) return next(bodyError(err as { type?: string }, req));
			if (req.body === null || typeof req.body !== "object" || Array.isArray(req.body)) {
				return next(validationError([{ path: "", message: "The body must be a JSON object" }]));
			}
			const bad = forbiddenKeyIn(req.body);
			if (bad) return next(validationError([{ path: bad, message: "This key is not allowed" }]));
			next();
		});
	};
}
