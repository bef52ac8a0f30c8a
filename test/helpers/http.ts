/** Small HTTP scenario helpers: people who sign up, log in and carry their cookies. */
import request, { type Response } from "supertest";
import type { TestMint } from "./mint";

/**
 * supertest for a server, sending what a browser on Mint's own page sends with
 * every request: `Sec-Fetch-Site: same-origin` (cookie-authenticated writes
 * need it or an Origin). A test of other sites sets Origin or unsets it.
 */
export function browserAgent(server: Parameters<typeof request>[0]): ReturnType<typeof request> {
	const agent = request(server);
	return new Proxy(agent, {
		get(target, name) {
			const value = (target as any)[name];
			if (typeof value !== "function") return value;
			return (...args: unknown[]) => value.apply(target, args).set("Sec-Fetch-Site", "same-origin");
		},
	});
}

let counter = 0;

export interface Person {
	email: string;
	password: string;
	firstName: string;
	lastName: string;
}

export function newPerson(overrides: Partial<Person> = {}): Person {
	counter++;
	return {
		email: `person${counter}.${process.pid}@example.com`,
		password: "correct horse battery",
		firstName: "Ada",
		lastName: "Lovelace",
		...overrides,
	};
}

export function signupBody(person: Person, extra: Record<string, unknown> = {}) {
	return { firstName: person.firstName, lastName: person.lastName, email: person.email, password: person.password, passwordConfirm: person.password, ...extra };
}

/** name -> value of every cookie a response sets (empty value = cleared). */
export function setCookies(res: Response): Record<string, { value: string; attributes: string }> {
	const raw = res.headers["set-cookie"] as unknown as string[] | undefined;
	const out: Record<string, { value: string; attributes: string }> = {};
	for (const line of raw ?? []) {
		const [pair, ...attributes] = line.split(";");
		const eq = pair.indexOf("=");
		out[pair.slice(0, eq).trim()] = { value: pair.slice(eq + 1), attributes: attributes.join(";").trim() };
	}
	return out;
}

/** A Cookie header as a browser would send it to /api/v1 paths. */
export function cookieHeader(tokens: { access?: string; refresh?: string }): string {
	return [tokens.access && `access.token=${tokens.access}`, tokens.refresh && `refresh.token=${tokens.refresh}`].filter(Boolean).join("; ");
}

export interface Session {
	user: any;
	access: string;
	refresh: string;
	cookie: string;
}

export function sessionFrom(res: Response): Session {
	const cookies = setCookies(res);
	const access = cookies["access.token"]?.value;
	const refresh = cookies["refresh.token"]?.value;
	if (!access || !refresh) throw new Error(`no session cookies in ${res.status} response`);
	return { user: res.body, access, refresh, cookie: cookieHeader({ access, refresh }) };
}

export async function signup(mint: TestMint, person = newPerson()): Promise<Session & { person: Person }> {
	const res = await mint.http.post("/api/v1/auth/signup").send(signupBody(person));
	if (res.status !== 201) throw new Error(`signup failed: ${res.status} ${JSON.stringify(res.body)}`);
	return { ...sessionFrom(res), person };
}

export async function login(mint: TestMint, person: Person): Promise<Session> {
	const res = await mint.http.post("/api/v1/auth/login").send({ email: person.email, password: person.password });
	if (res.status !== 200) throw new Error(`login failed: ${res.status} ${JSON.stringify(res.body)}`);
	return sessionFrom(res);
}

export async function userCount(mint: TestMint): Promise<number> {
	return (mint.broker.getLocalService("auth") as any).adapter.count({});
}
