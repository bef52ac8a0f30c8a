import { cookieHeader, login, newPerson, sessionFrom, setCookies, signup, signupBody, userCount } from "../helpers/http";
import { startTestMint, waitFor, type TestMint } from "../helpers/mint";

let mint: TestMint;
beforeAll(async () => {
	mint = await startTestMint({ REFRESH_GRACE_SEC: "1" });
});
afterAll(() => mint.stop());

describe("signup", () => {
	it("creates the user, answers 201 with the public user and logs them in with cookies", async () => {
		const person = newPerson({ email: "Grace.Hopper@Example.COM" });
		const res = await mint.http.post("/api/v1/auth/signup").send(signupBody(person, { middleName: "Brewster" }));
		expect(res.status).toBe(201);
		expect(res.body).toEqual({
			id: expect.any(String),
			firstName: "Ada",
			middleName: "Brewster",
			lastName: "Lovelace",
			email: "grace.hopper@example.com",
			emailVerifiedAt: null,
			role: "user",
			createdAt: expect.any(String),
			updatedAt: expect.any(String),
		});
		expect(res.body).not.toHaveProperty("passwordHash");
		const cookies = setCookies(res);
		expect(cookies["access.token"].attributes).toMatch(/HttpOnly/);
		expect(cookies["access.token"].attributes).toMatch(/(^|; )Secure(;|$)/);
		expect(cookies["refresh.token"].attributes).toMatch(/(^|; )Secure(;|$)/);
		expect(cookies["access.token"].attributes).toMatch(/SameSite=Strict/);
		expect(cookies["access.token"].attributes).toMatch(/Path=\/(;|$)/);
		expect(cookies["refresh.token"].attributes).toMatch(/Path=\/api\/v1/);
		// The refresh token's remaining life: 7 days, less the second that may have ticked since auth issued it.
		expect(Number(/Max-Age=(\d+)/.exec(cookies["refresh.token"].attributes)?.[1])).toBeGreaterThanOrEqual(604_799);
		expect(Number(/Max-Age=(\d+)/.exec(cookies["refresh.token"].attributes)?.[1])).toBeLessThanOrEqual(604_800);

		const me = await mint.http.get("/api/v1/auth/user").set("Cookie", sessionFrom(res).cookie);
		expect(me.status).toBe(200);
		expect(me.body.id).toBe(res.body.id);
	});

	it('treats middleName "" as no middle name', async () => {
		const res = await mint.http.post("/api/v1/auth/signup").send(signupBody(newPerson(), { middleName: "" }));
		expect(res.status).toBe(201);
		expect(res.body).not.toHaveProperty("middleName");
	});

	it("emits user.signedUp with what the welcome email needs", async () => {
		const { user, person } = await signup(mint);
		const event = await waitFor(() => mint.events.find(e => e.name === "user.signedUp" && e.params.userId === user.id));
		expect(event.params).toMatchObject({ email: person.email, firstName: "Ada", verificationToken: expect.stringMatching(/^[A-Za-z0-9_-]{40,}$/) });
		expect(event.params.eventId).toMatch(/^[0-9a-f-]{36}$/);
	});

	it("answers 409 for an email that exists, whatever its case, and creates nothing", async () => {
		const { person } = await signup(mint);
		const before = await userCount(mint);
		const res = await mint.http.post("/api/v1/auth/signup").send(signupBody({ ...person, email: person.email.toUpperCase() }));
		expect(res.status).toBe(409);
		expect(res.body).toEqual({ error: { message: "An account with this email already exists", status: 409 } });
		expect(await userCount(mint)).toBe(before);
	});

	it("lets exactly one of ten racing signups with the same email through", async () => {
		const person = newPerson();
		const before = await userCount(mint);
		const results = await Promise.all(Array.from({ length: 10 }, () => mint.http.post("/api/v1/auth/signup").send(signupBody(person))));
		const statuses = results.map(r => r.status).sort();
		expect(statuses).toEqual([201, 409, 409, 409, 409, 409, 409, 409, 409, 409]);
		expect(await userCount(mint)).toBe(before + 1);
	});
});

describe("login", () => {
	it("answers 200 with the user and fresh cookies", async () => {
		const { person, user } = await signup(mint);
		const res = await mint.http.post("/api/v1/auth/login").send({ email: person.email.toUpperCase(), password: person.password });
		expect(res.status).toBe(200);
		expect(res.body.id).toBe(user.id);
		const wallet = await mint.http.get("/api/v1/wallet/user").set("Cookie", sessionFrom(res).cookie);
		expect(wallet.status).toBe(200);
	});

	it("gives a wrong password and an unknown email the same 401", async () => {
		const { person } = await signup(mint);
		const wrong = await mint.http.post("/api/v1/auth/login").send({ email: person.email, password: "not the password" });
		const unknown = await mint.http.post("/api/v1/auth/login").send({ email: "nobody-here@example.com", password: "not the password" });
		expect(wrong.status).toBe(401);
		expect(unknown.status).toBe(401);
		expect(wrong.body).toEqual({ error: { message: "Invalid email or password", status: 401 } });
		expect(unknown.body).toEqual(wrong.body);
		expect(setCookies(wrong)["access.token"]).toBeUndefined();
	});

	it("spends a password hash on unknown emails too (no fast path that reveals accounts)", async () => {
		const { person } = await signup(mint);
		const time = async (email: string) => {
			const started = process.hrtime.bigint();
			await mint.http.post("/api/v1/auth/login").send({ email, password: "wrong password!" });
			return Number(process.hrtime.bigint() - started) / 1e6;
		};
		const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
		const known: number[] = [];
		const unknown: number[] = [];
		for (let i = 0; i < 3; i++) {
			known.push(await time(person.email));
			unknown.push(await time(`ghost-${i}@example.com`));
		}
		// Argon2id at OWASP cost takes tens of ms; a lookup alone takes ~1 ms.
		expect(median(unknown)).toBeGreaterThan(median(known) * 0.4);
	});
});

describe("logout", () => {
	it("answers 204, clears cookies and revokes both the access token and the refresh family", async () => {
		const session = await signup(mint);
		const res = await mint.http.post("/api/v1/auth/logout").set("Cookie", session.cookie);
		expect(res.status).toBe(204);
		const cleared = setCookies(res);
		expect(cleared["access.token"].value).toBe("");
		expect(cleared["access.token"].attributes).toMatch(/Max-Age=0/);
		expect(cleared["refresh.token"].value).toBe("");

		const bearer = await mint.http.get("/api/v1/wallet/user").set("Authorization", `Bearer ${session.access}`);
		expect(bearer.status).toBe(401);
		const me = await mint.http.get("/api/v1/auth/user").set("Cookie", session.cookie);
		expect(me.status).toBe(200);
		expect(me.text).toBe("null");
		const refresh = await mint.http.post("/api/v1/auth/refresh").set("Cookie", cookieHeader({ refresh: session.refresh }));
		expect(refresh.status).toBe(401);
	});
});

describe("GET /auth/user", () => {
	it("answers 200 null without a session", async () => {
		const res = await mint.http.get("/api/v1/auth/user");
		expect(res.status).toBe(200);
		expect(res.headers["content-type"]).toMatch(/application\/json/);
		expect(res.text).toBe("null");
	});
});

describe("refresh", () => {
	it("rotates the refresh token and keeps the user logged in", async () => {
		const session = await signup(mint);
		const res = await mint.http.post("/api/v1/auth/refresh").set("Cookie", cookieHeader({ refresh: session.refresh }));
		expect(res.status).toBe(200);
		expect(res.body.id).toBe(session.user.id);
		const next = sessionFrom(res);
		expect(next.refresh).not.toBe(session.refresh);
		expect(next.access).not.toBe(session.access);
		const wallet = await mint.http.get("/api/v1/wallet/user").set("Cookie", next.cookie);
		expect(wallet.status).toBe(200);
	});

	it("gives requests racing with one refresh token the same successor", async () => {
		const session = await signup(mint);
		const results = await Promise.all(
			Array.from({ length: 5 }, () => mint.http.post("/api/v1/auth/refresh").set("Cookie", cookieHeader({ refresh: session.refresh }))),
		);
		expect(results.map(r => r.status)).toEqual([200, 200, 200, 200, 200]);
		const successors = new Set(results.map(r => sessionFrom(r).refresh));
		expect(successors.size).toBe(1);
	});

	it("treats a use after the grace period as reuse and revokes the whole family", async () => {
		const session = await signup(mint);
		const first = await mint.http.post("/api/v1/auth/refresh").set("Cookie", cookieHeader({ refresh: session.refresh }));
		const successor = sessionFrom(first);
		await new Promise(r => setTimeout(r, 1300)); // REFRESH_GRACE_SEC=1
		const reuse = await mint.http.post("/api/v1/auth/refresh").set("Cookie", cookieHeader({ refresh: session.refresh }));
		expect(reuse.status).toBe(401);
		const successorRefresh = await mint.http.post("/api/v1/auth/refresh").set("Cookie", cookieHeader({ refresh: successor.refresh }));
		expect(successorRefresh.status).toBe(401);
		const successorAccess = await mint.http.get("/api/v1/wallet/user").set("Authorization", `Bearer ${successor.access}`);
		expect(successorAccess.status).toBe(401);
	});

	it("answers 401 without a refresh cookie and for an unknown one", async () => {
		expect((await mint.http.post("/api/v1/auth/refresh")).status).toBe(401);
		const res = await mint.http.post("/api/v1/auth/refresh").set("Cookie", cookieHeader({ refresh: "x".repeat(43) }));
		expect(res.status).toBe(401);
		expect(res.body).toEqual({ error: { message: "Session expired", status: 401 } });
	});

	it("refreshes silently when the access token is missing but the refresh cookie is valid", async () => {
		const session = await signup(mint);
		const res = await mint.http.get("/api/v1/wallet/user").set("Cookie", cookieHeader({ refresh: session.refresh }));
		expect(res.status).toBe(200);
		expect(res.body.userId).toBe(session.user.id);
		const renewed = sessionFrom(res);
		expect(renewed.refresh).not.toBe(session.refresh);
		const again = await mint.http.get("/api/v1/auth/user").set("Cookie", renewed.cookie);
		expect(again.body.id).toBe(session.user.id);
	});

	it("refreshes silently when the access token is garbage", async () => {
		const session = await signup(mint);
		const res = await mint.http.get("/api/v1/auth/user").set("Cookie", cookieHeader({ access: "garbage.token.here", refresh: session.refresh }));
		expect(res.status).toBe(200);
		expect(res.body.id).toBe(session.user.id);
		expect(setCookies(res)["access.token"].value).not.toBe("");
	});
});

describe("after a restart", () => {
	it("keeps users, sessions and signing keys", async () => {
		const other = await startTestMint();
		const session = await signup(other);
		await other.stop({ keepData: true });
		const again = await startTestMint({ DATA_DIR: other.dataDir });
		try {
			const byOldToken = await again.http.get("/api/v1/auth/user").set("Authorization", `Bearer ${session.access}`);
			expect(byOldToken.body.id).toBe(session.user.id);
			const relogin = await login(again, session.person);
			expect(relogin.user.id).toBe(session.user.id);
		} finally {
			await again.stop();
		}
	});
});

describe("COOKIE_SECURE=false (explicit opt-out for plain HTTP)", () => {
	it("sets the session cookies without Secure", async () => {
		const plain = await startTestMint({ COOKIE_SECURE: "false" });
		try {
			const res = await plain.http.post("/api/v1/auth/signup").send(signupBody(newPerson()));
			const cookies = setCookies(res);
			expect(cookies["access.token"].attributes).not.toMatch(/Secure/);
			expect(cookies["refresh.token"].attributes).not.toMatch(/Secure/);
			expect(res.headers["strict-transport-security"]).toBeUndefined();
		} finally {
			await plain.stop();
		}
	});
});
