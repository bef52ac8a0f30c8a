/**
 * auth's parts without a broker: sessions, one-time tokens and the user
 * outbox on real NeDB stores, with a recording emitter in place of the broker.
 */
import fs from "node:fs";
import { createAdapter, type DbAdapter } from "../../mixins/db.mixin";
import { OneTimeTokens, USE_LEASE_MS, type TokenPurpose } from "../../services/auth/one-time-tokens";
import { Sessions } from "../../services/auth/sessions";
import { EXTRA_COLLECTIONS, purgeExpired, USERS, type AuthStores } from "../../services/auth/stores";
import { UserOutbox } from "../../services/auth/user-outbox";
import { hashToken } from "../../services/auth/tokens";
import { nameUpdate, newUser, Users, type UserEntity } from "../../services/auth/users";
import { testConfig } from "../helpers/mint";
import { makeTestKey, QUIET_LOG, TEST_SECRET, TEST_SECRETS, TEST_SESSION_SETTINGS } from "./helpers/signing";

const SETTINGS = TEST_SESSION_SETTINGS;
const secrets = TEST_SECRETS;
const quiet = QUIET_LOG;

let dataDir: string;
let adapters: DbAdapter<unknown>[];
let db: AuthStores;
let emitted: { name: string; payload: Record<string, unknown> }[];
const recorder = { emit: (name: string, payload: unknown) => void emitted.push({ name, payload: payload as Record<string, unknown> }) };
let sessions: Sessions;

beforeAll(async () => {
	const config = testConfig();
	dataDir = config.dataDir;
	adapters = [USERS, ...EXTRA_COLLECTIONS].map(spec => createAdapter<unknown>(config, "auth", spec));
	await Promise.all(adapters.map(adapter => adapter.connect()));
	const [users, sessionsStore, families, oneTimeTokens, signingKeys, revocations] = adapters;
	db = { users, sessions: sessionsStore, families, oneTimeTokens, signingKeys, revocations } as AuthStores;
	const key = await makeTestKey();
	sessions = new Sessions({ db, settings: SETTINGS, signer: { current: key.signing }, secret: TEST_SECRET, emitter: recorder, log: quiet });
});
afterAll(async () => {
	for (const adapter of adapters) await adapter.disconnect();
	fs.rmSync(dataDir, { recursive: true, force: true });
});
beforeEach(() => {
	emitted = [];
});

let counter = 0;
async function aUser(): Promise<UserEntity> {
	const outbox = new UserOutbox(db, secrets, quiet);
	const id = `00000000-0000-4000-8000-${String(++counter).padStart(12, "0")}`;
	const welcome = outbox.record("user.signedUp", {
		userId: id,
		email: `user${counter}@example.com`,
		firstName: "Ada",
		lastName: "Lovelace",
		verificationToken: "v".repeat(43),
		verificationExpiresAt: new Date().toISOString(),
	});
	const user = newUser(id, { firstName: "Ada", lastName: "Lovelace", email: `user${counter}@example.com` }, "hash", welcome);
	await db.users.insert(user);
	return user;
}

const refused = { code: 401, message: "Session expired" };

describe("Sessions", () => {
	it("a refresh within the grace period gets the same successor; a use after it revokes the whole family and announces it", async () => {
		const user = await aUser();
		const first = await sessions.start(user);
		const [a, b] = await Promise.all([sessions.rotate(first.refreshToken), sessions.rotate(first.refreshToken)]);
		expect(a.session.refreshToken).toBe(b.session.refreshToken);
		expect(a.session.sessionId).toBe(first.sessionId);
		expect(a.user.id).toBe(user._id);

		await db.sessions.updateMany({ familyId: first.sessionId, rotatedAt: { $ne: null } }, { $set: { rotatedAt: Date.now() - 31_000 } });
		await expect(sessions.rotate(first.refreshToken)).rejects.toMatchObject(refused);
		await expect(sessions.rotate(a.session.refreshToken)).rejects.toMatchObject(refused);
		expect((await db.families.findOne({ _id: first.sessionId }))?.revokedAt).toEqual(expect.any(Number));
		expect(emitted.map(e => [e.name, e.payload.sids])).toEqual([["auth.sessionsRevoked", [first.sessionId]]]);
	});

	it("a family revoked before its refresh takes the refresh's new token down with it", async () => {
		const session = await sessions.start(await aUser());
		await sessions.logOut(session.sessionId, undefined, recorder);
		await expect(sessions.rotate(session.refreshToken)).rejects.toMatchObject(refused);
		expect(await db.sessions.count({ query: { familyId: session.sessionId, revokedAt: null } })).toBe(0);
	});

	it("revoking all of a user's sessions moves the epoch: a login that read the user before cannot keep its session", async () => {
		const user = await aUser();
		const phone = await sessions.start(user);
		expect(await sessions.revokeAllOf(user._id, recorder)).toBe(1);
		await expect(sessions.start(user)).rejects.toMatchObject(refused); // `user` still holds the old epoch
		await expect(sessions.rotate(phone.refreshToken)).rejects.toMatchObject(refused);
		const fresh = (await db.users.findOne({ _id: user._id }))!;
		expect(fresh.sessionEpoch).toBe(1);
		expect((await sessions.start(fresh)).sessionId).toEqual(expect.any(String));
	});

	it("a session ends at its absolute lifetime, and revocations are listed until they expire", async () => {
		const session = await sessions.start(await aUser());
		await db.families.updateMany({ _id: session.sessionId }, { $set: { absoluteExpiresAt: Date.now() - 1 } });
		await expect(sessions.rotate(session.refreshToken)).rejects.toMatchObject(refused);
		expect((await sessions.activeRevocations()).map(r => r.sid)).toContain(session.sessionId);
		const purged = await purgeExpired(db, Date.now() + (SETTINGS.accessTokenTtlSec + 61) * 1000);
		expect(purged.families).toBeGreaterThanOrEqual(1);
		expect(await sessions.activeRevocations()).toEqual([]);
	});
});

describe("OneTimeTokens", () => {
	it("a token works once", async () => {
		const user = await aUser();
		const tokens = new OneTimeTokens(db);
		const { token } = await tokens.create(user._id, "verify-email", 600);
		const results = await Promise.allSettled([tokens.consume(token, "verify-email"), tokens.consume(token, "verify-email")]);
		expect(results.filter(r => r.status === "fulfilled").map(r => (r as PromiseFulfilledResult<string>).value)).toEqual([user._id]);
		await expect(tokens.consume(token, "verify-email")).rejects.toMatchObject({ code: 400, message: "Invalid or expired token" });
	});

	it("only the latest reset token is live, and the new password clears it and moves the session epoch, in one write", async () => {
		const user = await aUser();
		const tokens = new OneTimeTokens(db);
		const older = await tokens.issueReset(user._id, 600);
		const latest = await tokens.issueReset(user._id, 600);
		await expect(tokens.consume(older.token, "password-reset")).rejects.toMatchObject({ code: 400 });
		expect(await tokens.consume(latest.token, "password-reset")).toBe(user._id);
		await new Users(db).setPasswordHash(user._id, "new hash");
		expect(await db.users.findOne({ _id: user._id })).toMatchObject({ passwordHash: "new hash", sessionEpoch: 1 });
		expect((await db.users.findOne({ _id: user._id }))?.resetTokenId).toBeUndefined();
	});

	/** The token's use as if it had started USE_LEASE_MS ago. */
	const lapse = (token: string) => db.oneTimeTokens.updateOne({ _id: hashToken(token) }, { $set: { usedAt: Date.now() - USE_LEASE_MS } });
	const cases: [TokenPurpose, (tokens: OneTimeTokens, userId: string) => Promise<string>, (userId: string) => Promise<unknown>][] = [
		["verify-email", async (tokens, userId) => (await tokens.create(userId, "verify-email", 600)).token, userId => new Users(db).markEmailVerified(userId)],
		["password-reset", async (tokens, userId) => (await tokens.issueReset(userId, 600)).token, userId => new Users(db).setPasswordHash(userId, "new hash")],
	];

	it.each(cases)(
		"a %s token whose use died before its effect works again, once, after the use's lease; never once the effect is done",
		async (purpose, issue, effect) => {
			const user = await aUser();
			const tokens = new OneTimeTokens(db);
			const token = await issue(tokens, user._id);
			expect(await tokens.consume(token, purpose)).toBe(user._id);
			// The process died here, before the effect: the use holds the token for its lease.
			await expect(tokens.consume(token, purpose)).rejects.toMatchObject({ code: 400 });
			await lapse(token);
			const retries = await Promise.allSettled([tokens.consume(token, purpose), tokens.consume(token, purpose)]);
			expect(retries.filter(r => r.status === "fulfilled").map(r => (r as PromiseFulfilledResult<string>).value)).toEqual([user._id]);
			await effect(user._id);
			await lapse(token);
			await expect(tokens.consume(token, purpose)).rejects.toMatchObject({ code: 400, message: "Invalid or expired token" });
		},
	);
});

describe("UserOutbox", () => {
	it("a failed publish leaves the sealed record; the relay sends it later under the same id and pulls it", async () => {
		const outbox = new UserOutbox(db, secrets, quiet);
		const user = await aUser();
		const [welcome] = user.outbox!;
		expect(welcome.sealedPayload).not.toContain("verificationToken");
		const down = { emit: () => Promise.reject(new Error("bus down")) };
		expect(await outbox.publish(down, user._id, welcome)).toBe(false);

		const now = new Date(Date.now() + 1);
		expect((await outbox.pending(now)).map(u => u._id)).toContain(user._id);
		expect((await outbox.pending(new Date(now.getTime() - 60_000))).map(u => u._id)).not.toContain(user._id);

		const stored = (await db.users.findOne({ _id: user._id }))!;
		expect(await outbox.relay(recorder, stored, new Date(Date.now() + 1))).toBe(1);
		expect(emitted.map(e => [e.name, e.payload.eventId, e.payload.userId])).toEqual([["user.signedUp", welcome.eventId, user._id]]);
		const after = (await db.users.findOne({ _id: user._id }))!;
		expect(after.outbox).toEqual([]);
		// The count leaves with the last event: the sparse index holds users with work only.
		expect("unpublished" in after).toBe(false);
		expect((await outbox.pending(new Date(Date.now() + 1))).map(u => u._id)).not.toContain(user._id);
	});

	it("keeps the count while events are left, drops it with the last, and adopts an older Mint's counts at start", async () => {
		const outbox = new UserOutbox(db, secrets, quiet);
		const user = await aUser();
		const [welcome] = user.outbox!;
		const reset = outbox.record("user.passwordResetRequested", {
			userId: user._id,
			email: user.email,
			firstName: user.firstName,
			resetToken: "a-reset-token-of-some-length",
			resetExpiresAt: new Date(Date.now() + 60_000).toISOString(),
		});
		await outbox.append(user._id, reset);
		const count = async (id: string) => (await db.users.findOne({ _id: id }))?.unpublished;
		expect(await count(user._id)).toBe(2);
		expect(await outbox.publish(recorder, user._id, welcome)).toBe(true);
		expect(await count(user._id)).toBe(1);
		expect(await outbox.publish(recorder, user._id, reset)).toBe(true);
		expect("unpublished" in (await db.users.findOne({ _id: user._id }))!).toBe(false);
		// Appending again after that counts from nothing.
		await outbox.append(user._id, reset);
		expect(await count(user._id)).toBe(1);

		// As an older Mint left them: one user with an event still to publish, one whose count is spent.
		const waiting = await aUser();
		await db.users.updateOne({ _id: waiting._id }, { $unset: { unpublished: true }, $set: { pendingEvents: 1 } });
		const spent = await aUser();
		await db.users.updateOne({ _id: spent._id }, { $unset: { unpublished: true }, $set: { outbox: [], pendingEvents: 0 } });
		const later = new Date(Date.now() + 60_000);
		expect((await outbox.pending(later)).map(u => u._id)).not.toContain(waiting._id);
		expect(await outbox.adoptOlderCounts()).toBe(1);
		const adopted = (await db.users.findOne({ _id: waiting._id }))!;
		expect([adopted.unpublished, "pendingEvents" in adopted]).toEqual([1, false]);
		expect((await outbox.pending(later)).map(u => u._id)).toContain(waiting._id);
		// The spent one is left as it is (read by nothing), and a second start moves nothing.
		expect((await db.users.findOne({ _id: spent._id }))?.pendingEvents).toBe(0);
		expect(await outbox.adoptOlderCounts()).toBe(0);
	});
});

describe("nameUpdate (PUT /users/me)", () => {
	it("sets what is given, removes the middle name on an empty one, and needs at least one field", () => {
		expect(nameUpdate({ firstName: "Grace", middleName: "" }, "2025-01-01T00:00:00.000Z")).toEqual({
			$set: { updatedAt: "2025-01-01T00:00:00.000Z", firstName: "Grace" },
			$unset: { middleName: true },
		});
		expect(nameUpdate({ lastName: "Hopper" }, "t")).toEqual({ $set: { updatedAt: "t", lastName: "Hopper" } });
		expect(() => nameUpdate({})).toThrow("Validation failed");
	});
});
