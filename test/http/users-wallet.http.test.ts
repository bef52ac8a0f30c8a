import { cookieHeader, login, newPerson, signup, type Session } from "../helpers/http";
import { startTestMint, waitFor, type TestMint } from "../helpers/mint";

let mint: TestMint;
let alice: Session & { person: ReturnType<typeof newPerson> };
let bob: Session & { person: ReturnType<typeof newPerson> };
beforeAll(async () => {
	mint = await startTestMint();
	alice = await signup(mint, newPerson({ email: "alice.smith@example.com", firstName: "Alice" }));
	bob = await signup(mint, newPerson({ email: "bob.jones@example.com", firstName: "Bob" }));
	await signup(mint, newPerson({ email: "abc@example.org" }));
});
afterAll(() => mint.stop());

const get = (url: string, session?: Session) => {
	const req = mint.http.get(url);
	return session ? req.set("Cookie", session.cookie) : req;
};

describe("GET /wallet/user", () => {
	it("shows a new user's wallet with balance 0 in the deployment currency", async () => {
		const res = await get("/api/v1/wallet/user", alice);
		expect(res.status).toBe(200);
		expect(res.body).toEqual({
			id: expect.any(String),
			userId: alice.user.id,
			balance: 0,
			currency: "USD",
			createdAt: expect.any(String),
			updatedAt: expect.any(String),
		});
	});

	it("answers 401 without a session", async () => {
		const res = await get("/api/v1/wallet/user");
		expect(res.status).toBe(401);
		expect(res.body).toEqual({ error: { message: "Not authenticated", status: 401 } });
	});

	it("creates exactly one wallet when the event and several requests race", async () => {
		const wallet = mint.broker.getLocalService("wallet") as any;
		const session = await signup(mint);
		// Drop the wallet the signup event made, then race the event against requests.
		await wallet.adapter.removeMany({ userId: session.user.id });
		const event = { eventId: "00000000-0000-4000-8000-000000000001", occurredAt: new Date().toISOString(), userId: session.user.id };
		const results = await Promise.all([
			...Array.from({ length: 5 }, () => get("/api/v1/wallet/user", session)),
			mint.broker.broadcastLocal("user.signedUp", event),
			mint.broker.broadcastLocal("user.signedUp", event),
		]);
		const ids = new Set(results.filter((r: any) => r?.status === 200).map((r: any) => r.body.id));
		expect(ids.size).toBe(1);
		expect(await wallet.adapter.count({ query: { userId: session.user.id } })).toBe(1);
	});

	it("is created by the signup event with a wallet.created event", async () => {
		const session = await signup(mint);
		const created = await waitFor(() => mint.events.find(e => e.name === "wallet.created" && e.params.userId === session.user.id));
		expect(created.params.currency).toBe("USD");
	});
});

describe("users: no email directory", () => {
	const profileOf = (session: Session) => ({
		id: session.user.id,
		firstName: session.user.firstName,
		lastName: session.user.lastName,
		createdAt: session.user.createdAt,
	});
	const entryOf = (session: Session) => ({
		id: session.user.id,
		firstName: session.user.firstName,
		lastName: session.user.lastName,
		email: session.user.email,
	});

	it("GET /users is for admins only: 403 for everyone else, own-user objects paginated for an admin", async () => {
		const refused = await get("/api/v1/users?limit=100", bob);
		expect([refused.status, refused.body]).toEqual([403, { error: { message: "Only admins can list users", status: 403 } }]);
		expect((await get("/api/v1/users")).status).toBe(401);
		const admin = await signup(mint, newPerson({ email: "root@mint.example.com" }));
		await (mint.broker.getLocalService("auth") as any).adapter.updateMany({ _id: admin.user.id }, { $set: { role: "admin" } });
		const page = await get("/api/v1/users?limit=2&offset=0", admin);
		expect(page.status).toBe(200);
		expect(page.body).toEqual([alice.user, bob.user]);
		const next = await get("/api/v1/users?limit=2&offset=2", admin);
		expect(next.body[0].id).not.toBe(page.body[0].id);
		// The v1 client asks for GET /api/v1/users/ (trailing slash).
		expect((await get("/api/v1/users/", admin)).body.length).toBeGreaterThanOrEqual(3);
		expect((await get("/api/v1/users?limit=101", admin)).status).toBe(400);
		expect((await get("/api/v1/users?limit=abc", admin)).status).toBe(400);
	});

	it("GET /users/search matches the start of emails, case-insensitively, as directory entries, never the caller", async () => {
		const res = await get("/api/v1/users/search?email=ALICE.S", bob);
		expect([res.status, res.body]).toEqual([200, [entryOf(alice)]]);
		// Not a substring search: the middle of an address finds nothing.
		expect((await get("/api/v1/users/search?email=smith", bob)).body).toEqual([]);
		expect((await get("/api/v1/users/search?email=alice.smith", alice)).body).toEqual([]);
	});

	it("GET /users/search treats the input as text, not a pattern", async () => {
		const dot = await get("/api/v1/users/search?email=a.c", bob);
		expect(dot.body.map((u: any) => u.email)).not.toContain("abc@example.org");
		expect((await get("/api/v1/users/search?email=.*%40", bob)).body).toEqual([]);
		expect((await get("/api/v1/users/search?email=%5Eal", bob)).body).toEqual([]);
		expect((await get("/api/v1/users/search?email=%5Balb%5D", bob)).body).toEqual([]);
		const name = await get("/api/v1/users/search?email=Alice%20Smith", bob);
		expect([name.status, name.body]).toEqual([200, []]);
	});

	it("GET /users/search needs at least 3 characters and answers at most 10", async () => {
		expect((await get("/api/v1/users/search?email=ab", bob)).status).toBe(400);
		expect((await get("/api/v1/users/search", bob)).status).toBe(400);
		for (let i = 0; i < 12; i++) await signup(mint, newPerson({ email: `crowd${String(i).padStart(2, "0")}@example.com` }));
		const many = await get("/api/v1/users/search?email=crowd", bob);
		expect(many.body.map((u: any) => u.email)).toEqual(Array.from({ length: 10 }, (_, i) => `crowd${String(i).padStart(2, "0")}@example.com`));
	});

	it("GET /users/:id answers the profile, never the email, or 404", async () => {
		const res = await get(`/api/v1/users/${bob.user.id}`, alice);
		expect([res.status, res.body]).toEqual([200, profileOf(bob)]);
		const missing = await get("/api/v1/users/00000000-0000-4000-8000-000000000000", alice);
		expect(missing.status).toBe(404);
		expect(missing.body).toEqual({ error: { message: "User not found", status: 404 } });
	});

	it('PUT /users/me changes names, and middleName "" removes the middle name', async () => {
		const set = await mint.http.put("/api/v1/users/me").set("Cookie", alice.cookie).send({ firstName: "Alicia", middleName: "Q" });
		expect(set.status).toBe(200);
		expect(set.body).toMatchObject({ firstName: "Alicia", middleName: "Q", lastName: "Lovelace", email: "alice.smith@example.com" });
		const cleared = await mint.http.put("/api/v1/users/me").set("Cookie", alice.cookie).send({ middleName: "" });
		expect(cleared.body).not.toHaveProperty("middleName");
		expect(cleared.body.firstName).toBe("Alicia");
		expect((await get("/api/v1/auth/user", alice)).body.firstName).toBe("Alicia");
	});
});

describe("email verification", () => {
	it("verifies with the token from the signup event, once", async () => {
		const session = await signup(mint);
		const event = await waitFor(() => mint.events.find(e => e.name === "user.signedUp" && e.params.userId === session.user.id));
		const res = await mint.http.post("/api/v1/auth/verify-email").send({ token: event.params.verificationToken });
		expect(res.status).toBe(200);
		expect(res.body.id).toBe(session.user.id);
		expect(Date.parse(res.body.emailVerifiedAt)).toBeGreaterThan(Date.now() - 60_000);
		const again = await mint.http.post("/api/v1/auth/verify-email").send({ token: event.params.verificationToken });
		expect(again.status).toBe(400);
		expect((await get("/api/v1/auth/user", session)).body.emailVerifiedAt).toBe(res.body.emailVerifiedAt);
	});
});

describe("password reset", () => {
	it("answers 202 with the same body whether or not the account exists", async () => {
		const known = await mint.http.post("/api/v1/auth/password/forgot").send({ email: bob.person.email });
		const unknown = await mint.http.post("/api/v1/auth/password/forgot").send({ email: "nobody-at-all@example.com" });
		expect(known.status).toBe(202);
		expect(unknown.status).toBe(202);
		expect(unknown.body).toEqual(known.body);
		expect(mint.events.filter(e => e.name === "user.passwordResetRequested" && e.params.email === "nobody-at-all@example.com")).toEqual([]);
	});

	it("resets with the emailed token once, revokes every session, and the new password works", async () => {
		const person = newPerson();
		const first = await signup(mint, person);
		const second = await login(mint, person);
		await mint.http.post("/api/v1/auth/password/forgot").send({ email: person.email });
		const event = await waitFor(() => mint.events.find(e => e.name === "user.passwordResetRequested" && e.params.userId === first.user.id));
		const token = event.params.resetToken;

		const mismatch = await mint.http.post("/api/v1/auth/password/reset").send({ token, password: "brand new pass", passwordConfirm: "other" });
		expect(mismatch.status).toBe(400);

		const res = await mint.http.post("/api/v1/auth/password/reset").send({ token, password: "brand new pass", passwordConfirm: "brand new pass" });
		expect(res.status).toBe(200);
		expect(res.body.id).toBe(first.user.id);

		for (const session of [first, second]) {
			expect((await mint.http.get("/api/v1/wallet/user").set("Authorization", `Bearer ${session.access}`)).status).toBe(401);
			expect((await mint.http.post("/api/v1/auth/refresh").set("Cookie", cookieHeader({ refresh: session.refresh }))).status).toBe(401);
		}
		const reuse = await mint.http.post("/api/v1/auth/password/reset").send({ token, password: "another new one", passwordConfirm: "another new one" });
		expect(reuse.status).toBe(400);
		expect((await mint.http.post("/api/v1/auth/login").send({ email: person.email, password: person.password })).status).toBe(401);
		expect((await login(mint, { ...person, password: "brand new pass" })).user.id).toBe(first.user.id);
	});
});
