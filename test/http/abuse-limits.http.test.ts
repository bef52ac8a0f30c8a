/**
 * Limits a person never meets: signups per IP and per email, reset emails per
 * address and per IP, searches per user, each a 429 with Retry-After; reset
 * tokens that die when another is issued or used; forgot-password that says
 * nothing about whether an account exists.
 */
import { newPerson, signup, signupBody } from "../helpers/http";
import { startTestMint, waitFor, type TestMint } from "../helpers/mint";

let mint: TestMint;
beforeAll(async () => {
	mint = await startTestMint({
		SIGNUPS_PER_IP_HOUR: "6",
		SIGNUPS_PER_EMAIL_HOUR: "2",
		RESET_EMAILS_PER_ADDRESS_HOUR: "3",
		RESET_EMAILS_PER_IP_HOUR: "8",
		SEARCHES_PER_USER_MINUTE: "4",
	});
});
afterAll(() => mint.stop());

// The test client is the trusted loopback proxy: X-Forwarded-For names the client it forwards.
const from = (ip: string) => ({
	signup: (body: object) => mint.http.post("/api/v1/auth/signup").set("X-Forwarded-For", ip).send(body),
	forgot: (email: string) => mint.http.post("/api/v1/auth/password/forgot").set("X-Forwarded-For", ip).send({ email }),
});

function expectTooMany(res: { status: number; headers: Record<string, string>; body: any }, message: string) {
	expect([res.status, res.body]).toEqual([429, { error: { message, status: 429 } }]);
	expect(Number(res.headers["retry-after"])).toBeGreaterThan(0);
}

describe("signup limits", () => {
	it("per email: a taken email is 409 however often; a burst for a free one gets the email's allowance, then 429", async () => {
		const taken = newPerson();
		const client = from("203.0.113.1");
		expect((await client.signup(signupBody(taken))).status).toBe(201);
		for (let i = 0; i < 3; i++) expect((await client.signup(signupBody(taken))).status).toBe(409);
		const free = newPerson();
		const burst = await Promise.all(Array.from({ length: 4 }, (_, i) => from(`203.0.113.${100 + i}`).signup(signupBody(free))));
		const statuses = burst.map(r => r.status).sort();
		expect(statuses.filter(s => s === 201)).toHaveLength(1);
		expect(statuses.filter(s => s === 429)).toHaveLength(2);
		expectTooMany(burst.find(r => r.status === 429)!, "Too many signups, try again later");
	});

	it("per IP: the seventh signup from one address is 429, another address still signs up", async () => {
		const client = from("203.0.113.2");
		const statuses = [];
		for (let i = 0; i < 7; i++) statuses.push((await client.signup(signupBody(newPerson()))).status);
		expect(statuses).toEqual([201, 201, 201, 201, 201, 201, 429]);
		expect((await from("203.0.113.3").signup(signupBody(newPerson()))).status).toBe(201);
	});
});

describe("forgot-password", () => {
	const resetEventsFor = (userId: string) => mint.events.filter(e => e.name === "user.passwordResetRequested" && e.params.userId === userId);

	it("answers the same whether or not the account exists", async () => {
		const { person } = await signup(mint);
		const client = from("203.0.113.10");
		const known = await client.forgot(person.email);
		const unknown = await client.forgot("nobody-here@example.com");
		expect([known.status, unknown.status]).toEqual([202, 202]);
		expect(known.body).toEqual(unknown.body);
		expect(Object.keys(known.headers).sort()).toEqual(Object.keys(unknown.headers).sort());
	});

	it("sends at most 3 reset emails an hour per address (429 after), whether or not it exists", async () => {
		const { person, user } = await signup(mint);
		const client = from("203.0.113.11");
		for (let i = 0; i < 3; i++) expect((await client.forgot(person.email)).status).toBe(202);
		expectTooMany(await client.forgot(person.email), "Too many reset requests, try again later");
		expectTooMany(await from("203.0.113.12").forgot(person.email), "Too many reset requests, try again later");
		await waitFor(() => resetEventsFor(user.id).length === 3 || undefined);
		// An address with no account is counted the same: a 429 tells nothing about existence.
		const other = from("203.0.113.15");
		for (let i = 0; i < 3; i++) expect((await other.forgot("ghost@example.com")).status).toBe(202);
		expectTooMany(await other.forgot("ghost@example.com"), "Too many reset requests, try again later");
	});

	it("is limited per IP across addresses", async () => {
		const client = from("203.0.113.13");
		const statuses = [];
		for (let i = 0; i < 9; i++) statuses.push((await client.forgot(`someone${i}@example.com`)).status);
		expect(statuses).toEqual([...Array(8).fill(202), 429]);
	});

	it("a new reset link kills the older one, and a used link is dead", async () => {
		const { person, user } = await signup(mint);
		const client = from("203.0.113.14");
		const issued = async (count: number) => {
			expect((await client.forgot(person.email)).status).toBe(202);
			return waitFor(() => resetEventsFor(user.id)[count - 1]?.params.resetToken as string | undefined);
		};
		const older = await issued(1);
		const newer = await issued(2);
		const reset = (token: string, password: string) => mint.http.post("/api/v1/auth/password/reset").send({ token, password, passwordConfirm: password });
		expect((await reset(older, "first new password")).status).toBe(400);
		expect((await reset(newer, "second new password")).status).toBe(200);
		expect((await reset(newer, "third new password")).status).toBe(400);
		expect((await mint.http.post("/api/v1/auth/login").send({ email: person.email, password: "second new password" })).status).toBe(200);
	});
});

describe("search", () => {
	it("is limited per user: 429 with Retry-After beyond the limit, other users unaffected", async () => {
		const [alice, bob] = [await signup(mint), await signup(mint)];
		const search = (cookie: string) => mint.http.get("/api/v1/users/search?email=per").set("Cookie", cookie);
		for (let i = 0; i < 4; i++) expect((await search(alice.cookie)).status).toBe(200);
		const refused = await search(alice.cookie);
		expectTooMany(refused, "Too many searches, try again in a minute");
		expect(Number(refused.headers["retry-after"])).toBeLessThanOrEqual(60);
		expect((await search(bob.cookie)).status).toBe(200);
	});
});
