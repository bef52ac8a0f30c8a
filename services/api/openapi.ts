/**
 * The OpenAPI 3.1 document of Mint's HTTP surface: the one source, served
 * at GET /api/v1/openapi.json and read by the docs page (/api/docs).
 *
 * Every alias the gateway serves (routes.ts, and the pages of pages.ts),
 * and the wallet stream served beside them, is an operation here and
 * nothing else is: test/http/openapi.http.test.ts compares both ways and
 * validates the answers it sees against these schemas. Built from the
 * config, so the amount limits, the currency and the stream's bounds it
 * states are this deployment's.
 */
import { MOVEMENT_DIRECTIONS, TRANSACTION_STATUSES, TRANSACTION_TYPES } from "../../contracts/money";
import type { Config } from "../../lib/config";
import { JSON_BOUNDS } from "./json-body";

type Json = Record<string, unknown>;

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const jsonContent = (schema: Json) => ({ "application/json": { schema } });
const header = (name: string) => ({ $ref: `#/components/headers/${name}` });

/** Who may call an operation: anyone, a signed-in user, either (the answer differs), or the holder of the refresh cookie. */
type Access = "anyone" | "signed-in" | "optional" | "refresh-cookie";

const SECURITY: Record<Access, Json[]> = {
	anyone: [],
	"signed-in": [{ cookieAuth: [] }, { refreshCookie: [] }, { bearerAuth: [] }],
	optional: [{ cookieAuth: [] }, { refreshCookie: [] }, { bearerAuth: [] }, {}],
	"refresh-cookie": [{ refreshCookie: [] }],
};

/** A success answer: status, what it means, its body (JSON unless `mediaType` says otherwise; none for 204) and headers beyond X-Request-Id. */
interface Success {
	status: number;
	description: string;
	schema?: Json;
	mediaType?: string;
	headers?: Record<string, Json>;
}

interface OperationSpec {
	id: string;
	tag: string;
	summary: string;
	description?: string;
	access: Access;
	/** The JSON request body's schema (a component name). */
	body?: string;
	parameters?: Json[];
	ok: Success[];
	/** Error statuses besides those every operation of its kind has (see operation()). */
	errors?: number[];
}

/** Error answers in the SPEC shape, by status (components.responses). */
const ERROR_RESPONSES: Record<number, { name: string; description: string; retryAfter?: boolean }> = {
	400: { name: "BadRequest", description: "Validation failed (`details` names each field) or the body could not be read" },
	401: { name: "Unauthorized", description: "Not authenticated, or the credentials are wrong" },
	403: { name: "Forbidden", description: "Not allowed, or a cookie-authenticated write from another origin" },
	404: { name: "NotFound", description: "No such resource, or not one of the caller's" },
	409: { name: "Conflict", description: "Conflicts with existing data" },
	413: { name: "PayloadTooLarge", description: "The body is larger than BODY_LIMIT after decoding" },
	415: { name: "UnsupportedMediaType", description: "The body is not JSON, or its Content-Encoding is not identity, gzip, deflate or br" },
	422: { name: "UnprocessableEntity", description: "A business rule refuses the request" },
	429: { name: "TooManyRequests", description: "A rate limit: try again after `Retry-After` seconds", retryAfter: true },
	500: { name: "InternalError", description: "An unexpected error (logged with the request id); the message is generic" },
	503: {
		name: "ServiceUnavailable",
		description: "The node is starting or stopping, a dependency is down or its circuit is open: try again after `Retry-After` seconds",
		retryAfter: true,
	},
};

const errorRef = (status: number) => ({ $ref: `#/components/responses/${ERROR_RESPONSES[status].name}` });

const UNSAFE = new Set(["post", "put", "delete"]);

/**
 * One operation. Every one may answer 500 and 503; a JSON body brings
 * 400/413/415; a write may be refused 403 (the Origin check on cookie
 * authentication); a signed-in operation answers 401 without a session.
 */
function operation(method: string, spec: OperationSpec): Json {
	const errors = new Set(spec.errors ?? []);
	if (spec.body) for (const status of [400, 413, 415]) errors.add(status);
	if (UNSAFE.has(method)) errors.add(403);
	if (spec.access === "signed-in" || spec.access === "refresh-cookie") errors.add(401);
	errors.add(500);
	errors.add(503);
	const responses: Json = {};
	for (const ok of spec.ok) {
		responses[ok.status] = {
			description: ok.description,
			headers: { "X-Request-Id": header("X-Request-Id"), ...ok.headers },
			...(ok.schema ? { content: { [ok.mediaType ?? "application/json"]: { schema: ok.schema } } } : {}),
		};
	}
	for (const status of [...errors].sort((a, b) => a - b)) responses[status] = errorRef(status);
	return {
		operationId: spec.id,
		tags: [spec.tag],
		summary: spec.summary,
		...(spec.description ? { description: spec.description } : {}),
		security: SECURITY[spec.access],
		parameters: [{ $ref: "#/components/parameters/XRequestId" }, ...(spec.parameters ?? [])],
		...(spec.body ? { requestBody: { required: true, content: jsonContent(ref(spec.body)) } } : {}),
		responses,
	};
}

const SET_SESSION = { "Set-Cookie": header("SetSession") };
const CLEAR_SESSION = { "Set-Cookie": header("ClearSession") };

const pathId = (description: string) => ({ name: "id", in: "path", required: true, description, schema: { type: "string", minLength: 1, maxLength: 64 } });
const queryInt = (name: string, description: string, min: number, max: number) => ({
	name,
	in: "query",
	required: false,
	description,
	schema: { type: "integer", minimum: min, maximum: max },
});

const serviceHealth = (service: string): Json => ({
	get: operation("get", {
		id: `${service}Health`,
		tag: "Health",
		summary: `Health of the ${service} service (as v1 had)`,
		description: `The ${service} service answers after touching its own database; 503 when it is down or unreachable.`,
		access: "anyone",
		ok: [{ status: 200, description: "The service and its store answer", schema: ref("ServiceHealth") }],
	}),
});

const liveness = (id: string): Json => ({
	get: operation("get", {
		id,
		tag: "Health",
		summary: "Liveness: the process answers",
		description: "Answered even while the node starts; never touches a dependency.",
		access: "anyone",
		ok: [{ status: 200, description: "Alive", schema: ref("Liveness") }],
	}),
});

const readiness = (id: string): Json => {
	const op = operation("get", {
		id,
		tag: "Health",
		summary: "Readiness: this node started, its services answer, the transporter and cache are connected",
		access: "anyone",
		ok: [{ status: 200, description: "Ready", schema: ref("Readiness") }],
	});
	// Not ready is answered with the readiness report (which names the failing parts), not the plain error shape.
	(op.responses as Json)[503] = {
		description: "Not ready: the report names what is down or starting",
		headers: { "X-Request-Id": header("X-Request-Id"), "Retry-After": header("Retry-After") },
		content: jsonContent(ref("Readiness")),
	};
	return { get: op };
};

const IDEMPOTENCY_KEY = {
	name: "Idempotency-Key",
	in: "header",
	required: false,
	description:
		"Makes the submission safe to retry (scoped to the user, kept at least 24 h): the same key with the same body answers the original transaction (200, `Idempotent-Replayed: true`) and moves no money again; with another body it is 422.",
	schema: { type: "string", pattern: "^[\\x20-\\x7e]{1,255}$" },
};

const LAST_EVENT_ID = {
	name: "Last-Event-ID",
	in: "header",
	required: false,
	description: "Sent by EventSource when it reconnects. Nothing is replayed: the stream starts with the current wallet either way.",
	schema: { type: "string" },
};

/** GET /api/v1/wallet/stream: the event format, and this deployment's bounds. */
const walletStreamDescription = (
	config: Config,
) => `Server-sent events (\`text/event-stream\`; in a browser, \`new EventSource("/api/v1/wallet/stream")\`). Each event has an \`id:\`, an \`event:\` name and one line of JSON \`data:\`:

- \`balance\`: first the wallet as GET /wallet/user shows it (\`Wallet\`); then, after each movement of the wallet, its new balance with the movement (\`BalanceChange\`).
- \`transaction\`: each status change of a transaction the caller is a party to (\`TransactionChange\`).
- \`end\`: the server ends the stream, and says why (\`StreamEnd\`).

A comment line (\`: heartbeat\`) comes every ${config.streams.heartbeatSec} s, so that proxies keep a quiet stream open. An event's id is the same on every stream that gets it. Nothing is replayed: a reconnect, with or without \`Last-Event-ID\`, starts with the current wallet.

The stream ends with its session: a logout, logout-all or password reset (\`end\` with \`session-revoked\`: sign in again), or the expiry of the access token (\`session-expired\`: reconnect; with the cookies the refresh cookie renews the session). On shutdown the server sends \`retry:\` (1-5 s) and \`end\` with \`shutdown\`: reconnect then. Each gateway node holds at most ${config.streams.perUser} streams per user and ${config.streams.perNode} in all (429 beyond). A client that does not read what it is sent is disconnected.`;

const moneySubmitted = (what: string): Success[] => [
	{
		status: 201,
		description: `The ${what} finished (Completed or Failed) within TX_SYNC_WAIT_MS`,
		schema: ref("Transaction"),
		headers: { Location: header("Location") },
	},
	{
		status: 202,
		description: `The ${what} is still running: poll \`Location\` (GET /api/v1/transactions/{id})`,
		schema: ref("Transaction"),
		headers: { Location: header("Location") },
	},
	{
		status: 200,
		description: "An idempotent replay: the original transaction, no money moved again",
		schema: ref("Transaction"),
		headers: { "Idempotent-Replayed": header("Idempotent-Replayed") },
	},
];

const html = (description: string) => ({
	description,
	headers: { "X-Request-Id": header("X-Request-Id"), "Content-Security-Policy": header("PageCsp") },
	content: { "text/html": { schema: { type: "string" } } },
});

/** An HTML page or a static file of the pages (pages.ts): no JSON body, no session. */
function page(spec: { id: string; summary: string; description: string; parameters?: Json[]; ok: Json; errors?: number[] }): Json {
	const responses: Json = { 200: spec.ok };
	for (const status of [...(spec.errors ?? []), 500, 503]) responses[status] = errorRef(status);
	return {
		get: {
			operationId: spec.id,
			tags: ["Pages"],
			summary: spec.summary,
			description: spec.description,
			security: [],
			parameters: [{ $ref: "#/components/parameters/XRequestId" }, ...(spec.parameters ?? [])],
			responses,
		},
	};
}

/** The static files a page loads, by the URL name they are served under: a fixed list (pages.ts serves exactly these). */
export const DOCS_ASSETS = ["swagger-ui.css", "swagger-ui-bundle.js", "api-docs.js"] as const;
export const PAGE_ASSETS = ["email-links.js", "pages.css", "favicon.svg"] as const;

const assetParameter = (names: readonly string[]) => ({ name: "name", in: "path", required: true, schema: { type: "string", enum: [...names] } });
const assetResponse = (types: string[]) => ({
	description: "The file",
	headers: { "X-Request-Id": header("X-Request-Id") },
	content: Object.fromEntries(types.map(type => [type, { schema: { type: "string" } }])),
});

const TOKEN = { type: "string", minLength: 10, maxLength: 200, pattern: "^[A-Za-z0-9_-]+$", description: "The one-time token from the email link" };
const PASSWORD = { type: "string", minLength: 8, maxLength: 128, writeOnly: true };
const NAME = { type: "string", minLength: 1, maxLength: 100, description: "Printable text without `<` or `>`" };
const TIME = { type: "string", format: "date-time" };
const ID = { type: "string", minLength: 1 };

function schemas(config: Config): Json {
	const currency = { type: "string", pattern: "^[A-Z]{3}$", examples: [config.currency] };
	/** A transaction's fields, as GET /transactions/{id} and the stream's `transaction` events show them (with their times). */
	const transactionProperties = {
		id: ID,
		type: { type: "string", enum: [...TRANSACTION_TYPES] },
		status: { type: "string", enum: [...TRANSACTION_STATUSES], description: "Pending -> Processing -> Completed | Failed" },
		amount: { type: "number", exclusiveMinimum: 0, description: "Major units" },
		currency,
		userId: ID,
		fromUserId: ID,
		toUserId: ID,
		reason: { type: "string" },
	};
	const amount = (maxMinor: number) => ({
		type: "number",
		exclusiveMinimum: 0,
		maximum: maxMinor / 100,
		multipleOf: 0.01,
		description: `Major units of ${config.currency}, at most 2 decimals (e.g. 12.5); never a string`,
	});
	return {
		Error: {
			type: "object",
			description: "Every error answer. `details` only for validation. Never a stack trace or an internal message.",
			required: ["error"],
			additionalProperties: false,
			properties: {
				error: {
					type: "object",
					required: ["message", "status"],
					additionalProperties: false,
					properties: {
						message: { type: "string" },
						status: { type: "integer", minimum: 400, maximum: 599 },
						details: {
							type: "array",
							items: {
								type: "object",
								required: ["path", "message"],
								additionalProperties: false,
								properties: { path: { type: "string" }, message: { type: "string" } },
							},
						},
					},
				},
			},
		},
		User: {
			type: "object",
			description: "The caller's own user",
			required: ["id", "firstName", "lastName", "email", "emailVerifiedAt", "role", "createdAt", "updatedAt"],
			additionalProperties: false,
			properties: {
				id: ID,
				firstName: NAME,
				middleName: NAME,
				lastName: NAME,
				email: { type: "string", format: "email" },
				emailVerifiedAt: { anyOf: [TIME, { type: "null" }] },
				role: { type: "string", enum: ["user", "admin"] },
				createdAt: TIME,
				updatedAt: TIME,
			},
		},
		Profile: {
			type: "object",
			description: "Another user, as anyone signed in sees them: never the email",
			required: ["id", "firstName", "lastName", "createdAt"],
			additionalProperties: false,
			properties: { id: ID, firstName: NAME, middleName: NAME, lastName: NAME, createdAt: TIME },
		},
		DirectoryEntry: {
			type: "object",
			description: "A search result: enough to pick a recipient by email",
			required: ["id", "firstName", "lastName", "email"],
			additionalProperties: false,
			properties: { id: ID, firstName: NAME, middleName: NAME, lastName: NAME, email: { type: "string", format: "email" } },
		},
		Wallet: {
			type: "object",
			required: ["id", "userId", "balance", "currency", "createdAt", "updatedAt"],
			additionalProperties: false,
			properties: {
				id: ID,
				userId: ID,
				balance: { type: "number", minimum: 0, description: "Major units; never below zero" },
				currency,
				createdAt: TIME,
				updatedAt: TIME,
			},
		},
		BalanceChange: {
			type: "object",
			description:
				"The data of a `balance` event after a movement: the wallet's new balance, and the movement (direction `refund`: a failed transfer's debit given back)",
			required: ["id", "userId", "balance", "currency", "updatedAt", "transactionId", "direction", "amount"],
			additionalProperties: false,
			properties: {
				id: { ...ID, description: "The wallet's id" },
				userId: ID,
				balance: { type: "number", minimum: 0, description: "Major units; never below zero" },
				currency,
				updatedAt: { ...TIME, description: "When the movement happened" },
				transactionId: ID,
				direction: { type: "string", enum: [...MOVEMENT_DIRECTIONS] },
				amount: { type: "number", exclusiveMinimum: 0, description: "Major units" },
			},
		},
		TransactionChange: {
			type: "object",
			description:
				"The data of a `transaction` event: the transaction as GET /transactions/{id} shows it, without `createdAt`; `updatedAt` is when it took this status",
			required: ["id", "type", "status", "amount", "currency", "updatedAt"],
			additionalProperties: false,
			properties: { ...transactionProperties, updatedAt: TIME },
		},
		StreamEnd: {
			type: "object",
			description: "The data of an `end` event: why the server ends the stream",
			required: ["reason"],
			additionalProperties: false,
			properties: {
				reason: {
					type: "string",
					enum: ["session-revoked", "session-expired", "shutdown"],
					description: "session-revoked: sign in again; session-expired: reconnect (the refresh cookie renews the session); shutdown: reconnect after `retry:`",
				},
			},
		},
		Transaction: {
			type: "object",
			description: "A top-up has `userId`; a transfer has `fromUserId` and `toUserId`; `reason` says why one failed",
			required: ["id", "type", "status", "amount", "currency", "createdAt", "updatedAt"],
			additionalProperties: false,
			properties: { ...transactionProperties, createdAt: TIME, updatedAt: TIME },
		},
		TransactionPage: {
			type: "object",
			required: ["transactions", "total", "limit", "offset"],
			additionalProperties: false,
			properties: {
				transactions: { type: "array", items: ref("Transaction"), description: "Newest first, only the caller's" },
				total: { type: "integer", minimum: 0 },
				limit: { type: "integer", minimum: 1, maximum: 100 },
				offset: { type: "integer", minimum: 0 },
			},
		},
		HistoryEntry: {
			type: "object",
			required: ["status", "at"],
			additionalProperties: false,
			properties: { status: { type: "string", enum: [...TRANSACTION_STATUSES] }, at: TIME, reason: { type: "string" } },
		},
		Message: { type: "object", required: ["message"], additionalProperties: false, properties: { message: { type: "string" } } },
		Liveness: {
			type: "object",
			required: ["status", "nodeID", "uptimeSec"],
			additionalProperties: false,
			properties: { status: { const: "ok" }, nodeID: { type: "string" }, uptimeSec: { type: "integer", minimum: 0 } },
		},
		ServiceHealth: {
			type: "object",
			required: ["status", "service"],
			additionalProperties: false,
			properties: { status: { const: "ok" }, service: { type: "string" } },
		},
		Readiness: {
			type: "object",
			required: ["status", "checks"],
			additionalProperties: false,
			properties: {
				status: { type: "string", enum: ["ready", "unavailable"] },
				checks: {
					type: "object",
					description: "`node`, each service this node routes to, `transporter` and `cache` where used",
					additionalProperties: { type: "string", enum: ["ok", "down", "starting", "stopping"] },
				},
				error: {
					type: "object",
					required: ["message", "status"],
					additionalProperties: false,
					properties: { message: { type: "string" }, status: { const: 503 } },
				},
			},
		},
		Jwks: {
			type: "object",
			description: "The RS256 public keys that verify access tokens (RFC 7517): the current one, the next one, and retired ones until their tokens expire",
			required: ["keys"],
			additionalProperties: false,
			properties: {
				keys: {
					type: "array",
					minItems: 1,
					items: {
						type: "object",
						required: ["kty", "kid", "n", "e"],
						properties: {
							kty: { const: "RSA" },
							kid: { type: "string" },
							n: { type: "string" },
							e: { type: "string" },
							alg: { const: "RS256" },
							use: { const: "sig" },
						},
					},
				},
			},
		},
		OpenApiDocument: { type: "object", required: ["openapi", "info", "paths"], properties: { openapi: { type: "string", pattern: "^3\\.1\\." } } },

		SignupRequest: {
			type: "object",
			required: ["firstName", "lastName", "email", "password", "passwordConfirm"],
			additionalProperties: false,
			properties: {
				firstName: NAME,
				middleName: { ...NAME, minLength: 0, description: '`""` means none' },
				lastName: NAME,
				email: { type: "string", format: "email", maxLength: 254, description: "Stored lower-cased; ASCII only" },
				password: PASSWORD,
				passwordConfirm: { ...PASSWORD, description: "Equal to `password`" },
			},
		},
		LoginRequest: {
			type: "object",
			required: ["email", "password"],
			additionalProperties: false,
			properties: { email: { type: "string", minLength: 1, maxLength: 254 }, password: { type: "string", minLength: 1, maxLength: 128, writeOnly: true } },
		},
		VerifyEmailRequest: { type: "object", required: ["token"], additionalProperties: false, properties: { token: TOKEN } },
		ForgotPasswordRequest: {
			type: "object",
			required: ["email"],
			additionalProperties: false,
			properties: { email: { type: "string", format: "email", maxLength: 254 } },
		},
		ResetPasswordRequest: {
			type: "object",
			required: ["token", "password", "passwordConfirm"],
			additionalProperties: false,
			properties: { token: TOKEN, password: PASSWORD, passwordConfirm: { ...PASSWORD, description: "Equal to `password`" } },
		},
		UpdateMeRequest: {
			type: "object",
			additionalProperties: false,
			properties: { firstName: NAME, middleName: { ...NAME, minLength: 0, description: '`""` removes it' }, lastName: NAME },
		},
		TopUpRequest: { type: "object", required: ["amount"], additionalProperties: false, properties: { amount: amount(config.transactions.topUpMaxMinor) } },
		TransferRequest: {
			type: "object",
			required: ["amount", "toUserId"],
			additionalProperties: false,
			properties: { amount: amount(config.transactions.transferMaxMinor), toUserId: { type: "string", format: "uuid", description: "Not the caller" } },
		},
	};
}

function paths(config: Config): Json {
	return {
		"/api/v1/auth/signup": {
			post: operation("post", {
				id: "signup",
				tag: "Auth",
				summary: "Sign up: creates the user, logs them in (cookies) and sends the welcome email with a verification link",
				access: "anyone",
				body: "SignupRequest",
				ok: [{ status: 201, description: "The new user, logged in", schema: ref("User"), headers: { ...SET_SESSION, Location: header("Location") } }],
				errors: [409, 429],
			}),
		},
		"/api/v1/auth/login": {
			post: operation("post", {
				id: "login",
				tag: "Auth",
				summary: "Log in with email and password",
				description:
					"Wrong password and unknown email alike answer 401 `Invalid email or password`, in equal time. Attempts are counted per (account, IP) and per IP before the check; beyond the allowance 429 with `Retry-After`.",
				access: "anyone",
				body: "LoginRequest",
				ok: [{ status: 200, description: "The user, logged in", schema: ref("User"), headers: SET_SESSION }],
				errors: [401, 429],
			}),
		},
		"/api/v1/auth/logout": {
			post: operation("post", {
				id: "logout",
				tag: "Auth",
				summary: "Log out: clears the cookies, revokes the session and its refresh-token family",
				access: "optional",
				ok: [{ status: 204, description: "Logged out (also without a session)", headers: CLEAR_SESSION }],
				errors: [400],
			}),
		},
		"/api/v1/auth/logout-all": {
			post: operation("post", {
				id: "logoutAll",
				tag: "Auth",
				summary: "Log out everywhere: revokes every session of the caller",
				access: "signed-in",
				ok: [{ status: 204, description: "Every session revoked", headers: CLEAR_SESSION }],
				errors: [400],
			}),
		},
		"/api/v1/auth/refresh": {
			post: operation("post", {
				id: "refresh",
				tag: "Auth",
				summary: "Rotate the refresh token (the gateway also refreshes silently when the access token is missing or expired)",
				description:
					"A just-rotated refresh token stays valid for REFRESH_GRACE_SEC and yields the same successor; a use after that counts as reuse and revokes the whole family (401).",
				access: "refresh-cookie",
				ok: [{ status: 200, description: "New cookies", schema: ref("User"), headers: SET_SESSION }],
				errors: [400],
			}),
		},
		"/api/v1/auth/user": {
			get: operation("get", {
				id: "currentUser",
				tag: "Auth",
				summary: "The caller, or `null` without a valid session",
				description: "The v1 web client shows its login page on the literal `null`.",
				access: "optional",
				ok: [{ status: 200, description: "The caller's own user, or null", schema: { anyOf: [ref("User"), { type: "null" }] } }],
			}),
		},
		"/api/v1/auth/verify-email": {
			post: operation("post", {
				id: "verifyEmail",
				tag: "Auth",
				summary: "Verify the email address with the token from the welcome email (the page at /verify-email calls this)",
				access: "anyone",
				body: "VerifyEmailRequest",
				ok: [{ status: 200, description: "The user, with `emailVerifiedAt` set", schema: ref("User") }],
			}),
		},
		"/api/v1/auth/password/forgot": {
			post: operation("post", {
				id: "forgotPassword",
				tag: "Auth",
				summary: "Ask for a password-reset email",
				description: "The same 202 whether or not the account exists (no account enumeration). Limited per address and per IP (429).",
				access: "anyone",
				body: "ForgotPasswordRequest",
				ok: [{ status: 202, description: "If an account exists, a reset link has been sent", schema: ref("Message") }],
				errors: [429],
			}),
		},
		"/api/v1/auth/password/reset": {
			post: operation("post", {
				id: "resetPassword",
				tag: "Auth",
				summary: "Set a new password with the token from the reset email (the page at /reset-password calls this); every session ends",
				access: "anyone",
				body: "ResetPasswordRequest",
				ok: [{ status: 200, description: "The user; log in with the new password", schema: ref("User"), headers: CLEAR_SESSION }],
			}),
		},
		"/api/v1/auth/health": serviceHealth("auth"),
		"/api/v1/users": {
			get: operation("get", {
				id: "listUsers",
				tag: "Users",
				summary: "List users (admins only)",
				access: "signed-in",
				parameters: [queryInt("limit", "Page size (default 20)", 1, 100), queryInt("offset", "Users to skip", 0, 1_000_000)],
				ok: [{ status: 200, description: "A page of users", schema: { type: "array", items: ref("User") } }],
				errors: [400, 403],
			}),
		},
		"/api/v1/users/search": {
			get: operation("get", {
				id: "searchUsers",
				tag: "Users",
				summary: "Find recipients whose email starts with the text (case-insensitive, literal), at most 10, never the caller",
				description: "Not a directory: no substring match, no listing. Limited per user (429 beyond SEARCHES_PER_USER_MINUTE).",
				access: "signed-in",
				parameters: [{ name: "email", in: "query", required: true, schema: { type: "string", minLength: 3, maxLength: 254 } }],
				ok: [{ status: 200, description: "The matches (maybe none)", schema: { type: "array", maxItems: 10, items: ref("DirectoryEntry") } }],
				errors: [400, 429],
			}),
		},
		"/api/v1/users/me": {
			put: operation("put", {
				id: "updateMe",
				tag: "Users",
				summary: "Change the caller's names",
				access: "signed-in",
				body: "UpdateMeRequest",
				ok: [{ status: 200, description: "The updated user", schema: ref("User") }],
			}),
		},
		"/api/v1/users/{id}": {
			get: operation("get", {
				id: "getUser",
				tag: "Users",
				summary: "Another user's profile (never the email)",
				access: "signed-in",
				parameters: [pathId("The user id")],
				ok: [{ status: 200, description: "The profile", schema: ref("Profile") }],
				errors: [400, 404],
			}),
		},
		"/api/v1/wallet/user": {
			get: operation("get", {
				id: "myWallet",
				tag: "Wallet",
				summary: "The caller's wallet (created at once if the signup event has not arrived yet)",
				access: "signed-in",
				ok: [{ status: 200, description: "The wallet", schema: ref("Wallet") }],
			}),
		},
		"/api/v1/wallet/stream": {
			get: operation("get", {
				id: "walletStream",
				tag: "Wallet",
				summary: "The caller's wallet as it changes: server-sent events (balance, transaction, end)",
				description: walletStreamDescription(config),
				access: "signed-in",
				parameters: [LAST_EVENT_ID],
				ok: [
					{
						status: 200,
						description: "The stream: open until the session ends, the client leaves or the node stops",
						mediaType: "text/event-stream",
						schema: {
							type: "string",
							description:
								"`balance`, `transaction` and `end` events (data: Wallet, then BalanceChange; TransactionChange; StreamEnd) and `: heartbeat` comments",
							examples: [
								'id: 0b6f3c1e-...\nevent: balance\ndata: {"id":"...","userId":"...","balance":24.5,"currency":"USD","createdAt":"...","updatedAt":"..."}\n\n: heartbeat\n\n',
							],
						},
					},
				],
				errors: [429],
			}),
		},
		"/api/v1/wallet/health": serviceHealth("wallet"),
		"/api/v1/transactions/topup": {
			post: operation("post", {
				id: "topUp",
				tag: "Transactions",
				summary: "Top up the caller's wallet",
				access: "signed-in",
				body: "TopUpRequest",
				parameters: [IDEMPOTENCY_KEY],
				ok: moneySubmitted("top-up"),
				errors: [422],
			}),
		},
		"/api/v1/transactions/transfer": {
			post: operation("post", {
				id: "transfer",
				tag: "Transactions",
				summary: "Send money to another user",
				description: "400 to oneself, 404 for an unknown recipient, 422 for insufficient funds at request time or a reused Idempotency-Key.",
				access: "signed-in",
				body: "TransferRequest",
				parameters: [IDEMPOTENCY_KEY],
				ok: moneySubmitted("transfer"),
				errors: [404, 422],
			}),
		},
		"/api/v1/transactions": {
			get: operation("get", {
				id: "listTransactions",
				tag: "Transactions",
				summary: "The caller's transactions, newest first (also at /api/v1/transactions/, as the v1 client calls it)",
				access: "signed-in",
				parameters: [
					queryInt("limit", "Page size (default 20)", 1, 100),
					queryInt("offset", "Transactions to skip", 0, 1_000_000),
					{ name: "type", in: "query", required: false, schema: { type: "string", enum: [...TRANSACTION_TYPES] } },
					{ name: "status", in: "query", required: false, schema: { type: "string", enum: [...TRANSACTION_STATUSES] } },
				],
				ok: [{ status: 200, description: "A page of transactions", schema: ref("TransactionPage") }],
				errors: [400],
			}),
		},
		"/api/v1/transactions/health": serviceHealth("transactions"),
		"/api/v1/transactions/{id}": {
			get: operation("get", {
				id: "getTransaction",
				tag: "Transactions",
				summary: "One transaction, if the caller is a party to it",
				access: "signed-in",
				parameters: [pathId("The transaction id")],
				ok: [{ status: 200, description: "The transaction", schema: ref("Transaction") }],
				errors: [400, 404],
			}),
		},
		"/api/v1/transactions/{id}/history": {
			get: operation("get", {
				id: "transactionHistory",
				tag: "Transactions",
				summary: "A transaction's recorded state changes, oldest first, for a party",
				access: "signed-in",
				parameters: [pathId("The transaction id")],
				ok: [{ status: 200, description: "The history", schema: { type: "array", minItems: 1, items: ref("HistoryEntry") } }],
				errors: [400, 404],
			}),
		},
		"/api/v1/notifications/health": serviceHealth("notifications"),
		"/api/v1/health": liveness("livenessV1"),
		"/api/v1/ready": readiness("readinessV1"),
		"/health": liveness("liveness"),
		"/ready": readiness("readiness"),
		"/.well-known/jwks.json": {
			get: operation("get", {
				id: "jwks",
				tag: "Auth",
				summary: "The public keys that verify access tokens",
				access: "anyone",
				ok: [{ status: 200, description: "The JWKS", schema: ref("Jwks"), headers: { "Cache-Control": header("PublicCache") } }],
			}),
		},
		"/api/v1/openapi.json": {
			get: operation("get", {
				id: "openApiDocument",
				tag: "Meta",
				summary: "This document (OpenAPI 3.1)",
				access: "anyone",
				ok: [{ status: 200, description: "The document", schema: ref("OpenApiDocument") }],
			}),
		},
		"/api/docs": page({
			id: "apiDocs",
			summary: "This documentation, as a page (Swagger UI, served from this node)",
			description: "Loads its scripts and styles from /api/docs/{name} and the document from /api/v1/openapi.json.",
			ok: html("The docs page"),
		}),
		"/api/docs/{name}": page({
			id: "apiDocsAsset",
			summary: "A static file of the docs page",
			description: "A fixed list of files; any other name is 404.",
			parameters: [assetParameter(DOCS_ASSETS)],
			ok: assetResponse(["text/css", "text/javascript"]),
			errors: [404],
		}),
		"/verify-email": page({
			id: "verifyEmailPage",
			summary: "The page the verification link in the welcome email opens",
			description:
				"Shows a button that POSTs the token to /api/v1/auth/verify-email. Opening the page changes nothing (mail scanners prefetch links): only the button does. The token is read by the page's script, never echoed into the HTML.",
			parameters: [{ name: "token", in: "query", required: false, schema: { type: "string" } }],
			ok: html("The page"),
		}),
		"/reset-password": page({
			id: "resetPasswordPage",
			summary: "The page the link in the password-reset email opens",
			description:
				"A form (new password and confirmation) that POSTs the token to /api/v1/auth/password/reset, then tells the user to log in. Opening the page changes nothing.",
			parameters: [{ name: "token", in: "query", required: false, schema: { type: "string" } }],
			ok: html("The page"),
		}),
		"/assets/{name}": page({
			id: "pageAsset",
			summary: "The script, stylesheet and icon of the email-link pages (the docs page uses the icon too)",
			description: "A fixed list of files; any other name is 404.",
			parameters: [assetParameter(PAGE_ASSETS)],
			ok: assetResponse(["text/css", "text/javascript", "image/svg+xml"]),
			errors: [404],
		}),
	};
}

const DESCRIPTION = `Mint's HTTP API (v1), compatible with the Mint v1 web client.

- **JSON** in and out. Request bodies are JSON objects, at most BODY_LIMIT bytes after Content-Encoding (identity, gzip, deflate, br), nested at most ${JSON_BOUNDS.maxDepth} levels.
- **Errors** always look like \`{"error": {"message": "...", "status": 400, "details": [{"path": "amount", "message": "..."}]}}\` (\`details\` only for validation). 429 and 503 carry \`Retry-After\`.
- **Request ids**: every response carries \`X-Request-Id\`: the caller's when it is 1-128 of \`[A-Za-z0-9._:-]\`, else the trace id of a valid W3C \`traceparent\`, else a new one. It is in every log line of the request.
- **Sessions**: browsers use the HttpOnly cookies \`access.token\` (15 min) and \`refresh.token\` (Path=/api/v1, rotated on use); the gateway refreshes silently when only the refresh cookie is valid. Other clients may send \`Authorization: Bearer <access token>\`.
- **Cross-site writes**: a POST/PUT/DELETE that a cookie authenticates needs \`Origin\` equal to the page's own origin (or listed in ALLOWED_ORIGINS) or, without Origin, \`Sec-Fetch-Site: same-origin\`; otherwise 403. Bearer requests are exempt.
- **Money**: amounts are JSON numbers in major units with at most 2 decimals; balances never go below zero. Money submissions accept an \`Idempotency-Key\`.`;

/** The document, for this deployment's config. */
export function openApiDocument(config: Config): Json {
	return {
		openapi: "3.1.1",
		info: { title: "Mint API", version: "1.0.0", description: DESCRIPTION, license: { name: "MIT", identifier: "MIT" } },
		servers: [{ url: "/", description: "This Mint (a gateway node, or the nginx in front of them)" }],
		tags: [
			{ name: "Auth", description: "Sign up, sessions, email verification, password reset, signing keys" },
			{ name: "Users", description: "The caller's profile, other users' profiles, recipient search" },
			{ name: "Wallet" },
			{ name: "Transactions", description: "Top-ups and transfers: submission, history" },
			{ name: "Health", description: "Liveness and readiness for supervisors and load balancers" },
			{ name: "Meta", description: "This document" },
			{ name: "Pages", description: "HTML pages (email links, these docs) and their static files" },
		],
		paths: paths(config),
		components: {
			schemas: schemas(config),
			securitySchemes: {
				cookieAuth: {
					type: "apiKey",
					in: "cookie",
					name: "access.token",
					description: "The access token (RS256 JWT) in its HttpOnly cookie, set by signup, login and refresh",
				},
				refreshCookie: {
					type: "apiKey",
					in: "cookie",
					name: "refresh.token",
					description: "The refresh token's cookie (Path=/api/v1): with it alone, the gateway refreshes the session silently and sets new cookies",
				},
				bearerAuth: { type: "http", scheme: "bearer", bearerFormat: "JWT", description: "The access token, for clients that are not browsers" },
			},
			parameters: {
				XRequestId: {
					name: "X-Request-Id",
					in: "header",
					required: false,
					description: "Your id for this request (else one is made): it comes back in the X-Request-Id header and is in every log line",
					schema: { type: "string", pattern: "^[A-Za-z0-9._:-]{1,128}$" },
				},
			},
			headers: {
				"X-Request-Id": { description: "The request id", required: true, schema: { type: "string", minLength: 1, maxLength: 128 } },
				"Retry-After": { description: "Seconds to wait before trying again", required: true, schema: { type: "string", pattern: "^[0-9]+$" } },
				Location: { description: "Where the resource is read (or polled)", required: true, schema: { type: "string" } },
				"Idempotent-Replayed": { description: "This answer replays an earlier one", required: true, schema: { const: "true" } },
				SetSession: { description: "The `access.token` and `refresh.token` cookies (HttpOnly, SameSite=Strict)", required: true, schema: { type: "string" } },
				ClearSession: { description: "Both session cookies, cleared", required: true, schema: { type: "string" } },
				PublicCache: { description: "May be cached (public, max-age)", required: true, schema: { type: "string", pattern: "^public, max-age=[0-9]+$" } },
				PageCsp: { description: "Scripts and styles from this origin only", required: true, schema: { type: "string", pattern: "script-src 'self'" } },
			},
			responses: Object.fromEntries(
				Object.values(ERROR_RESPONSES).map(({ name, description, retryAfter }) => [
					name,
					{
						description,
						headers: { "X-Request-Id": header("X-Request-Id"), ...(retryAfter ? { "Retry-After": header("Retry-After") } : {}) },
						content: jsonContent(ref("Error")),
					},
				]),
			),
		},
	};
}
