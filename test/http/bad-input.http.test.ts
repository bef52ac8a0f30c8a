/** Bad input gets a clear 4xx in the SPEC error format and changes nothing. */
import { login, newPerson, signup, signupBody, userCount, type Session } from "../helpers/http";
import { startTestMint, type TestMint } from "../helpers/mint";

let mint: TestMint;
let alice: Session & { person: ReturnType<typeof newPerson> };
beforeAll(async () => {
	mint = await startTestMint();
	alice = await signup(mint);
});
afterAll(() => mint.stop());

const valid = () => signupBody(newPerson());
const without = (key: string) => {
	const body: Record<string, unknown> = valid();
	delete body[key];
	return body;
};

// Four columns in every row: with fewer, Jest passes its `done` callback as the last argument.
const signupCases: [string, () => unknown, number, string | undefined][] = [
	["missing firstName", () => without("firstName"), 400, "firstName"],
	["missing email", () => without("email"), 400, "email"],
	["missing passwordConfirm", () => without("passwordConfirm"), 400, "passwordConfirm"],
	["an extra field", () => ({ ...valid(), role: "admin" }), 400, "role"],
	["a numeric firstName", () => ({ ...valid(), firstName: 42 }), 400, "firstName"],
	["an array firstName", () => ({ ...valid(), firstName: ["Ada"] }), 400, "firstName"],
	["an object lastName", () => ({ ...valid(), lastName: { a: 1 } }), 400, "lastName"],
	["a 10 kB firstName", () => ({ ...valid(), firstName: "A".repeat(10_000) }), 400, "firstName"],
	["markup in a name", () => ({ ...valid(), firstName: "<script>alert(1)</script>" }), 400, "firstName"],
	["a control character in a name", () => ({ ...valid(), lastName: "Love\u0000lace" }), 400, "lastName"],
	["an empty lastName", () => ({ ...valid(), lastName: "   " }), 400, "lastName"],
	["an invalid email", () => ({ ...valid(), email: "not-an-email" }), 400, "email"],
	["a numeric email", () => ({ ...valid(), email: 12345 }), 400, "email"],
	["a password mismatch", () => ({ ...valid(), passwordConfirm: "something else entirely" }), 400, "passwordConfirm"],
	["a 7-character password", () => ({ ...valid(), password: "short12", passwordConfirm: "short12" }), 400, "password"],
	["a 129-character password", () => ({ ...valid(), password: "p".repeat(129), passwordConfirm: "p".repeat(129) }), 400, "password"],
	["a numeric password", () => ({ ...valid(), password: 12345678, passwordConfirm: 12345678 }), 400, "password"],
	["an array body", () => [valid()], 400, ""],
	["a JSON string body", () => "hello", 400, undefined],
	["a __proto__ key", () => JSON.parse(`{"__proto__": {"role": "admin"}, ${JSON.stringify(valid()).slice(1)}`), 400, "__proto__"],
	["a nested constructor key", () => ({ ...valid(), firstName: { constructor: { prototype: {} } } }), 400, "firstName.constructor"],
];

describe("POST /auth/signup refuses", () => {
	it.each(signupCases)("%s", async (_name, body, status, path) => {
		const before = await userCount(mint);
		const raw = JSON.stringify(body());
		const res = await mint.http.post("/api/v1/auth/signup").set("Content-Type", "application/json").send(raw);
		expect(res.status).toBe(status);
		expect(res.body.error.status).toBe(status);
		expect(typeof res.body.error.message).toBe("string");
		if (path) expect(res.body.error.details.map((d: { path: string }) => d.path)).toContain(path);
		expect(res.headers["set-cookie"]).toBeUndefined();
		expect(await userCount(mint)).toBe(before);
	});

	it("a 1 MB password with 413", async () => {
		const before = await userCount(mint);
		const big = "p".repeat(1024 * 1024);
		const res = await mint.http.post("/api/v1/auth/signup").send({ ...valid(), password: big, passwordConfirm: big });
		expect(res.status).toBe(413);
		expect(res.body).toEqual({ error: { message: "Request body too large", status: 413 } });
		expect(await userCount(mint)).toBe(before);
	});

	it("JSON that does not parse with 400", async () => {
		const res = await mint.http.post("/api/v1/auth/signup").set("Content-Type", "application/json").send('{"firstName": "Ada",');
		expect(res.status).toBe(400);
		expect(res.body).toEqual({ error: { message: "Malformed JSON body", status: 400 } });
	});

	it.each([
		["text/plain", "firstName=Ada"],
		["application/x-www-form-urlencoded", "firstName=Ada&lastName=L"],
		["application/xml", "<user/>"],
	])("a %s body with 415", async (type, body) => {
		const before = await userCount(mint);
		const res = await mint.http.post("/api/v1/auth/signup").set("Content-Type", type).send(body);
		expect(res.status).toBe(415);
		expect(res.body).toEqual({ error: { message: "Content-Type must be application/json", status: 415 } });
		expect(await userCount(mint)).toBe(before);
	});
});

describe("names as people have them", () => {
	it.each(["User 42", "O'Brien-Smith", "José", "李小龍", "Anne-Marie St. Clair", "Dr. Ada, Jr."])("accepts %s", async name => {
		const res = await mint.http.post("/api/v1/auth/signup").send({ ...valid(), firstName: name, lastName: name });
		expect(res.status).toBe(201);
		expect([res.body.firstName, res.body.lastName]).toEqual([name, name]);
	});
});

describe("the query string", () => {
	it("never overrides body fields", async () => {
		const person = newPerson();
		const res = await mint.http.post("/api/v1/auth/signup?email=attacker%40example.com&role=admin").send(signupBody(person));
		expect(res.status).toBe(201);
		expect(res.body.email).toBe(person.email);
		expect(res.body.role).toBe("user");
	});
});

describe("POST /auth/login refuses", () => {
	it.each([
		["a missing password", { email: "a@example.com" }, 400],
		["a numeric password", { email: "a@example.com", password: 1234 }, 400],
		["an array email", { email: ["a@example.com"], password: "x" }, 400],
		["an extra field", { email: "a@example.com", password: "x", admin: true }, 400],
	])("%s", async (_name, body, status) => {
		const res = await mint.http.post("/api/v1/auth/login").send(body);
		expect(res.status).toBe(status);
		expect(res.headers["set-cookie"]).toBeUndefined();
	});
});

describe("PUT /users/me refuses", () => {
	it.each([
		["an email change", { email: "new@example.com" }, "email"],
		["a role change", { role: "admin" }, "role"],
		["a numeric firstName", { firstName: 7 }, "firstName"],
		["an empty body", {}, ""],
	])("%s and changes nothing", async (_name, body, path) => {
		const res = await mint.http.put("/api/v1/users/me").set("Cookie", alice.cookie).send(body);
		expect(res.status).toBe(400);
		expect(res.body.error.details.map((d: { path: string }) => d.path)).toContain(path);
		const me = await mint.http.get("/api/v1/auth/user").set("Cookie", alice.cookie);
		expect(me.body).toEqual(alice.user);
	});
});

describe("reset and verification tokens", () => {
	it.each([
		["verify-email with a made-up token", "/api/v1/auth/verify-email", { token: "A".repeat(43) }],
		["verify-email with a non-string token", "/api/v1/auth/verify-email", { token: 123 }],
		["reset with a made-up token", "/api/v1/auth/password/reset", { token: "B".repeat(43), password: "new password 1", passwordConfirm: "new password 1" }],
	])("%s answers 400", async (_name, url, body) => {
		const res = await mint.http.post(url).send(body);
		expect(res.status).toBe(400);
		expect(res.body.error.status).toBe(400);
	});
	it("a login still works afterwards with the old password", async () => {
		expect((await login(mint, alice.person)).user.id).toBe(alice.user.id);
	});
});
