/**
 * Property-based fuzzing through the gateway (fast-check): random JSON bodies
 * (deep, wide, unicode, huge numbers, prototype keys), random bytes, headers
 * and query strings, sent to every route. Whatever arrives: no 5xx, an error
 * is the SPEC shape, no money appears or vanishes, and the node keeps serving.
 */
import zlib from "node:zlib";
import fc from "fast-check";
import { signup, type Session } from "../helpers/http";
import { expectInvariants, topUp } from "../helpers/money";
import { startTestMint, type TestMint } from "../helpers/mint";

let mint: TestMint;
let alice: Session;
let bob: Session;
beforeAll(async () => {
	// A tolerant login throttle: the fuzzer is not a password guesser.
	mint = await startTestMint({ LOGIN_MAX_FAILURES_PER_ACCOUNT: "1000", LOGIN_MAX_FAILURES_PER_IP: "100000" });
	[alice, bob] = [await signup(mint), await signup(mint)];
	expect((await topUp(mint, alice, 50)).status).toBe(201);
});
afterAll(() => mint.stop());

async function balanceMinorOf(session: Session): Promise<number> {
	const wallet = await (mint.broker.getLocalService("wallet") as any).adapter.findOne({ userId: session.user.id });
	return wallet.balanceMinor;
}

const ROUTES: [method: "get" | "post" | "put", path: string][] = [
	["post", "/api/v1/auth/signup"],
	["post", "/api/v1/auth/login"],
	["post", "/api/v1/auth/logout"],
	["post", "/api/v1/auth/refresh"],
	["get", "/api/v1/auth/user"],
	["post", "/api/v1/auth/verify-email"],
	["post", "/api/v1/auth/password/forgot"],
	["post", "/api/v1/auth/password/reset"],
	["get", "/api/v1/users"],
	["get", "/api/v1/users/search"],
	["put", "/api/v1/users/me"],
	["get", "/api/v1/users/:id"],
	["get", "/api/v1/wallet/user"],
	["post", "/api/v1/transactions/topup"],
	["post", "/api/v1/transactions/transfer"],
	["get", "/api/v1/transactions"],
	["get", "/api/v1/transactions/:id"],
	["get", "/api/v1/transactions/:id/history"],
	["get", "/api/v1/health"],
	["get", "/api/v1/ready"],
	["get", "/.well-known/jwks.json"],
];

const FIELD_NAMES = [
	"amount",
	"toUserId",
	"email",
	"password",
	"passwordConfirm",
	"firstName",
	"lastName",
	"middleName",
	"token",
	"__proto__",
	"constructor",
	"prototype",
	"$where",
	"role",
];

const hostileValue = fc.oneof(
	fc.jsonValue({ maxDepth: 6 }),
	fc.string({ unit: "grapheme", maxLength: 200 }),
	fc.string({ unit: "binary", maxLength: 200 }),
	fc.constantFrom(1e308, -1e308, 2 ** 53 + 1, 5e-324, -0, 0.1 + 0.2, 12.345, 100000.01, 1e21),
	fc.record({ $gt: fc.string() }),
	fc.array(fc.integer(), { maxLength: 1500 }),
);

/** A body as text: usually an object of Mint's own field names, sometimes anything at all. */
const bodyText = fc.oneof(
	fc.dictionary(fc.constantFrom(...FIELD_NAMES), hostileValue, { maxKeys: 6 }).map(v => JSON.stringify(v)),
	fc.jsonValue({ maxDepth: 8 }).map(v => JSON.stringify(v)),
	fc.nat({ max: 80 }).map(depth => `{"amount":${"[".repeat(depth)}1${"]".repeat(depth)}}`),
	fc.nat({ max: 3000 }).map(n => JSON.stringify(Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, i])))),
	fc.string({ unit: "binary", maxLength: 300 }),
	fc.constant('{"__proto__":{"isAdmin":true},"amount":1}'),
);

const contentType = fc.constantFrom(
	"application/json",
	"application/json; charset=utf-8",
	"text/plain",
	"application/x-www-form-urlencoded",
	"",
	"application/json; charset=latin1",
);
const contentEncoding = fc.constantFrom(undefined, "gzip", "deflate", "br", "identity", "compress", "gzip, gzip");
const idText = fc.oneof(fc.uuid(), fc.string({ unit: "grapheme", minLength: 1, maxLength: 80 }), fc.constantFrom("..", "../../etc/passwd", "%00", "$gt"));
const queryText = fc
	.array(
		fc.tuple(
			fc.oneof(fc.constantFrom("limit", "offset", "type", "status", "email", "limit[$gt]", "__proto__[x]", "a[b][c][d][e][f][g]"), fc.string()),
			fc.string({ unit: "grapheme", maxLength: 40 }),
		),
		{ maxLength: 5 },
	)
	.map(pairs => pairs.map(([k, v]) => `${encodeURIComponent(k).replace(/%5B/g, "[").replace(/%5D/g, "]")}=${encodeURIComponent(v)}`).join("&"));

const request = fc.record({
	route: fc.constantFrom(...ROUTES),
	id: idText,
	query: queryText,
	body: fc.option(bodyText, { nil: undefined }),
	contentType,
	contentEncoding,
	auth: fc.constantFrom("none", "alice-bearer", "alice-cookie"),
});

describe("fuzzing every route", () => {
	it("never answers 5xx, always answers errors in the SPEC shape, moves no money and stays up", async () => {
		const credited: number[] = [];
		const before = await balanceMinorOf(alice);
		await fc.assert(
			fc.asyncProperty(request, async r => {
				const [method, template] = r.route;
				const path = template.replace(":id", encodeURIComponent(r.id));
				let req = mint.http[method](r.query ? `${path}?${r.query}` : path);
				// Logging out or rotating alice's session would end it for the rest of the run: those go anonymous.
				const auth = /\/(logout|refresh)$/.test(template) ? "none" : r.auth;
				if (auth === "alice-bearer") req = req.set("Authorization", `Bearer ${alice.access}`);
				if (auth === "alice-cookie") req = req.set("Cookie", alice.cookie);
				if (r.body !== undefined) {
					const bytes = Buffer.from(r.body, "utf8");
					const encoded = r.contentEncoding === "gzip" ? zlib.gzipSync(bytes) : r.contentEncoding === "deflate" ? zlib.deflateSync(bytes) : bytes;
					req = req.set("Content-Type", r.contentType).serialize(b => b);
					if (r.contentEncoding) req = req.set("Content-Encoding", r.contentEncoding);
					req = req.send(encoded);
				}
				const res = await req;
				expect([method, path, res.status < 500]).toEqual([method, path, true]);
				if (res.status !== 204) expect(res.headers["content-type"]).toMatch(/^application\/json/);
				if (res.status >= 400) {
					expect(res.body.error.status).toBe(res.status);
					expect(typeof res.body.error.message).toBe("string");
				}
				if (path.endsWith("/topup") && res.status === 201) credited.push(Math.round(res.body.amount * 100));
			}),
			{ numRuns: Number(process.env.FUZZ_RUNS ?? 400), seed: Number(process.env.FUZZ_SEED ?? Date.now() % 2 ** 31) },
		);
		expect((await mint.http.get("/api/v1/health")).status).toBe(200);
		expect(await balanceMinorOf(bob)).toBe(0);
		expect(await balanceMinorOf(alice)).toBe(before + credited.reduce((a, b) => a + b, 0));
		await expectInvariants(mint);
	}, 120_000);
});
