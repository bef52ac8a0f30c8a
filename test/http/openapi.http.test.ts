/**
 * The OpenAPI document: valid OpenAPI 3.1, every alias the gateway serves
 * documented and nothing else, and every answer of every route (happy paths
 * and the main errors) as the document describes it. Also the docs page and
 * the email-link pages as HTTP sees them (the browser tests run them).
 */
import crypto from "node:crypto";
import type { Response } from "supertest";
import { openApiDocument } from "../../services/api/openapi";
import { DOCS_CSP, PAGE_CSP } from "../../services/api/pages";
import { ROOT_ALIASES, V1_ALIASES, WALLET_STREAM_PATH } from "../../services/api/routes";
import { cookieHeader, newPerson, signup, signupBody, type Session } from "../helpers/http";
import { startTestMint, waitFor, type TestMint } from "../helpers/mint";
import { openApiValidator, validOpenApi31, type OpenApiValidator } from "../helpers/openapi";

let mint: TestMint;
let spec: OpenApiValidator;
/** Set by a test: wallet credits take longer than TX_SYNC_WAIT_MS, so money submissions answer 202. */
let slowCredits = false;
const slowWallet = {
	localAction(next: any, action: any) {
		if (action.name !== "wallet.credit") return next;
		return async (ctx: any) => {
			if (slowCredits) await new Promise(r => setTimeout(r, 1500));
			return next(ctx);
		};
	},
};

beforeAll(async () => {
	mint = await startTestMint(
		{
			TX_SYNC_WAIT_MS: "1000",
			LOGIN_MAX_FAILURES_PER_ACCOUNT: "2",
			SEARCHES_PER_USER_MINUTE: "3",
			RESET_EMAILS_PER_ADDRESS_HOUR: "1",
		},
		[slowWallet],
	);
	spec = openApiValidator(openApiDocument(mint.config));
});
afterAll(() => mint.stop());

const conforms = (res: Response) => spec.conforms(res);
const as = (session: Session) => ({ Cookie: session.cookie });
const get = (path: string, session?: Session) => mint.http.get(path).set(session ? as(session) : {});

describe("the document", () => {
	it("is valid OpenAPI 3.1", () => {
		const result = validOpenApi31(spec.document);
		expect(result).toEqual({ valid: true });
		expect(spec.document.openapi).toMatch(/^3\.1\./);
		// The check can fail: a response that is not a Response Object.
		const broken = { ...spec.document, paths: { ...spec.document.paths, "/broken": { get: { responses: { 200: "fine" } } } } };
		expect(validOpenApi31(broken).valid).toBe(false);
	});

	it("is what GET /api/v1/openapi.json serves, and that answer conforms to it", async () => {
		const res = conforms(await mint.http.get("/api/v1/openapi.json"));
		expect([res.status, res.headers["content-type"]]).toEqual([200, "application/json; charset=utf-8"]);
		expect(JSON.parse(res.text)).toEqual(spec.document);
		// This deployment's limits and currency.
		expect(spec.document.components.schemas.TopUpRequest.properties.amount.maximum).toBe(mint.config.transactions.topUpMaxMinor / 100);
		expect(spec.document.components.schemas.Wallet.properties.currency.examples).toEqual([mint.config.currency]);
	});

	it("documents every alias the gateway serves, and nothing else", () => {
		const api = mint.broker.getLocalService("api") as any;
		const served = new Set<string>(api.aliases.map((alias: any) => `${alias.method.toLowerCase()} ${alias.fullPath.replace(/:(\w+)/g, "{$1}")}`));
		// Served beside the aliases (a connection, not an action call).
		served.add(`get ${WALLET_STREAM_PATH}`);
		// The gateway's list holds every alias of routes.ts (so this test cannot pass on an empty list).
		for (const [aliases, prefix] of [
			[V1_ALIASES, "/api/v1"],
			[ROOT_ALIASES, ""],
		] as const) {
			for (const key of Object.keys(aliases)) {
				const [method, path] = key.split(" ");
				expect(served).toContain(`${method.toLowerCase()} ${prefix}${path.replace(/:(\w+)/g, "{$1}")}`);
			}
		}
		const documented = new Set(spec.operations().map(op => `${op.method} ${op.path}`));
		expect([...served].filter(op => !documented.has(op))).toEqual([]);
		expect([...documented].filter(op => !served.has(op))).toEqual([]);
		expect(served.size).toBe(documented.size);
	});

	it("declares the request id on every answer, Retry-After on 429 and 503, auth on every operation", () => {
		for (const op of spec.operations()) {
			expect([op.method, op.path, Array.isArray(op.spec.security)]).toEqual([op.method, op.path, true]);
			for (const [status, documented] of Object.entries<any>(op.spec.responses)) {
				const response = documented.$ref ? spec.document.components.responses[documented.$ref.split("/").pop()] : documented;
				expect([op.path, status, Object.keys(response.headers)]).toEqual([op.path, status, expect.arrayContaining(["X-Request-Id"])]);
				if (status === "429" || status === "503") expect([op.path, status, response.headers["Retry-After"]]).toEqual([op.path, status, expect.anything()]);
			}
			const signedIn =
				op.spec.security.some((s: object) => Object.keys(s).includes("bearerAuth")) && !op.spec.security.some((s: object) => !Object.keys(s).length);
			if (signedIn) expect([op.path, op.spec.responses["401"]]).toEqual([op.path, expect.anything()]);
		}
		expect(Object.keys(spec.document.components.securitySchemes).sort()).toEqual(["bearerAuth", "cookieAuth", "refreshCookie"]);
	});

	it("catches an answer it does not describe", async () => {
		const res = await get("/api/v1/wallet/user");
		expect(res.status).toBe(401);
		const tampered = { ...res, status: 418, request: res.request, headers: res.headers } as unknown as Response;
		expect(spec.problems(tampered)).toEqual([expect.stringContaining("status 418 is not documented")]);
		const noRequestId = { ...res, request: res.request, headers: { ...res.headers, "x-request-id": undefined }, text: res.text } as unknown as Response;
		expect(spec.problems(noRequestId)).toEqual(["GET /api/v1/wallet/user 401: header X-Request-Id is missing"]);
		const leaky = {
			...res,
			request: res.request,
			headers: res.headers,
			text: JSON.stringify({ error: { message: "x", status: 401, stack: "at ..." } }),
		} as unknown as Response;
		expect(spec.problems(leaky)).toEqual([expect.stringContaining("must NOT have additional properties")]);
	});
});

describe("every route answers as documented", () => {
	let alice: Session & { person: ReturnType<typeof newPerson> };
	let bob: Session & { person: ReturnType<typeof newPerson> };

	beforeAll(async () => {
		alice = await signup(mint);
		bob = await signup(mint);
	});

	it("signup: 201, 409, 400, 413, 415", async () => {
		const person = newPerson();
		const created = conforms(await mint.http.post("/api/v1/auth/signup").send(signupBody(person)));
		expect(created.status).toBe(201);
		expect(conforms(await mint.http.post("/api/v1/auth/signup").send(signupBody(person))).status).toBe(409);
		expect(conforms(await mint.http.post("/api/v1/auth/signup").send({ email: "not an email" })).status).toBe(400);
		expect(conforms(await mint.http.post("/api/v1/auth/signup").send({ firstName: "x".repeat(200 * 1024) })).status).toBe(413);
		expect(conforms(await mint.http.post("/api/v1/auth/signup").set("Content-Type", "text/plain").send("hello")).status).toBe(415);
	});

	it("login: 200, 401, 400, 429; the current user: 200 user and 200 null", async () => {
		const person = newPerson();
		await signup(mint, person);
		const login = (password: string) => mint.http.post("/api/v1/auth/login").set("X-Forwarded-For", "203.0.113.50").send({ email: person.email, password });
		expect(conforms(await login(person.password)).status).toBe(200);
		expect(conforms(await login("wrong password")).status).toBe(401);
		expect(conforms(await mint.http.post("/api/v1/auth/login").send({ email: person.email })).status).toBe(400);
		await login("wrong again");
		expect(conforms(await login(person.password)).status).toBe(429);
		expect(conforms(await get("/api/v1/auth/user", alice)).body.id).toBe(alice.user.id);
		const anonymous = conforms(await get("/api/v1/auth/user"));
		expect([anonymous.status, anonymous.text]).toEqual([200, "null"]);
	});

	it("refresh: 200 with the refresh cookie, 401 without; logout and logout-all: 204, 401 without a session; 403 from another origin", async () => {
		const session = await signup(mint);
		const refreshed = conforms(await mint.http.post("/api/v1/auth/refresh").set("Cookie", cookieHeader({ refresh: session.refresh })));
		expect(refreshed.status).toBe(200);
		expect(conforms(await mint.http.post("/api/v1/auth/refresh")).status).toBe(401);
		expect(conforms(await mint.http.post("/api/v1/auth/logout").set(as(session))).status).toBe(204);
		expect(conforms(await mint.http.post("/api/v1/auth/logout")).status).toBe(204);
		const other = await signup(mint);
		expect(conforms(await mint.http.post("/api/v1/auth/logout-all").set(as(other)).set("Origin", "https://evil.example.net")).status).toBe(403);
		expect(conforms(await mint.http.post("/api/v1/auth/logout-all").set(as(other))).status).toBe(204);
		expect(conforms(await mint.http.post("/api/v1/auth/logout-all")).status).toBe(401);
	});

	it("verify-email: 200 with the emailed token, 400 once used", async () => {
		const session = await signup(mint);
		const event = await waitFor(() => mint.events.find(e => e.name === "user.signedUp" && e.params.userId === session.user.id));
		const verified = conforms(await mint.http.post("/api/v1/auth/verify-email").send({ token: event.params.verificationToken }));
		expect(verified.status).toBe(200);
		expect(verified.body.emailVerifiedAt).not.toBeNull();
		expect(conforms(await mint.http.post("/api/v1/auth/verify-email").send({ token: event.params.verificationToken })).status).toBe(400);
	});

	it("password forgot: 202, 429; reset: 200, 400", async () => {
		const person = newPerson();
		const session = await signup(mint, person);
		expect(conforms(await mint.http.post("/api/v1/auth/password/forgot").send({ email: person.email })).status).toBe(202);
		const limited = conforms(await mint.http.post("/api/v1/auth/password/forgot").send({ email: person.email }));
		expect(limited.status).toBe(429);
		const event = await waitFor(() => mint.events.find(e => e.name === "user.passwordResetRequested" && e.params.userId === session.user.id));
		const body = { token: event.params.resetToken, password: "a brand new one", passwordConfirm: "a brand new one" };
		expect(conforms(await mint.http.post("/api/v1/auth/password/reset").send(body)).status).toBe(200);
		expect(conforms(await mint.http.post("/api/v1/auth/password/reset").send(body)).status).toBe(400);
	});

	it("users: list 200 for an admin, 403 for others, 401 anonymous; search 200, 400, 429; a profile 200, 404; PUT /users/me 200, 400", async () => {
		const admin = await signup(mint);
		await (mint.broker.getLocalService("auth") as any).adapter.updateMany({ _id: admin.user.id }, { $set: { role: "admin" } });
		expect(conforms(await get("/api/v1/users?limit=2", admin)).body).toHaveLength(2);
		expect(conforms(await get("/api/v1/users", alice)).status).toBe(403);
		expect(conforms(await get("/api/v1/users?limit=abc", admin)).status).toBe(400);
		expect(conforms(await get("/api/v1/users")).status).toBe(401);

		const searcher = await signup(mint);
		const found = conforms(await get(`/api/v1/users/search?email=${encodeURIComponent(alice.person.email.slice(0, 8))}`, searcher));
		expect(found.body.map((entry: { id: string }) => entry.id)).toContain(alice.user.id);
		expect(conforms(await get("/api/v1/users/search?email=ab", searcher)).status).toBe(400);
		// SEARCHES_PER_USER_MINUTE=3: the fourth counted search is refused.
		for (let i = 0; i < 2; i++) expect(conforms(await get("/api/v1/users/search?email=nobody", searcher)).body).toEqual([]);
		const limited = conforms(await get("/api/v1/users/search?email=nobody", searcher));
		expect(limited.status).toBe(429);

		expect(conforms(await get(`/api/v1/users/${bob.user.id}`, alice)).body).toEqual({
			id: bob.user.id,
			firstName: "Ada",
			lastName: "Lovelace",
			createdAt: bob.user.createdAt,
		});
		expect(conforms(await get(`/api/v1/users/${crypto.randomUUID()}`, alice)).status).toBe(404);
		expect(conforms(await mint.http.put("/api/v1/users/me").set(as(alice)).send({ middleName: "Byron" })).body.middleName).toBe("Byron");
		expect(conforms(await mint.http.put("/api/v1/users/me").set(as(alice)).send({ email: "x@example.com" })).status).toBe(400);
	});

	it("wallet and money: 200, 201, 200 replay, 422, 400, 404, 401", async () => {
		expect(conforms(await get("/api/v1/wallet/user", alice)).status).toBe(200);
		expect(conforms(await get("/api/v1/wallet/user")).status).toBe(401);
		const topUp = (amount: unknown, key: string) => mint.http.post("/api/v1/transactions/topup").set(as(alice)).set("Idempotency-Key", key).send({ amount });
		const key = crypto.randomUUID();
		const created = conforms(await topUp(25, key));
		expect([created.status, created.body.status]).toEqual([201, "Completed"]);
		const replayed = conforms(await topUp(25, key));
		expect([replayed.status, replayed.headers["idempotent-replayed"]]).toEqual([200, "true"]);
		expect(conforms(await topUp(26, key)).status).toBe(422);
		expect(conforms(await topUp(0.001, crypto.randomUUID())).status).toBe(400);

		const send = (from: Session, amount: number, toUserId: string) => mint.http.post("/api/v1/transactions/transfer").set(as(from)).send({ amount, toUserId });
		const sent = conforms(await send(alice, 10, bob.user.id));
		expect([sent.status, sent.body.status]).toEqual([201, "Completed"]);
		expect(conforms(await send(alice, 1, crypto.randomUUID())).status).toBe(404);
		expect(conforms(await send(alice, 1, alice.user.id)).status).toBe(400);
		expect(conforms(await send(bob, 1000, alice.user.id)).status).toBe(422);

		const list = conforms(await get("/api/v1/transactions?limit=5&type=Transfer", alice));
		expect(list.body.transactions[0].id).toBe(sent.body.id);
		expect(conforms(await get("/api/v1/transactions/", alice)).body.total).toBeGreaterThanOrEqual(2);
		expect(conforms(await get("/api/v1/transactions?type=Gift", alice)).status).toBe(400);
		expect(conforms(await get(`/api/v1/transactions/${sent.body.id}`, bob)).body.amount).toBe(10);
		expect(conforms(await get(`/api/v1/transactions/${sent.body.id}/history`, alice)).body.map((h: { status: string }) => h.status)).toEqual([
			"Pending",
			"Processing",
			"Completed",
		]);
		const stranger = await signup(mint);
		expect(conforms(await get(`/api/v1/transactions/${sent.body.id}`, stranger)).status).toBe(404);
		expect(conforms(await get(`/api/v1/transactions/${sent.body.id}/history`, stranger)).status).toBe(404);
		expect(conforms(await get(`/api/v1/transactions/${sent.body.id}`)).status).toBe(401);
	});

	it("the wallet stream: 200 text/event-stream until its session ends, 429 over the per-user cap, 401 without a session", async () => {
		const session = await signup(mint);
		const openStreams = () => (mint.broker.getLocalService("api") as any).walletStreams.size;
		const before = openStreams();
		// supertest resolves once the answer ends: here, when the logout ends the stream.
		const streams = Array.from({ length: 5 }, () => get("/api/v1/wallet/stream", session).then(res => res));
		await waitFor(() => openStreams() === before + 5);
		const refused = conforms(await get("/api/v1/wallet/stream", session));
		expect([refused.status, refused.headers["retry-after"]]).toEqual([429, "10"]);
		expect(conforms(await get("/api/v1/wallet/stream")).status).toBe(401);
		expect((await mint.http.post("/api/v1/auth/logout").set(as(session))).status).toBe(204);
		for (const res of await Promise.all(streams)) {
			expect([conforms(res).status, res.headers["content-type"]]).toEqual([200, "text/event-stream; charset=utf-8"]);
			const [first, ...rest] = res.text.split("\n\n").filter(Boolean);
			expect(first).toMatch(/^id: [0-9a-f-]{36}\nevent: balance\ndata: \{.*"balance":0,.*\}$/);
			expect(rest.at(-1)).toMatch(/^id: [0-9a-f-]{36}\nevent: end\ndata: \{"reason":"session-revoked"\}$/);
		}
	});

	it("a submission that outlasts TX_SYNC_WAIT_MS: 202 with the Location to poll", async () => {
		slowCredits = true;
		try {
			const res = conforms(await mint.http.post("/api/v1/transactions/topup").set(as(bob)).send({ amount: 1 }));
			expect([res.status, res.headers.location]).toEqual([202, `/api/v1/transactions/${res.body.id}`]);
		} finally {
			slowCredits = false;
		}
	});

	it("health, readiness and the JWKS: 200", async () => {
		for (const path of [
			"/health",
			"/ready",
			"/api/v1/health",
			"/api/v1/ready",
			...["auth", "wallet", "transactions", "notifications"].map(s => `/api/v1/${s}/health`),
		]) {
			expect([path, conforms(await get(path)).status]).toEqual([path, 200]);
		}
		const jwks = conforms(await get("/.well-known/jwks.json"));
		expect(jwks.body.keys.length).toBeGreaterThanOrEqual(2);
	});

	it("the docs page, its files and the email-link pages: 200; a name outside their lists: 404", async () => {
		for (const path of ["/api/docs", "/api/docs/", "/verify-email", "/reset-password?token=abc", "/api/docs/swagger-ui-bundle.js", "/assets/email-links.js"]) {
			expect([path, conforms(await get(path)).status]).toEqual([path, 200]);
		}
		for (const path of [
			"/api/docs/index.html",
			"/api/docs/..%2F..%2Fpackage.json",
			"/assets/__proto__",
			"/assets/..%2Fverify-email.html",
			"/assets/constructor",
		]) {
			expect([path, conforms(await get(path)).status]).toEqual([path, 404]);
		}
	});

	it("while the node is starting: 503 with Retry-After, pages included, health and readiness still answered", async () => {
		const broker = mint.broker as unknown as { started: boolean };
		broker.started = false;
		try {
			for (const path of ["/api/v1/wallet/user", "/verify-email", "/api/docs", "/api/v1/openapi.json"]) {
				const res = conforms(await get(path, alice));
				expect([path, res.status, res.headers["retry-after"]]).toEqual([path, 503, "2"]);
			}
			expect(conforms(await get("/health")).status).toBe(200);
		} finally {
			broker.started = true;
		}
	});

	it("a dependency down: 503 from its routes and /ready", async () => {
		await mint.broker.destroyService(mint.broker.getLocalService("wallet")!);
		expect(conforms(await get("/api/v1/wallet/user", alice)).status).toBe(503);
		expect(conforms(await get("/api/v1/wallet/health")).status).toBe(503);
		const ready = conforms(await get("/ready"));
		expect([ready.status, ready.body.checks.wallet]).toEqual([503, "down"]);
		conforms(await get("/api/v1/ready"));
	});

	it("exercised every documented operation, with a success and the errors named above", () => {
		const succeeded = new Set([...spec.seen].filter(s => /\s2\d\d$/.test(s)).map(s => s.replace(/\s\d+$/, "")));
		const operations = spec.operations().map(op => `${op.method.toUpperCase()} ${op.path}`);
		expect(operations.filter(op => !succeeded.has(op))).toEqual([]);
		const errors = new Set([...spec.seen].map(s => s.split(" ").pop()).filter(status => Number(status) >= 400));
		expect([...errors].sort()).toEqual(["400", "401", "403", "404", "409", "413", "415", "422", "429", "503"]);
	});
});

describe("the pages' security headers", () => {
	it("the email-link pages: own scripts only, nothing inline, no referrer, no caching, and nothing from the URL in the HTML", async () => {
		const plain = await get("/verify-email");
		const hostile = await get(`/verify-email?token=${encodeURIComponent('"><script>alert(1)</script>')}`);
		expect(hostile.text).toBe(plain.text);
		for (const path of ["/verify-email", "/reset-password"]) {
			const res = await get(`${path}?token=${"A".repeat(43)}`);
			expect([res.status, res.headers["content-type"]]).toEqual([200, "text/html; charset=utf-8"]);
			expect(res.headers["content-security-policy"]).toBe(PAGE_CSP);
			expect(res.headers["referrer-policy"]).toBe("no-referrer");
			expect(res.headers["cache-control"]).toBe("no-store");
			expect(res.headers["x-frame-options"]).toBe("DENY");
			expect(res.text).not.toContain("AAAAAAAAAA");
			// Every script is a file of this origin: no inline script for the CSP to refuse.
			const scripts = [...res.text.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/g)];
			expect(scripts.map(([, attributes, body]) => [attributes.match(/src="([^"]+)"/)?.[1], body.trim()])).toEqual([["/assets/email-links.js", ""]]);
		}
		expect(PAGE_CSP).toMatch(/script-src 'self';/);
		expect(PAGE_CSP).not.toContain("unsafe");
	});

	it("the docs page: every file it references is served with its type, and its CSP allows exactly those", async () => {
		const page = await get("/api/docs");
		expect([page.status, page.headers["content-type"], page.headers["content-security-policy"]]).toEqual([200, "text/html; charset=utf-8", DOCS_CSP]);
		expect(DOCS_CSP).toMatch(/script-src 'self';/);
		expect(DOCS_CSP).toMatch(/connect-src 'self';/);
		const referenced = [...page.text.matchAll(/(?:src|href)="([^"]+)"/g)].map(([, url]) => url);
		expect(referenced).toEqual([
			"/api/docs/swagger-ui.css",
			"/assets/favicon.svg",
			"/api/v1/openapi.json",
			"/api/docs/swagger-ui-bundle.js",
			"/api/docs/api-docs.js",
		]);
		const types: Record<string, string> = {
			css: "text/css; charset=utf-8",
			svg: "image/svg+xml",
			json: "application/json; charset=utf-8",
			js: "text/javascript; charset=utf-8",
		};
		for (const url of referenced) {
			const res = await get(url);
			expect([url, res.status, res.headers["content-type"], res.headers["x-content-type-options"]]).toEqual([
				url,
				200,
				types[url.split(".").pop()!],
				"nosniff",
			]);
			expect(Number(res.headers["content-length"])).toBeGreaterThan(100);
		}
		// The page's own script loads the document from this origin.
		expect((await get("/api/docs/api-docs.js")).text).toContain('url: "/api/v1/openapi.json"');
	});
});
