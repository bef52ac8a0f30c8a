/**
 * The auth service through the broker, the way other services (and the
 * gateway) call it: what it stores, and its compare-and-set paths under races.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import argon2 from "argon2";
import { unseal } from "../../lib/sealing";
import { nodeSecrets } from "../../lib/secrets";
import { tokenKid, verifyAccessToken } from "../../lib/access-tokens";
import { successorToken } from "../../services/auth/tokens";
import { newPerson, signupBody, type Person } from "../helpers/http";
import { startTestMint, waitFor, type TestMint } from "../helpers/mint";

const sha256 = (text: string) => crypto.createHash("sha256").update(text).digest("hex");

/** Every file under a directory, as text (the NeDB data files). */
function readTree(dir: string): string {
	return fs
		.readdirSync(dir, { recursive: true, withFileTypes: true })
		.filter(entry => entry.isFile())
		.map(entry => fs.readFileSync(path.join(entry.parentPath, entry.name), "utf8"))
		.join("\n");
}

async function settle<T>(promises: Promise<T>[]) {
	const results = await Promise.allSettled(promises);
	return {
		ok: results.filter((r): r is PromiseFulfilledResult<Awaited<T>> => r.status === "fulfilled").map(r => r.value),
		errors: results.filter((r): r is PromiseRejectedResult => r.status === "rejected").map(r => r.reason),
	};
}

function authOf(mint: TestMint): any {
	return mint.broker.getLocalService("auth");
}

function signupWith(mint: TestMint, person: Person = newPerson()): Promise<any> {
	return mint.broker.call("auth.signup", signupBody(person));
}

describe("auth service (shared Mint)", () => {
	let mint: TestMint;
	let auth: any;
	const call = (action: string, params: object = {}, opts?: object): Promise<any> => mint.broker.call(action, params, opts);

	beforeAll(async () => {
		mint = await startTestMint();
		auth = authOf(mint);
	});
	afterAll(() => mint?.stop());

	describe("moleculer-db's generated CRUD actions", () => {
		it("are absent while the services' own actions answer", async () => {
			expect(await call("auth.health")).toEqual({ status: "ok", service: "auth" });
			expect(await call("wallet.health")).toEqual({ status: "ok", service: "wallet" });
			const names = mint.broker.registry.getActionList({ onlyLocal: true }).map((a: any) => a.name);
			for (const crud of ["find", "count", "list", "create", "insert", "get", "update", "remove"]) {
				expect(names).not.toContain(`auth.${crud}`);
				expect(names).not.toContain(`wallet.${crud}`);
			}
			expect(names).toContain("auth.signup");
		});

		it.each(["auth.find", "auth.count", "auth.list", "auth.get", "wallet.find", "wallet.get", "wallet.list"])(
			"%s rejects with ServiceNotFoundError, so no service can read the collection",
			async action => {
				const err = await call(action, { query: {} }).catch(e => e);
				expect(err).toMatchObject({ name: "ServiceNotFoundError", type: "SERVICE_NOT_FOUND", code: 404 });
				expect(err.data).toMatchObject({ action });
			},
		);

		it("auth.create / auth.insert / auth.update / auth.remove reject with ServiceNotFoundError and change nothing", async () => {
			const { user } = await signupWith(mint);
			const before = await auth.adapter.count({});
			const attempts: [string, object][] = [
				["auth.create", { _id: "evil", email: "evil@example.com", role: "admin", passwordHash: "x" }],
				["auth.insert", { entity: { _id: "evil2", email: "evil2@example.com", role: "admin" } }],
				["auth.update", { id: user.id, role: "admin" }],
				["auth.remove", { id: user.id }],
				["wallet.create", { userId: user.id, balanceMinor: 1_000_000 }],
				["wallet.update", { id: "any", balanceMinor: 1_000_000 }],
			];
			for (const [action, params] of attempts) {
				const err = await call(action, params).catch(e => e);
				expect(err).toMatchObject({ name: "ServiceNotFoundError", type: "SERVICE_NOT_FOUND" });
			}
			expect(await auth.adapter.count({})).toBe(before);
			expect(await auth.adapter.findOne({ role: "admin" })).toBeNull();
			expect((await auth.adapter.findOne({ _id: user.id })).role).toBe("user");
		});
	});

	describe("signup storage", () => {
		it("stores the email lower-cased and only an argon2id hash of the password", async () => {
			const person = newPerson({ email: `Grace.Hopper.${process.pid}@Example.COM` });
			const { user } = await signupWith(mint, person);
			const email = person.email.toLowerCase();
			expect(user.email).toBe(email);
			expect(user).not.toHaveProperty("passwordHash");

			const row = await auth.adapter.findOne({ email });
			expect(row._id).toBe(user.id);
			expect(row.email).toBe(email);
			expect(await auth.adapter.findOne({ email: person.email })).toBeNull();
			expect(row.passwordHash).toMatch(/^\$argon2id\$v=19\$[mpt=\d,]+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$/);
			// The configured cost (OWASP floor): m=19 MiB, t=2, p=1.
			expect(row.passwordHash.split("$")[3].split(",").sort()).toEqual(["m=19456", "p=1", "t=2"]);
			expect(await argon2.verify(row.passwordHash, person.password)).toBe(true);
			expect(JSON.stringify(row)).not.toContain(person.password);
			expect(Object.keys(row).sort()).toEqual([
				"_id",
				"createdAt",
				"email",
				"emailVerifiedAt",
				"firstName",
				"lastName",
				"outbox",
				"passwordHash",
				"role",
				"updatedAt",
			]);
			// The welcome event went out, so the user's outbox is empty again, and its count gone with it.
			expect(row.outbox).toEqual([]);

			// The mixed-case address still logs in: login lower-cases too.
			const login = await call("auth.login", { email: person.email, password: person.password });
			expect(login.user.id).toBe(user.id);
		});

		it("stores refresh and verification tokens only as sha256 hex, never raw, in no auth store or file", async () => {
			const person = newPerson();
			const { user, session } = await signupWith(mint, person);
			const signedUp = await waitFor(() => mint.events.find(e => e.name === "user.signedUp" && e.params.userId === user.id));
			const verificationToken: string = signedUp.params.verificationToken;

			const row = await auth.stores.sessions.findOne({ _id: sha256(session.refreshToken) });
			expect(row).toMatchObject({ _id: sha256(session.refreshToken), familyId: session.sessionId, userId: user.id, rotatedAt: null, revokedAt: null });
			expect(Math.floor(row.expiresAt / 1000)).toBe(session.refreshExpiresAt);
			expect(await auth.stores.sessions.findOne({ _id: session.refreshToken })).toBeNull();

			const otp = await auth.stores.oneTimeTokens.findOne({ _id: sha256(verificationToken) });
			expect(otp).toMatchObject({ purpose: "verify-email", userId: user.id, usedAt: null });

			const everything = [await auth.adapter.find({}), ...(await Promise.all(Object.values(auth.stores).map((store: any) => store.find({}))))];
			const dump = JSON.stringify(everything);
			expect(dump).toContain(sha256(session.refreshToken));
			for (const secret of [session.refreshToken, verificationToken, person.password]) expect(dump).not.toContain(secret);

			// auth's own files (the welcome email, in notifications' store, carries the verification token by design).
			const files = readTree(path.join(mint.dataDir, "auth"));
			expect(files).toContain(sha256(session.refreshToken));
			for (const secret of [session.refreshToken, verificationToken, person.password]) expect(files).not.toContain(secret);
			expect(readTree(mint.dataDir)).not.toContain(session.refreshToken);
			expect(readTree(mint.dataDir)).not.toContain(person.password);
		});
	});

	describe("refresh rotation", () => {
		it("10 concurrent refreshes with the same token all succeed with the same successor, stored once", async () => {
			const { user, session } = await signupWith(mint);
			const successor = successorToken(session.refreshToken, nodeSecrets(mint.config).current);

			const { ok, errors } = await settle(Array.from({ length: 10 }, () => call("auth.refresh", { refreshToken: session.refreshToken })));
			expect(errors).toEqual([]);
			expect(ok).toHaveLength(10);
			expect(new Set(ok.map(r => r.session.refreshToken))).toEqual(new Set([successor]));
			expect(new Set(ok.map(r => r.session.sessionId))).toEqual(new Set([session.sessionId]));
			expect(new Set(ok.map(r => r.user.id))).toEqual(new Set([user.id]));

			const family = await auth.stores.sessions.find({ query: { familyId: session.sessionId } });
			expect(family.map((r: any) => r._id).sort()).toEqual([sha256(session.refreshToken), sha256(successor)].sort());
			const [original] = family.filter((r: any) => r._id === sha256(session.refreshToken));
			const [next] = family.filter((r: any) => r._id === sha256(successor));
			expect(typeof original.rotatedAt).toBe("number");
			expect(next).toMatchObject({ rotatedAt: null, revokedAt: null, userId: user.id });
			expect(new Set(ok.map(r => r.session.refreshExpiresAt))).toEqual(new Set([Math.floor(next.expiresAt / 1000)]));

			// The successor is a working refresh token of the same session.
			const again = await call("auth.refresh", { refreshToken: successor });
			expect(again.session.sessionId).toBe(session.sessionId);
			expect(again.session.refreshToken).toBe(successorToken(successor, nodeSecrets(mint.config).current));
		});
	});

	describe("one-time tokens", () => {
		it("a verification token is single use under a race: 1 of 5 concurrent verifyEmail calls wins, 4 get 400", async () => {
			const { user } = await signupWith(mint);
			const signedUp = await waitFor(() => mint.events.find(e => e.name === "user.signedUp" && e.params.userId === user.id));
			const token: string = signedUp.params.verificationToken;

			const { ok, errors } = await settle(Array.from({ length: 5 }, () => call("auth.verifyEmail", { token })));
			expect(ok).toHaveLength(1);
			expect(errors).toHaveLength(4);
			for (const err of errors) expect(err).toMatchObject({ code: 400, type: "VALIDATION_ERROR", message: "Invalid or expired token" });

			expect(ok[0].id).toBe(user.id);
			expect(typeof ok[0].emailVerifiedAt).toBe("string");
			expect((await auth.adapter.findOne({ _id: user.id })).emailVerifiedAt).toBe(ok[0].emailVerifiedAt);
			expect(typeof (await auth.stores.oneTimeTokens.findOne({ _id: sha256(token) })).usedAt).toBe("number");
			expect(mint.events.filter(e => e.name === "user.emailVerified" && e.params.userId === user.id)).toHaveLength(1);

			// And it stays used.
			await expect(call("auth.verifyEmail", { token })).rejects.toMatchObject({ code: 400 });
		});
	});

	describe("password reset", () => {
		it("revokes every session of that user: a revocation row per session family, listed by auth.revocations", async () => {
			const person = newPerson();
			const { user, session: first } = await signupWith(mint, person);
			const { session: second } = await call("auth.login", { email: person.email, password: person.password });
			const { session: third } = await call("auth.login", { email: person.email, password: person.password });
			const sids = [first, second, third].map(s => s.sessionId);
			expect(new Set(sids).size).toBe(3);
			// Someone else's session must survive.
			const other = await signupWith(mint);

			await call("auth.forgotPassword", { email: person.email });
			const requested = await waitFor(() => mint.events.find(e => e.name === "user.passwordResetRequested" && e.params.userId === user.id));
			const password = "a brand new passphrase";
			const before = Date.now();
			const reset = await call("auth.resetPassword", { token: requested.params.resetToken, password, passwordConfirm: password });
			const after = Date.now();
			expect(reset.id).toBe(user.id);

			const ttlMs = (mint.config.auth.accessTokenTtlSec + 60) * 1000;
			const rows = await auth.stores.revocations.find({ query: { _id: { $in: [...sids, other.session.sessionId] } } });
			expect(rows.map((r: any) => r._id).sort()).toEqual([...sids].sort());
			for (const row of rows) {
				expect(row.expiresAt).toBeGreaterThanOrEqual(before + ttlMs);
				expect(row.expiresAt).toBeLessThanOrEqual(after + ttlMs);
			}

			const listed: { sid: string; expiresAt: number }[] = await call("auth.revocations");
			const mine = listed.filter(r => sids.includes(r.sid) || r.sid === other.session.sessionId);
			expect(mine.map(r => r.sid).sort()).toEqual([...sids].sort());
			for (const r of mine) expect(r.expiresAt).toBe(rows.find((row: any) => row._id === r.sid).expiresAt);

			const sessions = await auth.stores.sessions.find({ query: { userId: user.id } });
			expect(sessions).toHaveLength(3);
			for (const s of sessions) expect(typeof s.revokedAt).toBe("number");

			const revoked = mint.events.find(e => e.name === "auth.sessionsRevoked" && sids.every(sid => e.params.sids.includes(sid)));
			expect(revoked?.params.sids.slice().sort()).toEqual([...sids].sort());

			for (const s of [first, second, third]) {
				await expect(call("auth.refresh", { refreshToken: s.refreshToken })).rejects.toMatchObject({ code: 401, type: "UNAUTHORIZED" });
			}
			expect((await call("auth.refresh", { refreshToken: other.session.refreshToken })).session.sessionId).toBe(other.session.sessionId);
			await expect(call("auth.login", { email: person.email, password: person.password })).rejects.toMatchObject({ code: 401 });
			expect((await call("auth.login", { email: person.email, password })).user.id).toBe(user.id);
		});
	});
});

describe("signing keys", () => {
	const PRIVATE_JWK_FIELDS = ["d", "p", "q", "dp", "dq", "qi", "oth"];

	describe("after two rotations", () => {
		let mint: TestMint;
		const call = (action: string, params: object = {}): Promise<any> => mint.broker.call(action, params);
		const store = () => authOf(mint).stores.signingKeys;

		beforeAll(async () => {
			mint = await startTestMint({ SERVICES: "auth" });
		});
		afterAll(() => mint?.stop());

		it("publishes the current key, the new next key and the retired keys whose tokens may still be alive", async () => {
			const initial = await store().find({});
			expect(initial.map((k: any) => k.state).sort()).toEqual(["current", "next"]);
			const k1 = initial.find((k: any) => k.state === "current")._id;
			const k2 = initial.find((k: any) => k.state === "next")._id;
			const early = await signupWith(mint);
			expect(tokenKid(early.session.accessToken)).toBe(k1);

			const first = await call("auth.rotateKeys");
			expect(first.currentKid).toBe(k2);
			const k3 = (await store().find({ query: { state: "next" } })).map((k: any) => k._id);
			expect(k3).toHaveLength(1);
			const second = await call("auth.rotateKeys");
			expect(second.currentKid).toBe(k3[0]);

			const rows = await store().find({});
			const byState = (state: string) =>
				rows
					.filter((k: any) => k.state === state)
					.map((k: any) => k._id)
					.sort();
			const k4 = byState("next");
			expect(byState("current")).toEqual([k3[0]]);
			expect(k4).toHaveLength(1);
			expect([k1, k2, k3[0]]).not.toContain(k4[0]);
			expect(byState("retired")).toEqual([k1, k2].sort());
			const horizon = Date.now() + (mint.config.auth.accessTokenTtlSec + 60) * 1000;
			for (const key of rows.filter((k: any) => k.state === "retired")) {
				expect(key.expiresAt).toBeGreaterThan(Date.now());
				expect(key.expiresAt).toBeLessThanOrEqual(horizon);
			}

			const jwks = await call("auth.jwks");
			const published = [k1, k2, k3[0], k4[0]].sort();
			expect(jwks.keys.map((k: any) => k.kid).sort()).toEqual(published);
			expect([...second.published].sort()).toEqual(published);

			// A token signed before both rotations still verifies against the JWKS.
			const claims = await verifyAccessToken(early.session.accessToken, jwks, mint.config.auth);
			expect(claims.sub).toBe(early.user.id);
			// New tokens are signed with the current key.
			const late = await signupWith(mint);
			expect(tokenKid(late.session.accessToken)).toBe(k3[0]);
			expect((await verifyAccessToken(late.session.accessToken, jwks, mint.config.auth)).sub).toBe(late.user.id);
		});

		it("auth.jwks holds only public RSA fields, never private ones", async () => {
			const jwks = await call("auth.jwks");
			expect(jwks.keys.length).toBeGreaterThanOrEqual(2);
			for (const key of jwks.keys) {
				expect(Object.keys(key).sort()).toEqual(["alg", "e", "kid", "kty", "n", "use"]);
				expect(key).toMatchObject({ kty: "RSA", alg: "RS256", use: "sig", e: "AQAB" });
				for (const field of PRIVATE_JWK_FIELDS) expect(key).not.toHaveProperty(field);
			}
		});

		it("stores private keys only sealed with AUTH_SECRET, never as PEM", async () => {
			const rows = await store().find({});
			expect(rows.length).toBeGreaterThanOrEqual(2);
			for (const row of rows) {
				const { slot, ...fields } = row;
				expect(Object.keys(fields).sort()).toEqual(["_id", "activatedAt", "createdAt", "expiresAt", "publicJwk", "sealedPrivateKey", "state"]);
				// A key holds at most the slot of its own state (keys.ts KeySlot).
				if (slot !== undefined) expect(slot).toBe(row.state);
				expect(typeof row.sealedPrivateKey).toBe("string");
				expect(row.sealedPrivateKey).not.toContain("PRIVATE KEY");
				for (const field of PRIVATE_JWK_FIELDS) expect(row.publicJwk).not.toHaveProperty(field);
				// It is the key, encrypted: the secret opens it, another secret does not.
				expect(unseal(row.sealedPrivateKey, nodeSecrets(mint.config).current)).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
				expect(() => unseal(row.sealedPrivateKey, "x".repeat(40))).toThrow();
			}
			expect(readTree(path.join(mint.dataDir, "auth"))).not.toContain("PRIVATE KEY");
		});

		it("stops publishing a retired key once its tokens have expired, and deletes it at the next rotation", async () => {
			const retired = await store().find({ query: { state: "retired" } });
			expect(retired.length).toBeGreaterThanOrEqual(1);
			const gone = retired[0]._id;
			expect(await store().updateMany({ _id: gone }, { $set: { expiresAt: Date.now() - 1 } })).toBe(1);

			expect((await call("auth.jwks")).keys.map((k: any) => k.kid)).not.toContain(gone);
			await call("auth.rotateKeys");
			expect(await store().findOne({ _id: gone })).toBeNull();
		});
	});

	describe("concurrent rotations", () => {
		let mint: TestMint;
		beforeAll(async () => {
			mint = await startTestMint({ SERVICES: "auth" });
		});
		afterAll(() => mint?.stop());

		it("3 rotateKeys calls at once leave exactly one current key and exactly one next key", async () => {
			const store = authOf(mint).stores.signingKeys;
			const initial = await store.find({});
			const k1 = initial.find((k: any) => k.state === "current")._id;
			const k2 = initial.find((k: any) => k.state === "next")._id;

			const { ok, errors } = await settle([1, 2, 3].map(() => mint.broker.call("auth.rotateKeys") as Promise<any>));
			// A refused concurrent rotation would be acceptable; a corrupted key set is not.
			for (const err of errors) expect(err).not.toBeInstanceOf(TypeError);
			expect(ok.length).toBeGreaterThanOrEqual(1);

			const rows = await store.find({});
			const states = rows.map((k: any) => `${k._id.slice(0, 8)}:${k.state}`);
			expect({ current: rows.filter((k: any) => k.state === "current").length, next: rows.filter((k: any) => k.state === "next").length, states }).toEqual({
				current: 1,
				next: 1,
				states,
			});

			const current = rows.find((k: any) => k.state === "current")._id;
			expect(authOf(mint).signingKey.kid).toBe(current);
			expect(current).not.toBe(k1);
			const kids = (await mint.broker.call<any, any>("auth.jwks", {})).keys.map((k: any) => k.kid);
			// k1 signed tokens that are still alive; k2 is current or retired: both stay published.
			expect(kids).toEqual(expect.arrayContaining([k1, k2, current, rows.find((k: any) => k.state === "next")._id]));
		});
	});
});
