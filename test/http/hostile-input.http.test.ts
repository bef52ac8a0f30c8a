/**
 * Hostile input through the gateway: every case gets its exact status in the
 * SPEC error shape, creates and moves nothing, and leaves the process serving.
 * The findings of the robustness review are here as regression cases.
 */
import crypto from "node:crypto";
import zlib from "node:zlib";
import { SignJWT, exportJWK, generateKeyPair } from "jose";
import type { Response } from "supertest";
import { newPerson, signup, signupBody, type Session } from "../helpers/http";
import { expectInvariants, topUp } from "../helpers/money";
import { startTestMint, type TestMint } from "../helpers/mint";
import { rawRequest } from "../helpers/raw-http";

let mint: TestMint;
let alice: Session & { person: ReturnType<typeof newPerson> };
let bob: Session & { person: ReturnType<typeof newPerson> };
let origin: string;

beforeAll(async () => {
	mint = await startTestMint();
	[alice, bob] = [await signup(mint), await signup(mint)];
	expect((await topUp(mint, alice, 100)).status).toBe(201);
	origin = `http://127.0.0.1:${mint.server.address().port}`;
});
afterAll(() => mint.stop());

const service = (name: string) => mint.broker.getLocalService(name) as any;

/** What a hostile request must not change: accounts, sessions, transactions, balances. */
async function world() {
	const wallets = await service("wallet").adapter.find({ query: {} });
	return {
		users: await service("auth").adapter.count({}),
		sessions: await service("auth").stores.sessions.count({}),
		transactions: await service("transactions").adapter.count({}),
		balances: Object.fromEntries(wallets.map((w: { userId: string; balanceMinor: number }) => [w.userId, w.balanceMinor])),
	};
}

/** The SPEC error shape, exactly, with nothing internal in it. */
function expectError(res: Response, status: number, message?: string | RegExp, detailPath?: string) {
	expect([res.status, res.body?.error?.status]).toEqual([status, status]);
	expect(res.headers["content-type"]).toMatch(/^application\/json/);
	expect(res.headers["x-request-id"]).toMatch(/^[A-Za-z0-9._:-]{1,128}$/);
	expect(Object.keys(res.body)).toEqual(["error"]);
	const keys = Object.keys(res.body.error).sort();
	expect(keys).toEqual(detailPath === undefined ? expect.arrayContaining(["message", "status"]) : ["details", "message", "status"]);
	expect(keys.every(k => ["details", "message", "status"].includes(k))).toBe(true);
	expect(res.body.error.message).not.toMatch(/node_modules|\n\s+at |Error:|stack|Unexpected token/);
	if (message instanceof RegExp) expect(res.body.error.message).toMatch(message);
	else if (message !== undefined) expect(res.body.error.message).toBe(message);
	if (detailPath !== undefined) expect(res.body.error.details.map((d: { path: string }) => d.path)).toContain(detailPath);
}

async function expectStillServing() {
	const health = await mint.http.get("/api/v1/health");
	expect([health.status, health.body.status]).toEqual([200, "ok"]);
}

type Who = "anonymous" | "alice-cookie" | "alice-bearer";
interface Case {
	method: "GET" | "POST" | "PUT";
	path: string;
	who?: Who;
	headers?: Record<string, string>;
	/** A raw string or Buffer is sent as it is; anything else as JSON. */
	body?: unknown;
	status: number;
	message?: string | RegExp;
	detailPath?: string;
	/** Send without the Sec-Fetch-Site: same-origin a browser on Mint's page adds. */
	notFromOurPage?: boolean;
}

function send(c: Case) {
	let req = mint.http[c.method.toLowerCase() as "get" | "post" | "put"](c.path);
	if (c.who === "alice-cookie") req = req.set("Cookie", alice.cookie).set("Origin", origin);
	if (c.who === "alice-bearer") req = req.set("Authorization", `Bearer ${alice.access}`);
	const raw = typeof c.body === "string" || Buffer.isBuffer(c.body);
	// Raw bytes go as they are: superagent would JSON-encode a Buffer sent as application/json.
	if (raw) req = req.set("Content-Type", "application/json").serialize(body => body);
	for (const [name, value] of Object.entries(c.headers ?? {})) req = req.set(name, value);
	if (c.notFromOurPage) req = req.unset("Sec-Fetch-Site");
	return c.body === undefined ? req : req.send(raw ? (c.body as string) : (c.body as object));
}

const nested = (open: string, inner: string, close: string, levels: number) => open.repeat(levels) + inner + close.repeat(levels);
const OPERATOR = { $gt: "" };
const validSignup = () => signupBody(newPerson());
const MALFORMED = "Malformed JSON body";
const TOO_DEEP = "The JSON body is nested deeper than 32 levels";
const TOO_WIDE = "An object or array in the JSON body has more than 1000 entries";
const TOO_LARGE = "Request body too large";
const NOT_JSON = "Content-Type must be application/json";
const BAD_ENCODING = "Content-Encoding must be identity, gzip, deflate or br";

const SIGNUP = "/api/v1/auth/signup";
const LOGIN = "/api/v1/auth/login";
const TOPUP = "/api/v1/transactions/topup";
const TRANSFER = "/api/v1/transactions/transfer";

const cases: [string, () => Case][] = [
	// Malformed and truncated JSON
	["truncated JSON", () => ({ method: "POST", path: LOGIN, body: '{"email": "a@b.co", "password": "x', status: 400, message: MALFORMED })],
	[
		"JSON with trailing garbage",
		() => ({ method: "POST", path: TOPUP, who: "alice-bearer", body: '{"amount": 5} {"amount": 5}', status: 400, message: MALFORMED }),
	],
	["a lone null body", () => ({ method: "POST", path: TOPUP, who: "alice-bearer", body: "null", status: 400, message: MALFORMED })],
	["a bare number body", () => ({ method: "POST", path: TOPUP, who: "alice-bearer", body: "5", status: 400, message: MALFORMED })],
	[
		"an array body",
		() => ({ method: "POST", path: TOPUP, who: "alice-bearer", body: '[{"amount": 5}]', status: 400, message: "Validation failed", detailPath: "" }),
	],
	["single-quoted JSON", () => ({ method: "POST", path: LOGIN, body: "{'email': 'a@b.co'}", status: 400, message: MALFORMED })],
	["NaN and Infinity literals", () => ({ method: "POST", path: TOPUP, who: "alice-bearer", body: '{"amount": NaN}', status: 400, message: MALFORMED })],
	[
		"a raw control character in a string",
		() => ({ method: "POST", path: LOGIN, body: '{"email": "a\u0001@b.co", "password": "x"}', status: 400, message: MALFORMED }),
	],
	["a lone UTF-8 continuation byte", () => ({ method: "POST", path: LOGIN, body: Buffer.from([0x7b, 0x22, 0x80, 0x22, 0x3a, 0x31, 0x7d]), status: 400 })],
	[
		"a JSON body declared as text/plain",
		() => ({
			method: "POST",
			path: TOPUP,
			who: "alice-bearer",
			headers: { "Content-Type": "text/plain" },
			body: '{"amount": 5}',
			status: 415,
			message: NOT_JSON,
		}),
	],
	[
		"a JSON body without a Content-Type",
		() => ({ method: "POST", path: LOGIN, headers: { "Content-Type": "" }, body: '{"email": "a@b.co"}', status: 415, message: NOT_JSON }),
	],
	[
		"a form body",
		() => ({
			method: "POST",
			path: SIGNUP,
			headers: { "Content-Type": "application/x-www-form-urlencoded" },
			body: "email=a@b.co",
			status: 415,
			message: NOT_JSON,
		}),
	],
	[
		"a latin-1 charset",
		() => ({
			method: "POST",
			path: LOGIN,
			headers: { "Content-Type": "application/json; charset=iso-8859-1" },
			body: '{"email": "a@b.co"}',
			status: 415,
			message: "The body must be UTF-8 JSON",
		}),
	],

	// Deep, wide and huge
	[
		"the finding: a 90 kB login whose email is 15,000 nested objects",
		() => ({ method: "POST", path: LOGIN, body: `{"email":${nested('{"a":', "1", "}", 15_000)},"password":"x"}`, status: 400, message: TOO_DEEP }),
	],
	[
		"the finding: a top-up of 50,000 nested arrays",
		() => ({ method: "POST", path: TOPUP, who: "alice-bearer", body: `{"amount":${nested("[", "", "]", 50_000)}}`, status: 400, message: TOO_DEEP }),
	],
	["33 levels of nesting", () => ({ method: "POST", path: SIGNUP, body: `{"firstName":${nested("[", "1", "]", 32)}}`, status: 400, message: TOO_DEEP })],
	["unbalanced opening brackets only", () => ({ method: "POST", path: TOPUP, who: "alice-bearer", body: "[".repeat(40_000), status: 400, message: TOO_DEEP })],
	[
		"an array of 5,000 items",
		() => ({ method: "POST", path: TOPUP, who: "alice-bearer", body: { amount: Array.from({ length: 5000 }, () => 1) }, status: 400, message: TOO_WIDE }),
	],
	[
		"an object of 10,000 keys",
		() => ({ method: "POST", path: SIGNUP, body: Object.fromEntries(Array.from({ length: 10_000 }, (_, i) => [`k${i}`, 0])), status: 400, message: TOO_WIDE }),
	],
	["a 200 kB string", () => ({ method: "POST", path: LOGIN, body: { email: "a@b.co", password: "p".repeat(200_000) }, status: 413, message: TOO_LARGE })],
	[
		"a 90 kB first name",
		() => ({
			method: "POST",
			path: SIGNUP,
			body: { ...validSignup(), firstName: "A".repeat(90_000) },
			status: 400,
			message: "Validation failed",
			detailPath: "firstName",
		}),
	],
	[
		"a Content-Length over the limit",
		() => ({ method: "POST", path: TOPUP, who: "alice-bearer", body: `${" ".repeat(120 * 1024)}{"amount": 5}`, status: 413, message: TOO_LARGE }),
	],

	// Content-Encoding
	[
		"gzip declared on a body that is not compressed",
		() => ({
			method: "POST",
			path: TOPUP,
			who: "alice-bearer",
			headers: { "Content-Encoding": "gzip" },
			body: '{"amount": 5}',
			status: 400,
			message: "The request body does not decode as gzip",
		}),
	],
	[
		"deflate declared on a body that is not compressed",
		() => ({
			method: "POST",
			path: LOGIN,
			headers: { "Content-Encoding": "deflate" },
			body: '{"email": "a@b.co"}',
			status: 400,
			message: "The request body does not decode as deflate",
		}),
	],
	[
		"br declared on a body that is not compressed",
		() => ({
			method: "POST",
			path: LOGIN,
			headers: { "Content-Encoding": "br" },
			body: '{"email": "a@b.co"}',
			status: 400,
			message: "The request body does not decode as br",
		}),
	],
	[
		"a truncated gzip body",
		() => ({
			method: "POST",
			path: TOPUP,
			who: "alice-bearer",
			headers: { "Content-Encoding": "gzip" },
			body: zlib.gzipSync('{"amount": 5}').subarray(0, 12),
			status: 400,
			message: "The request body does not decode as gzip",
		}),
	],
	[
		"an encoding Mint does not accept",
		() => ({
			method: "POST",
			path: TOPUP,
			who: "alice-bearer",
			headers: { "Content-Encoding": "compress" },
			body: '{"amount": 5}',
			status: 415,
			message: BAD_ENCODING,
		}),
	],
	[
		"gzip applied twice",
		() => ({
			method: "POST",
			path: TOPUP,
			who: "alice-bearer",
			headers: { "Content-Encoding": "gzip, gzip" },
			body: zlib.gzipSync(zlib.gzipSync('{"amount": 5}')),
			status: 415,
			message: BAD_ENCODING,
		}),
	],
	[
		"a gzip bomb: 20 MB of spaces in 20 kB",
		() => ({
			method: "POST",
			path: TOPUP,
			who: "alice-bearer",
			headers: { "Content-Encoding": "gzip" },
			body: zlib.gzipSync(Buffer.alloc(20 * 1024 * 1024, " ")),
			status: 413,
			message: TOO_LARGE,
		}),
	],
	[
		"a gzip body nested too deep",
		() => ({
			method: "POST",
			path: LOGIN,
			headers: { "Content-Encoding": "gzip" },
			body: zlib.gzipSync(`{"email":${nested("[", "", "]", 10_000)}}`),
			status: 400,
			message: TOO_DEEP,
		}),
	],

	// Prototype keys
	[
		"__proto__ at the top of a top-up",
		() => ({ method: "POST", path: TOPUP, who: "alice-bearer", body: '{"__proto__": {"amount": 5}, "amount": 1}', status: 400, detailPath: "__proto__" }),
	],
	[
		"constructor.prototype inside a transfer",
		() => ({
			method: "POST",
			path: TRANSFER,
			who: "alice-bearer",
			body: { amount: 1, toUserId: bob.user.id, meta: { constructor: { prototype: { isAdmin: true } } } },
			status: 400,
			detailPath: "meta.constructor",
		}),
	],
	["prototype in a signup", () => ({ method: "POST", path: SIGNUP, body: { ...validSignup(), prototype: {} }, status: 400, detailPath: "prototype" })],
	[
		"__proto__ in PUT /users/me",
		() => ({ method: "PUT", path: "/api/v1/users/me", who: "alice-bearer", body: '{"__proto__": {"role": "admin"}}', status: 400, detailPath: "__proto__" }),
	],
	[
		"a query parameter given twice",
		() => ({ method: "GET", path: "/api/v1/transactions?limit=1&limit=2", who: "alice-bearer", status: 400, detailPath: "limit" }),
	],

	// Operator objects in every field
	...(["firstName", "lastName", "email", "password", "middleName"] as const).map((field): [string, () => Case] => [
		`an operator object as signup ${field}`,
		() => ({ method: "POST", path: SIGNUP, body: { ...validSignup(), [field]: OPERATOR }, status: 400, detailPath: field }),
	]),
	[
		"an operator object as login email",
		() => ({ method: "POST", path: LOGIN, body: { email: OPERATOR, password: "correct horse battery" }, status: 400, detailPath: "email" }),
	],
	[
		"an operator object as login password",
		() => ({ method: "POST", path: LOGIN, body: { email: alice.person.email, password: { $ne: "" } }, status: 400, detailPath: "password" }),
	],
	[
		"an operator object as a top-up amount",
		() => ({ method: "POST", path: TOPUP, who: "alice-bearer", body: { amount: { $gt: 0 } }, status: 400, detailPath: "amount" }),
	],
	[
		"an operator object as a transfer recipient",
		() => ({ method: "POST", path: TRANSFER, who: "alice-bearer", body: { amount: 1, toUserId: { $ne: null } }, status: 400, detailPath: "toUserId" }),
	],
	[
		"an operator object as a verification token",
		() => ({ method: "POST", path: "/api/v1/auth/verify-email", body: { token: { $exists: true } }, status: 400, detailPath: "token" }),
	],
	[
		"an operator object as a reset token",
		() => ({
			method: "POST",
			path: "/api/v1/auth/password/reset",
			body: { token: { $ne: "" }, password: "new password 1", passwordConfirm: "new password 1" },
			status: 400,
			detailPath: "token",
		}),
	],
	[
		"an operator object as a forgot-password email",
		() => ({ method: "POST", path: "/api/v1/auth/password/forgot", body: { email: { $regex: ".*" } }, status: 400, detailPath: "email" }),
	],
	[
		"an operator object as a new first name",
		() => ({ method: "PUT", path: "/api/v1/users/me", who: "alice-bearer", body: { firstName: { $set: "x" } }, status: 400, detailPath: "firstName" }),
	],
	[
		"an operator in the search query",
		() => ({ method: "GET", path: "/api/v1/users/search?email[$regex]=.*", who: "alice-bearer", status: 400, detailPath: "email" }),
	],
	[
		"an operator in the listing limit",
		() => ({ method: "GET", path: "/api/v1/transactions?limit[$gt]=0", who: "alice-bearer", status: 400, detailPath: "limit" }),
	],
	[
		"an operator in the listing status",
		() => ({ method: "GET", path: "/api/v1/transactions?status[$ne]=Failed", who: "alice-bearer", status: 400, detailPath: "status" }),
	],

	// Unicode tricks
	[
		"a fullwidth @ in an email",
		() => ({ method: "POST", path: SIGNUP, body: { ...validSignup(), email: "eve\uff20example.com" }, status: 400, detailPath: "email" }),
	],
	[
		"a Cyrillic look-alike letter in an email",
		() => ({ method: "POST", path: SIGNUP, body: { ...validSignup(), email: `\u0430${alice.person.email.slice(1)}` }, status: 400, detailPath: "email" }),
	],
	[
		"a zero-width space in an email",
		() => ({ method: "POST", path: SIGNUP, body: { ...validSignup(), email: `eve\u200b${Date.now()}@example.com` }, status: 400, detailPath: "email" }),
	],
	[
		"a right-to-left override in a name",
		() => ({ method: "POST", path: SIGNUP, body: { ...validSignup(), lastName: "Smith\u202egnp.exe" }, status: 400, detailPath: "lastName" }),
	],
	[
		"a zero-width space as a whole name",
		() => ({ method: "POST", path: SIGNUP, body: { ...validSignup(), firstName: "\u200b" }, status: 400, detailPath: "firstName" }),
	],
	[
		"a lone surrogate in a name",
		() => ({
			method: "POST",
			path: SIGNUP,
			body: `{"firstName":"\\ud800","lastName":"L","email":"lone${Date.now()}@example.com","password":"correct horse","passwordConfirm":"correct horse"}`,
			status: 400,
			detailPath: "firstName",
		}),
	],
	[
		"a NUL in a password",
		() => ({
			method: "POST",
			path: LOGIN,
			body: { email: alice.person.email, password: "correct horse battery\u0000" },
			status: 401,
			message: "Invalid email or password",
		}),
	],
	[
		"a newline in a new last name",
		() => ({
			method: "PUT",
			path: "/api/v1/users/me",
			who: "alice-bearer",
			body: { lastName: "Lovelace\r\nSet-Cookie: x=1" },
			status: 400,
			detailPath: "lastName",
		}),
	],

	// Path traversal and odd ids
	[
		"path traversal in a transaction id",
		() => ({ method: "GET", path: "/api/v1/transactions/..%2F..%2F..%2Fetc%2Fpasswd", who: "alice-bearer", status: 404, message: "Transaction not found" }),
	],
	[
		"path traversal in a user id",
		() => ({ method: "GET", path: "/api/v1/users/..%2Fauth%2Fusers.db", who: "alice-bearer", status: 404, message: "User not found" }),
	],
	[
		"dot segments in the path",
		() => ({ method: "GET", path: "/api/v1/transactions/../../../etc/passwd", who: "alice-bearer", status: 404, message: "Not found" }),
	],
	[
		"a NUL in a transaction id",
		() => ({ method: "GET", path: "/api/v1/transactions/abc%00def", who: "alice-bearer", status: 404, message: "Transaction not found" }),
	],
	["a broken percent-escape in an id", () => ({ method: "GET", path: "/api/v1/transactions/%E0%A4%A", who: "alice-bearer", status: 400 })],
	[
		"a 300-character transaction id",
		() => ({ method: "GET", path: `/api/v1/transactions/${"a".repeat(300)}/history`, who: "alice-bearer", status: 400, detailPath: "id" }),
	],

	// Tokens and origins
	["no session on a money route", () => ({ method: "POST", path: TOPUP, body: { amount: 5 }, status: 401 })],
	["a garbage Bearer token", () => ({ method: "POST", path: TOPUP, headers: { Authorization: "Bearer not.a.token" }, body: { amount: 5 }, status: 401 })],
	[
		"a Bearer token with alg none",
		() => ({ method: "POST", path: TOPUP, headers: { Authorization: `Bearer ${unsignedToken(alice.user.id)}` }, body: { amount: 5 }, status: 401 }),
	],
	[
		"alice's token with its payload swapped for bob's",
		() => ({
			method: "POST",
			path: TRANSFER,
			headers: { Authorization: `Bearer ${swappedPayload(bob.access, alice.access)}` },
			body: { amount: 5, toUserId: bob.user.id },
			status: 401,
		}),
	],
	[
		"a cookie POST from a foreign Origin",
		() => ({
			method: "POST",
			path: TOPUP,
			headers: { Cookie: alice.cookie, Origin: "https://evil.example" },
			body: { amount: 5 },
			status: 403,
			message: "Origin not allowed",
		}),
	],
	[
		"a cookie POST from the null Origin",
		() => ({
			method: "POST",
			path: TRANSFER,
			headers: { Cookie: alice.cookie, Origin: "null" },
			body: { amount: 5, toUserId: bob.user.id },
			status: 403,
			message: "Origin not allowed",
		}),
	],
	[
		"a cookie POST a browser marks cross-site",
		() => ({
			method: "POST",
			path: TOPUP,
			headers: { Cookie: alice.cookie, "Sec-Fetch-Site": "cross-site" },
			body: { amount: 5 },
			status: 403,
			message: "Origin not allowed",
		}),
	],
	[
		"a cookie POST with neither Origin nor Sec-Fetch-Site",
		() => ({
			method: "POST",
			path: TOPUP,
			headers: { Cookie: alice.cookie },
			notFromOurPage: true,
			body: { amount: 5 },
			status: 403,
			message: "Origin not allowed",
		}),
	],
	[
		"a cookie PUT from a same-site page",
		() => ({
			method: "PUT",
			path: "/api/v1/users/me",
			headers: { Cookie: alice.cookie, "Sec-Fetch-Site": "same-site" },
			body: { firstName: "Mallory" },
			status: 403,
			message: "Origin not allowed",
		}),
	],
	[
		"an Origin differing only by port",
		() => ({
			method: "POST",
			path: TOPUP,
			headers: { Cookie: alice.cookie, Origin: `${origin}1` },
			body: { amount: 5 },
			status: 403,
			message: "Origin not allowed",
		}),
	],

	// Amounts
	...(
		[
			["a negative amount", -5],
			["a zero amount", 0],
			["three decimals", 1.005],
			["an exponent hiding decimals", "1e-7"],
			["an exponent over every limit", "1e21"],
			["a number JSON turns into Infinity", "1e400"],
			["a number past 2^53", "9007199254740993"],
			["a cent over the top-up limit", "100000.01"],
			["an amount as a string", '"10.00"'],
			["an amount as a boolean", "true"],
			["an amount as null", "null"],
			["an amount as an array", "[10]"],
			["negative zero", "-0"],
		] as const
	).map(([name, amount]): [string, () => Case] => [
		`${name} (top-up)`,
		() => ({ method: "POST", path: TOPUP, who: "alice-bearer", body: `{"amount": ${amount}}`, status: 400, detailPath: "amount" }),
	]),
	[
		"a transfer of more than the transfer limit",
		() => ({ method: "POST", path: TRANSFER, who: "alice-bearer", body: { amount: 50_000.01, toUserId: bob.user.id }, status: 400, detailPath: "amount" }),
	],
	["a transfer to oneself", () => ({ method: "POST", path: TRANSFER, who: "alice-bearer", body: { amount: 1, toUserId: alice.user.id }, status: 400 })],
	["a transfer to nobody", () => ({ method: "POST", path: TRANSFER, who: "alice-bearer", body: { amount: 1, toUserId: crypto.randomUUID() }, status: 404 })],
	[
		"a transfer of more than the balance",
		() => ({ method: "POST", path: TRANSFER, who: "alice-bearer", body: { amount: 100.01, toUserId: bob.user.id }, status: 422 }),
	],
	[
		"an Idempotency-Key of 256 characters",
		() => ({ method: "POST", path: TOPUP, who: "alice-bearer", headers: { "Idempotency-Key": "k".repeat(256) }, body: { amount: 5 }, status: 400 }),
	],
	[
		"an Idempotency-Key with a non-ASCII character",
		() => ({ method: "POST", path: TOPUP, who: "alice-bearer", headers: { "Idempotency-Key": "caf\u00e9" }, body: { amount: 5 }, status: 400 }),
	],
];

/** A token with alg "none": no signature at all. */
function unsignedToken(sub: string): string {
	const now = Math.floor(Date.now() / 1000);
	const part = (v: object) => Buffer.from(JSON.stringify(v)).toString("base64url");
	return `${part({ alg: "none", typ: "JWT" })}.${part({ sub, iss: "mint", aud: "mint-api", iat: now, exp: now + 600, jti: "x" })}.`;
}

/** One token's header and signature around another token's payload. */
function swappedPayload(payloadFrom: string, rest: string): string {
	const [header, , signature] = rest.split(".");
	return `${header}.${payloadFrom.split(".")[1]}.${signature}`;
}

describe("hostile requests through the gateway", () => {
	it("has the cases the review asked for", () => {
		expect(cases.length).toBeGreaterThanOrEqual(60);
	});

	it.each(cases)("%s: exact status, SPEC error, nothing changed, still serving", async (_name, make) => {
		const c = make();
		const before = await world();
		const res = await send(c);
		expectError(res, c.status, c.message, c.detailPath);
		expect(res.headers["set-cookie"]).toBeUndefined();
		expect(await world()).toEqual(before);
		await expectStillServing();
	});
});

describe("hostile requests Node's HTTP parser refuses", () => {
	const port = () => mint.server.address().port as number;
	const request = (headers: string) => `GET /api/v1/wallet/user HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n${headers}\r\n`;

	it.each([
		["a bare CR inside a header value", request("X-Request-Id: abc\rdef\r\n"), 400, "Bad request"],
		["a NUL inside a header value", request("X-Note: a\u0000b\r\n"), 400, "Bad request"],
		["a header name with a space", request("X Bad: 1\r\n"), 400, "Bad request"],
		["20 kB of cookies", request(`Cookie: a=${"x".repeat(20_000)}\r\n`), 431, "Request headers too large"],
		["a malformed request line", "GET /api/v1/health HTTP/9.9 extra\r\n\r\n", 400, "Bad request"],
	])("%s: JSON %p, and the node still serves", async (_name, bytes, status, message) => {
		const before = await world();
		const res = await rawRequest(port(), bytes);
		expect(res.status).toBe(status);
		expect(res.headers["content-type"]).toMatch(/^application\/json/);
		expect(res.headers["x-request-id"]).toMatch(/^[0-9a-f-]{36}$/);
		expect(JSON.parse(res.body)).toEqual({ error: { message, status } });
		expect(await world()).toEqual(before);
		await expectStillServing();
	});

	it("a CR LF injected through a header value cannot add a response header", async () => {
		const res = await rawRequest(port(), request("X-Request-Id: abc\r\nSet-Cookie: pwned=1\r\n"));
		expect(res.headers["set-cookie"]).toBeUndefined();
		expect(res.headers["x-request-id"]).toBe("abc");
	});
});

describe("valid but unusual requests still work", () => {
	it("a gzip-compressed top-up is applied once", async () => {
		const before = await world();
		const res = await mint.http
			.post(TOPUP)
			.set("Authorization", `Bearer ${alice.access}`)
			.set("Content-Type", "application/json")
			.set("Content-Encoding", "gzip")
			.serialize(body => body)
			.send(zlib.gzipSync(JSON.stringify({ amount: 1.25 })));
		expect([res.status, res.body.amount, res.body.status]).toEqual([201, 1.25, "Completed"]);
		expect((await world()).balances[alice.user.id]).toBe(before.balances[alice.user.id] + 125);
	});

	it("a token signed by a stranger's key with the real kid is refused", async () => {
		const jwks = await mint.http.get("/.well-known/jwks.json");
		const kid = jwks.body.keys[0].kid;
		const { privateKey, publicKey } = await generateKeyPair("RS256", { modulusLength: 2048 });
		expect((await exportJWK(publicKey)).n).not.toBe(jwks.body.keys[0].n);
		const forged = await new SignJWT({ sid: "s" })
			.setProtectedHeader({ alg: "RS256", kid })
			.setSubject(alice.user.id)
			.setIssuer("mint")
			.setAudience("mint-api")
			.setIssuedAt()
			.setExpirationTime("10m")
			.setJti("j")
			.sign(privateKey);
		const before = await world();
		expectError(await mint.http.post(TOPUP).set("Authorization", `Bearer ${forged}`).send({ amount: 5 }), 401);
		expect(await world()).toEqual(before);
	});

	it("an access token replayed after logout is refused", async () => {
		const carol = await signup(mint);
		expect((await mint.http.post("/api/v1/auth/logout").set("Cookie", carol.cookie).set("Origin", origin)).status).toBe(204);
		const before = await world();
		expectError(await mint.http.post(TOPUP).set("Authorization", `Bearer ${carol.access}`).send({ amount: 5 }), 401);
		expect(await world()).toEqual(before);
	});

	it("a login carrying a logged-out session's cookies is anonymous: no Origin needed, and the new session works", async () => {
		const dave = await signup(mint);
		expect((await mint.http.post("/api/v1/auth/logout").set("Cookie", dave.cookie).set("Origin", origin)).status).toBe(204);
		const res = await mint.http
			.post(LOGIN)
			.set("Cookie", dave.cookie)
			.unset("Sec-Fetch-Site")
			.send({ email: dave.person.email, password: dave.person.password });
		expect([res.status, res.body.id]).toEqual([200, dave.user.id]);
	});

	it("ten concurrent signups with one email create one account", async () => {
		const person = newPerson();
		const before = await world();
		const answers = await Promise.all(Array.from({ length: 10 }, () => mint.http.post(SIGNUP).send(signupBody(person))));
		expect(answers.map(r => r.status).sort()).toEqual([201, ...Array(9).fill(409)]);
		for (const res of answers.filter(r => r.status === 409)) expectError(res, 409, "An account with this email already exists");
		expect((await world()).users).toBe(before.users + 1);
	});

	afterAll(async () => {
		await expectInvariants(mint);
	});
});
