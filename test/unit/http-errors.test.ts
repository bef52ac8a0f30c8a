import { Errors } from "moleculer";
import { RETRY_AFTER_UNAVAILABLE_SEC, toHttpError } from "../../services/api/http-errors";
import { businessRule, conflict, forbidden, notFound, tooManyRequests, unauthorized, unavailable, validationError } from "../../lib/errors";

const fieldError = (type: string, field: string | undefined, extra: Record<string, unknown> = {}) => ({ type, field, message: `${field} is wrong`, ...extra });

describe("toHttpError: validation", () => {
	it("a Moleculer ValidationError becomes 400 with one detail per field and a generic message", () => {
		const err = new Errors.ValidationError("x", "VALIDATION_ERROR", [{ type: "required", field: "email", message: "m" }]);
		expect(toHttpError(err)).toEqual({
			status: 400,
			body: { error: { message: "Validation failed", status: 400, details: [{ path: "email", message: "m" }] } },
			headers: {},
		});
	});

	it("an objectStrict problem names each unknown field as its own detail", () => {
		const err = new Errors.ValidationError("x", "VALIDATION_ERROR", [{ type: "objectStrict", field: undefined, actual: "a, b", message: "m" }]);
		expect(toHttpError(err).body.error.details).toEqual([
			{ path: "a", message: "This field is not allowed" },
			{ path: "b", message: "This field is not allowed" },
		]);
	});

	it("an objectStrict problem inside a nested object prefixes the parent field", () => {
		const err = new Errors.ValidationError("x", "VALIDATION_ERROR", [fieldError("objectStrict", "address", { actual: "zip" }), fieldError("number", "amount")]);
		expect(toHttpError(err).body.error.details).toEqual([
			{ path: "address.zip", message: "This field is not allowed" },
			{ path: "amount", message: "amount is wrong" },
		]);
	});

	it("Mint's own validationError keeps its message and details", () => {
		const err = validationError([{ path: "amount", message: "must be greater than 0" }], "Check the amount");
		expect(toHttpError(err)).toEqual({
			status: 400,
			body: { error: { message: "Check the amount", status: 400, details: [{ path: "amount", message: "must be greater than 0" }] } },
			headers: {},
		});
	});
});

describe("toHttpError: Mint errors", () => {
	it.each([
		["unauthorized", unauthorized("Log in first"), 401, "Log in first"],
		["forbidden", forbidden("Not your wallet"), 403, "Not your wallet"],
		["notFound", notFound("No such wallet"), 404, "No such wallet"],
		["conflict", conflict("Email already registered"), 409, "Email already registered"],
		["businessRule", businessRule("Insufficient funds"), 422, "Insufficient funds"],
	])("%s maps to its status with its own message", (_name, err, status, message) => {
		expect(toHttpError(err)).toEqual({ status, body: { error: { message, status } }, headers: {} });
	});

	it("tooManyRequests(12) maps to 429 with Retry-After 12", () => {
		const http = toHttpError(tooManyRequests(12));
		expect(http.status).toBe(429);
		expect(http.headers).toEqual({ "Retry-After": "12" });
		expect(http.body.error.message).toBe("Too many requests, try again later");
	});

	it("tooManyRequests rounds a fractional wait up", () => {
		expect(toHttpError(tooManyRequests(2.1)).headers["Retry-After"]).toBe("3");
	});
});

describe("toHttpError: unavailable dependencies", () => {
	it.each([
		["ServiceNotAvailableError", new Errors.ServiceNotAvailableError({ action: "wallet.get", nodeID: "node-1" })],
		["RequestTimeoutError", new Errors.RequestTimeoutError({ action: "auth.login", nodeID: "node-2" })],
		["ServiceNotFoundError", new Errors.ServiceNotFoundError({ action: "wallet.get" })],
	])("%s maps to 503 with Retry-After and hides which action failed", (_name, err) => {
		const http = toHttpError(err);
		expect(http.status).toBe(503);
		expect(http.headers).toEqual({ "Retry-After": String(RETRY_AFTER_UNAVAILABLE_SEC) });
		expect(http.body.error.message).toBe("Service temporarily unavailable, try again later");
		expect(JSON.stringify(http.body)).not.toMatch(/wallet|auth|node-/);
	});
});

describe("toHttpError: anything else", () => {
	it("a plain Error is a 500 that does not leak its message", () => {
		const http = toHttpError(new Error("secret internal detail"));
		expect(http.status).toBe(500);
		expect(http.body.error.message).toBe("Internal server error");
		expect(JSON.stringify(http.body)).not.toContain("secret");
	});

	it.each([[null], [undefined], ["a string with secret"], [42]])("a thrown non-error %p is a 500", thrown => {
		const http = toHttpError(thrown);
		expect(http.status).toBe(500);
		expect(JSON.stringify(http.body)).not.toContain("secret");
	});

	it("a MoleculerClientError of an unknown type keeps its status but not its message", () => {
		const http = toHttpError(new Errors.MoleculerClientError("secret query failed on users", 400, "SOMETHING_INTERNAL"));
		expect(http.status).toBe(400);
		expect(http.body.error.message).toBe("Bad request");
		expect(JSON.stringify(http.body)).not.toContain("secret");
	});

	it("a client error with a status that has no generic message becomes 500", () => {
		expect(toHttpError(new Errors.MoleculerClientError("teapot", 418, "TEAPOT")).status).toBe(500);
	});

	it("a Mint error type with a server status is not trusted", () => {
		const http = toHttpError(new Errors.MoleculerError("secret db failure", 500, "CONFLICT"));
		expect(http.status).toBe(500);
		expect(http.body.error.message).toBe("Internal server error");
	});

	it("a generic 429 without a Mint type gets a default Retry-After", () => {
		expect(toHttpError(new Errors.MoleculerClientError("rate", 429, "RATE_LIMIT_EXCEEDED")).headers).toEqual({ "Retry-After": "60" });
	});
});

describe("toHttpError: Mint's own 503s", () => {
	it("keeps the message and Retry-After of a MintError, and stays generic for Moleculer's", () => {
		const starting = toHttpError(unavailable("Mint is starting, try again shortly", 2));
		expect([starting.status, starting.body, starting.headers]).toEqual([
			503,
			{ error: { message: "Mint is starting, try again shortly", status: 503 } },
			{ "Retry-After": "2" },
		]);
		const moleculer = toHttpError(Object.assign(new Error("Service 'x' is not available on node y"), { type: "SERVICE_UNAVAILABLE", code: 503 }));
		expect(moleculer.body.error.message).toBe("Service temporarily unavailable, try again later");
	});

	it("maps moleculer-web's untyped ServiceUnavailableError (a service not registered yet) to 503, not 500", () => {
		const http = toHttpError(new Errors.MoleculerError("Service unavailable", 503));
		expect([http.status, http.body.error.message, http.headers]).toEqual([503, "Service temporarily unavailable, try again later", { "Retry-After": "5" }]);
	});

	it.each([
		[408, "Request timeout"],
		[431, "Request headers too large"],
	])("answers %p with a generic message", (status, message) => {
		expect(toHttpError({ code: status }).body).toEqual({ error: { message, status } });
	});
});
