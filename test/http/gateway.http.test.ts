import crypto from "node:crypto";
import { SignJWT, type JWK } from "jose";
import { cookieHeader, type newPerson, signup, type Session } from "../helpers/http";
import { startTestMint, type TestMint } from "../helpers/mint";

let mint: TestMint;
let alice: Session & { person: ReturnType<typeof newPerson> };
beforeAll(async () => {
	mint = await startTestMint({ ALLOWED_ORIGINS: "https://app.example.com", LOGIN_MAX_FAILURES_PER_ACCOUNT: "3", LOGIN_MAX_FAILURES_PER_IP: "6" });
	alice = await signup(mint);
});
afterAll(() => mint.stop());

const auth = () => mint.broker.getLocalService("auth") as any;

describe("every response", () => {
	it("carries X-Request-Id: the caller's when sane, else a fresh one", async () => {
		const mine = await mint.http.get("/health").set("X-Request-Id", "req-12345678");
		expect(mine.headers["x-request-id"]).toBe("req-12345678");
		const bad = await mint.http.get("/api/v1/nope").set("X-Request-Id", "bad id\twith spaces");
		expect(bad.status).toBe(404);
		expect(bad.headers["x-request-id"]).toMatch(/^[0-9a-f-]{36}$/);
	});

	it("carries security headers, also on errors", async () => {
		for (const res of [await mint.http.get("/api/v1/health"), await mint.http.get("/api/v1/wallet/user")]) {
			expect(res.headers["x-content-type-options"]).toBe("nosniff");
			expect(res.headers["x-frame-options"]).toBe("DENY");
			expect(res.headers["content-security-policy"]).toContain("default-src 'none'");
			expect(res.headers["cache-control"]).toBe("no-store");
		}
	});
});

describe("routing", () => {
	it("exposes no moleculer-db CRUD, $node or unaliased action", async () => {
		for (const path of [
			"/api/v1/auth/find",
			"/api/v1/auth/list",
			"/api/v1/wallet/create",
			"/api/v1/$node/list",
			"/api/v1/~node/actions",
			"/api/v1/auth/rotateKeys",
			"/api/v1/auth/refresh",
		]) {
			const res = await mint.http.get(path);
			expect([path, res.status]).toEqual([path, 404]);
			expect(res.body).toEqual({ error: { message: "Not found", status: 404 } });
		}
		const registered = (mint.broker.registry.getActionList({}) as { name: string }[]).map(a => a.name);
		for (const crud of ["auth.find", "auth.create", "auth.update", "auth.remove", "auth.get", "auth.list", "wallet.create", "wallet.update", "wallet.insert"]) {
			expect(registered).not.toContain(crud);
		}
	});

	it("answers /health and /ready at the root and under /api/v1, and per-service health", async () => {
		for (const path of ["/health", "/api/v1/health", "/api/v1/auth/health", "/api/v1/wallet/health"]) {
			const res = await mint.http.get(path);
			expect([path, res.status, res.body.status]).toEqual([path, 200, "ok"]);
		}
		const ready = await mint.http.get("/ready");
		expect(ready.status).toBe(200);
		expect(ready.body).toEqual({ status: "ready", checks: { node: "ok", auth: "ok", wallet: "ok", transactions: "ok", notifications: "ok" } });
	});
});

describe("JWKS and keys", () => {
	it("publishes public keys only, cacheable", async () => {
		const res = await mint.http.get("/.well-known/jwks.json");
		expect(res.status).toBe(200);
		expect(res.headers["cache-control"]).toMatch(/^public, max-age=\d+$/);
		expect(res.body.keys.length).toBeGreaterThanOrEqual(2);
		for (const key of res.body.keys) {
			expect(key).toMatchObject({ kty: "RSA", alg: "RS256", use: "sig", kid: expect.any(String) });
			for (const secret of ["d", "p", "q", "dp", "dq", "qi"]) expect(key).not.toHaveProperty(secret);
			expect(Buffer.from(key.n, "base64url").length * 8).toBeGreaterThanOrEqual(2048);
		}
	});

	it("rotates without logging anyone out: the new signing key was published before it signs", async () => {
		const before = (await mint.http.get("/.well-known/jwks.json")).body.keys.map((k: JWK) => k.kid);
		const old = await signup(mint);
		const rotated = await mint.broker.call<{ currentKid: string }>("auth.rotateKeys");
		expect(before).toContain(rotated.currentKid);
		const oldKid = JSON.parse(Buffer.from(old.access.split(".")[0], "base64url").toString()).kid;
		expect(rotated.currentKid).not.toBe(oldKid);

		const stillValid = await mint.http.get("/api/v1/wallet/user").set("Authorization", `Bearer ${old.access}`);
		expect(stillValid.status).toBe(200);
		const fresh = await signup(mint);
		expect(JSON.parse(Buffer.from(fresh.access.split(".")[0], "base64url").toString()).kid).toBe(rotated.currentKid);
		expect((await mint.http.get("/api/v1/wallet/user").set("Authorization", `Bearer ${fresh.access}`)).status).toBe(200);
		const after = (await mint.http.get("/.well-known/jwks.json")).body.keys.map((k: JWK) => k.kid);
		expect(after).toEqual(expect.arrayContaining([oldKid, rotated.currentKid]));
	});
});

describe("forged access tokens are refused", () => {
	const b64 = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url");
	const claims = () => {
		const now = Math.floor(Date.now() / 1000);
		return {
			sub: alice.user.id,
			sid: crypto.randomUUID(),
			iss: mint.config.auth.issuer,
			aud: mint.config.auth.audience,
			iat: now,
			exp: now + 600,
			jti: crypto.randomUUID(),
		};
	};
	const signWithRealKey = async (payload: Record<string, unknown>) => {
		const key = auth().signingKey as { kid: string; privateKey: crypto.KeyObject };
		return new SignJWT(payload).setProtectedHeader({ alg: "RS256", kid: key.kid }).sign(key.privateKey);
	};

	const forgeries: [string, () => Promise<string>][] = [
		["alg none", async () => `${b64({ alg: "none", kid: auth().signingKey.kid })}.${b64(claims())}.`],
		[
			"HS256 signed with the public key",
			async () => {
				const jwks = (await mint.http.get("/.well-known/jwks.json")).body.keys;
				const pem = crypto.createPublicKey({ key: jwks[0], format: "jwk" }).export({ type: "spki", format: "pem" });
				return new SignJWT(claims()).setProtectedHeader({ alg: "HS256", kid: jwks[0].kid }).sign(new Uint8Array(Buffer.from(pem)));
			},
		],
		[
			"an unknown kid",
			async () => {
				const { privateKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
				return new SignJWT(claims()).setProtectedHeader({ alg: "RS256", kid: "not-a-mint-key" }).sign(privateKey);
			},
		],
		["an expired token", () => signWithRealKey({ ...claims(), iat: 1_000_000, exp: 1_000_900 })],
		["a wrong issuer", () => signWithRealKey({ ...claims(), iss: "someone-else" })],
		["a wrong audience", () => signWithRealKey({ ...claims(), aud: "another-api" })],
		[
			"a tampered payload",
			async () => {
				const [header, , signature] = (await signWithRealKey(claims())).split(".");
				return `${header}.${b64({ ...claims(), sub: "00000000-0000-4000-8000-000000000000" })}.${signature}`;
			},
		],
		[
			"no exp",
			async () => {
				const { exp: _exp, ...rest } = claims();
				return signWithRealKey(rest);
			},
		],
	];

	it.each(forgeries)("%s", async (_name, forge) => {
		const token = await forge();
		const bearer = await mint.http.get("/api/v1/wallet/user").set("Authorization", `Bearer ${token}`);
		expect(bearer.status).toBe(401);
		const cookie = await mint.http.get("/api/v1/auth/user").set("Cookie", cookieHeader({ access: token }));
		expect(cookie.status).toBe(200);
		expect(cookie.text).toBe("null");
		const write = await mint.http.put("/api/v1/users/me").set("Authorization", `Bearer ${token}`).send({ lastName: "Forged" });
		expect(write.status).toBe(401);
		expect((await mint.http.get(`/api/v1/users/${alice.user.id}`).set("Cookie", alice.cookie)).body.lastName).toBe("Lovelace");
	});

	it("while the same claims signed properly are accepted (the forgeries fail for their flaw)", async () => {
		const res = await mint.http.get("/api/v1/auth/user").set("Authorization", `Bearer ${await signWithRealKey(claims())}`);
		expect(res.body.id).toBe(alice.user.id);
	});
});

describe("the Origin check on cookie-authenticated unsafe requests", () => {
	const put = (headers: Record<string, string>) => mint.http.put("/api/v1/users/me").set(headers).send({ lastName: "Byron" });

	it("refuses a foreign Origin with 403 and changes nothing", async () => {
		const res = await put({ Cookie: alice.cookie, Origin: "https://evil.example.net" });
		expect(res.status).toBe(403);
		expect(res.body).toEqual({ error: { message: "Origin not allowed", status: 403 } });
		expect((await mint.http.get("/api/v1/auth/user").set("Cookie", alice.cookie)).body.lastName).toBe("Lovelace");
	});

	it("accepts the request's own origin, an allowed origin, and no Origin at all", async () => {
		const host = `127.0.0.1:${(mint.server.address() as { port: number }).port}`;
		expect((await put({ Cookie: alice.cookie, Origin: `http://${host}`, Host: host })).status).toBe(200);
		expect((await put({ Cookie: alice.cookie, Origin: "https://app.example.com" })).status).toBe(200);
		expect((await put({ Cookie: alice.cookie })).status).toBe(200);
	});

	it("behind a proxy on this host, compares with the forwarded host and protocol", async () => {
		const proxied = { Cookie: alice.cookie, Origin: "https://wallet.example.com", "X-Forwarded-Host": "wallet.example.com", "X-Forwarded-Proto": "https" };
		expect((await put(proxied)).status).toBe(200);
		expect((await put({ ...proxied, Origin: "https://evil.example.net" })).status).toBe(403);
	});

	it("does not apply to Bearer requests (no ambient credentials)", async () => {
		expect((await put({ Authorization: `Bearer ${alice.access}`, Origin: "https://evil.example.net" })).status).toBe(200);
	});
});

describe("login throttling", () => {
	// The test client is the loopback proxy (trusted by default): X-Forwarded-For says which client it forwards.
	const loginFrom = (ip: string, body: object) => mint.http.post("/api/v1/auth/login").set("X-Forwarded-For", ip).send(body);

	it("counts attempts per (account, IP) before the check: then 429 with Retry-After, even for the right password", async () => {
		const { person } = await signup(mint);
		for (let i = 0; i < 3; i++) expect((await loginFrom("203.0.113.10", { email: person.email, password: "wrong password" })).status).toBe(401);
		const blocked = await loginFrom("203.0.113.10", { email: person.email, password: person.password });
		expect([blocked.status, blocked.headers["retry-after"], blocked.body]).toEqual([
			429,
			"30",
			{ error: { message: "Too many failed logins, try again later", status: 429 } },
		]);
		expect(blocked.headers["set-cookie"]).toBeUndefined();
	});

	it("never lets a stranger lock the owner out: the owner's own address still logs in", async () => {
		const { person } = await signup(mint);
		const stranger = [];
		for (let i = 0; i < 5; i++) stranger.push((await loginFrom("203.0.113.66", { email: person.email, password: `guess ${i}` })).status);
		expect(stranger).toEqual([401, 401, 401, 429, 429]);
		expect((await loginFrom("198.51.100.7", { email: person.email, password: person.password })).status).toBe(200);
	});

	it("20 parallel wrong passwords: only the allowance is checked, the rest are 429", async () => {
		const { person } = await signup(mint);
		const statuses = await Promise.all(Array.from({ length: 20 }, () => loginFrom("203.0.113.20", { email: person.email, password: "wrong password" })));
		expect(statuses.map(r => r.status).sort()).toEqual([...Array(3).fill(401), ...Array(17).fill(429)]);
	});

	it("limits one IP across accounts", async () => {
		const victim = await signup(mint);
		const attempts = [];
		for (let i = 0; i < 6; i++) attempts.push((await loginFrom("203.0.113.30", { email: `ghost${i}@example.com`, password: "guess" })).status);
		expect(attempts).toEqual(Array(6).fill(401));
		const blocked = await loginFrom("203.0.113.30", { email: victim.person.email, password: victim.person.password });
		expect(blocked.status).toBe(429);
		expect(Number(blocked.headers["retry-after"])).toBeGreaterThan(800);
	});
});

describe("a dependency that is down", () => {
	it("answers 503 with Retry-After, and /ready names it", async () => {
		await mint.broker.destroyService(mint.broker.getLocalService("wallet")!);
		const res = await mint.http.get("/api/v1/wallet/user").set("Cookie", alice.cookie);
		expect(res.status).toBe(503);
		expect(res.headers["retry-after"]).toBe("5");
		expect(res.body).toEqual({ error: { message: "Service temporarily unavailable, try again later", status: 503 } });
		const ready = await mint.http.get("/ready");
		expect(ready.status).toBe(503);
		expect(ready.body.error.message).toBe("Not ready: wallet");
		expect(ready.body.checks).toEqual({ node: "ok", auth: "ok", wallet: "down", transactions: "ok", notifications: "ok" });
	});
});

describe("when auth is down", () => {
	it("keeps /health alive, names auth in /ready, and still verifies tokens from the cached JWKS", async () => {
		const other = await startTestMint();
		try {
			const session = await signup(other);
			// One authenticated request while auth is up fills the gateway's JWKS cache.
			expect((await other.http.get("/api/v1/wallet/user").set("Cookie", session.cookie)).status).toBe(200);
			await other.broker.destroyService(other.broker.getLocalService("auth")!);
			const health = await other.http.get("/health").set("Cookie", session.cookie);
			expect(health.status).toBe(200);
			const ready = await other.http.get("/ready");
			expect(ready.status).toBe(503);
			expect(ready.body.checks.auth).toBe("down");
			const wallet = await other.http.get("/api/v1/wallet/user").set("Authorization", `Bearer ${session.access}`);
			expect(wallet.status).toBe(200);
			const login = await other.http.post("/api/v1/auth/login").send({ email: session.person.email, password: session.person.password });
			expect(login.status).toBe(503);
		} finally {
			await other.stop();
		}
	});
});

describe("CORS for ALLOWED_ORIGINS", () => {
	it("answers a preflight from an allowed origin with credentials allowed", async () => {
		const res = await mint.http
			.options("/api/v1/auth/login")
			.set("Origin", "https://app.example.com")
			.set("Access-Control-Request-Method", "POST")
			.set("Access-Control-Request-Headers", "content-type");
		expect(res.status).toBe(204);
		expect(res.headers["access-control-allow-origin"]).toBe("https://app.example.com");
		expect(res.headers["access-control-allow-credentials"]).toBe("true");
	});

	it("gives a foreign origin no CORS grant", async () => {
		const res = await mint.http.get("/api/v1/health").set("Origin", "https://evil.example.net");
		expect(res.headers["access-control-allow-origin"]).toBeUndefined();
		const allowed = await mint.http.get("/api/v1/health").set("Origin", "https://app.example.com");
		expect(allowed.headers["access-control-allow-origin"]).toBe("https://app.example.com");
		expect(allowed.headers["access-control-expose-headers"]).toContain("X-Request-Id");
	});
});
