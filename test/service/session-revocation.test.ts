/**
 * Revocation always wins: however a refresh (or a login) interleaves with a
 * logout, a logout-all or a password reset, no session it leaves behind works
 * afterwards. Sessions also end at their absolute lifetime, and expired
 * records are purged.
 */
import { hashToken } from "../../services/auth/tokens";
import { newPerson, signupBody } from "../helpers/http";
import { startTestMint, type TestMint } from "../helpers/mint";

let mint: TestMint;
let auth: any;
const call = (action: string, params: object = {}, meta: object = {}): Promise<any> => mint.broker.call(action, params, { meta });
beforeAll(async () => {
	mint = await startTestMint({ REFRESH_GRACE_SEC: "30" });
	auth = mint.broker.getLocalService("auth");
});
afterAll(() => mint.stop());

const refreshWorks = (refreshToken: string) =>
	call("auth.refresh", { refreshToken }).then(
		() => true,
		(err: { code: number }) => {
			if (err.code !== 401) throw err;
			return false;
		},
	);

/** Yields the event loop a random number of times (up to `most`), so the two sides interleave differently each round. */
const jitter = async (most = 4) => {
	for (let i = Math.floor(Math.random() * (most + 1)); i > 0; i--) await new Promise(r => setImmediate(r));
};

async function newUser() {
	const person = newPerson();
	const { user, session } = await call("auth.signup", signupBody(person));
	return { person, user, session };
}

describe("a refresh racing a revocation", () => {
	it("logout: in 300 races no successor works afterwards, nor the token logged out", async () => {
		const { user } = await newUser();
		const stored = await auth.adapter.findOne({ _id: user.id });
		let refreshedBeforeLogout = 0;
		for (let round = 0; round < 300; round++) {
			const session = await auth.startSession(stored);
			const [refreshed] = await Promise.allSettled([
				(async () => {
					await jitter();
					return call("auth.refresh", { refreshToken: session.refreshToken });
				})(),
				(async () => {
					await jitter(40);
					return call("auth.logout", { refreshToken: session.refreshToken }, { user: { id: user.id, sid: session.sessionId } });
				})(),
			]);
			if (refreshed.status === "fulfilled") {
				refreshedBeforeLogout++;
				expect([round, await refreshWorks(refreshed.value.session.refreshToken)]).toEqual([round, false]);
			}
			expect([round, await refreshWorks(session.refreshToken)]).toEqual([round, false]);
		}
		// Both orders happened: the test raced for real.
		expect(refreshedBeforeLogout).toBeGreaterThan(0);
		expect(refreshedBeforeLogout).toBeLessThan(300);
	}, 60_000);

	it("password reset: in 100 races no successor works afterwards, and the old password no longer logs in", async () => {
		const { person, user } = await newUser();
		let password = person.password;
		for (let round = 0; round < 100; round++) {
			const stored = await auth.adapter.findOne({ _id: user.id });
			const session = await auth.startSession(stored);
			const reset = await auth.createOneTimeToken(user.id, "password-reset", 600);
			await auth.adapter.updateOne({ _id: user.id }, { $set: { resetTokenId: hashToken(reset.token) } }); // as issuePasswordReset does
			const next = `new password ${round}`;
			const [refreshed, resetDone] = await Promise.allSettled([
				(async () => {
					// The reset hashes the new password (tens of ms) before it revokes: aim anywhere in that span.
					await new Promise(r => setTimeout(r, Math.random() * 80));
					await jitter();
					return call("auth.refresh", { refreshToken: session.refreshToken });
				})(),
				(async () => {
					await jitter();
					return call("auth.resetPassword", { token: reset.token, password: next, passwordConfirm: next });
				})(),
			]);
			expect(resetDone.status).toBe("fulfilled");
			password = next;
			if (refreshed.status === "fulfilled") expect([round, await refreshWorks(refreshed.value.session.refreshToken)]).toEqual([round, false]);
			expect([round, await refreshWorks(session.refreshToken)]).toEqual([round, false]);
		}
		await expect(call("auth.login", { email: person.email, password: person.password })).rejects.toMatchObject({ code: 401 });
		expect((await call("auth.login", { email: person.email, password })).user.id).toBe(user.id);
	}, 120_000);

	it("logout-all: a login that checked the password before it cannot keep its session", async () => {
		const { person, user } = await newUser();
		let refused = 0;
		for (let round = 0; round < 30; round++) {
			const current = await call("auth.login", { email: person.email, password: person.password });
			const [login] = await Promise.allSettled([
				call("auth.login", { email: person.email, password: person.password }),
				(async () => {
					await jitter();
					return call("auth.logoutAll", {}, { user: { id: user.id, sid: current.session.sessionId } });
				})(),
			]);
			expect(await refreshWorks(current.session.refreshToken)).toBe(false);
			const epoch = (await auth.adapter.findOne({ _id: user.id })).sessionEpoch;
			// Whatever still works belongs to the epoch logout-all started: nothing from before it survives.
			const live = await auth.stores.families.find({ query: { userId: user.id, revokedAt: null } });
			expect(live.map((f: { epoch: number }) => f.epoch).filter((e: number) => e !== epoch)).toEqual([]);
			if (login.status === "rejected") {
				expect(login.reason.code).toBe(401);
				refused++;
			} else if (await refreshWorks(login.value.session.refreshToken)) {
				const family = await auth.stores.families.findOne({ _id: login.value.session.sessionId });
				expect(family.epoch).toBe(epoch);
			}
		}
		// The login checking its password while logout-all ran was refused in some rounds: the race was real.
		expect(refused).toBeGreaterThan(0);
	}, 60_000);
});

describe("POST /auth/logout-all", () => {
	it("ends every session of the caller on every device, and only theirs", async () => {
		const person = newPerson();
		const first = await mint.http.post("/api/v1/auth/signup").send(signupBody(person));
		const phone = await mint.http.post("/api/v1/auth/login").send({ email: person.email, password: person.password });
		const stranger = await newUser();
		const cookieOf = (res: any) => (res.headers["set-cookie"] as string[]).map(c => c.split(";")[0]).join("; ");
		const res = await mint.http.post("/api/v1/auth/logout-all").set("Cookie", cookieOf(phone));
		expect(res.status).toBe(204);
		expect((res.headers["set-cookie"] as unknown as string[]).join(";")).toMatch(/access\.token=;/);
		for (const device of [first, phone]) {
			const me = await mint.http.get("/api/v1/auth/user").set("Cookie", cookieOf(device));
			expect(me.body).toBeNull();
		}
		expect(await refreshWorks(stranger.session.refreshToken)).toBe(true);
		expect((await mint.http.post("/api/v1/auth/logout-all")).status).toBe(401);
	});
});

describe("session lifetime", () => {
	it("ends at its absolute lifetime, however often it was refreshed", async () => {
		const { user, session } = await newUser();
		const refreshed = await call("auth.refresh", { refreshToken: session.refreshToken });
		// The family's end moves into the past (as 30 days would), refresh tokens still inside their own TTL.
		await auth.stores.families.updateMany({ _id: session.sessionId }, { $set: { absoluteExpiresAt: Date.now() - 1 } });
		expect(await refreshWorks(refreshed.session.refreshToken)).toBe(false);
		const family = await auth.stores.families.findOne({ _id: session.sessionId });
		expect(family.revokedAt).toEqual(expect.any(Number));
		expect(user.id).toBe(family.userId);
	});

	it("a refresh token never outlives its session's absolute end", async () => {
		const { session } = await newUser();
		const family = await auth.stores.families.findOne({ _id: session.sessionId });
		expect(family.absoluteExpiresAt - family.createdAt).toBe(mint.config.auth.sessionMaxAgeSec * 1000);
		await auth.stores.families.updateMany({ _id: session.sessionId }, { $set: { absoluteExpiresAt: Date.now() + 60_000 } });
		const refreshed = await call("auth.refresh", { refreshToken: session.refreshToken });
		expect(refreshed.session.refreshExpiresAt).toBeLessThanOrEqual(Math.floor((Date.now() + 60_000) / 1000));
	});

	it("expired tokens, sessions, families and revocations are purged", async () => {
		const { user, session } = await newUser();
		const past = Date.now() - 1;
		await auth.stores.oneTimeTokens.updateMany({ userId: user.id }, { $set: { expiresAt: past } });
		await auth.stores.sessions.updateMany({ familyId: session.sessionId }, { $set: { expiresAt: past } });
		await auth.stores.families.updateMany({ _id: session.sessionId }, { $set: { absoluteExpiresAt: past } });
		const purged = await auth.purgeExpired();
		expect(purged.oneTimeTokens).toBeGreaterThanOrEqual(1);
		expect(purged.sessions).toBeGreaterThanOrEqual(1);
		expect(purged.families).toBeGreaterThanOrEqual(1);
		expect(await auth.stores.oneTimeTokens.count({ query: { userId: user.id } })).toBe(0);
		expect(await auth.stores.families.count({ query: { _id: session.sessionId } })).toBe(0);
	});
});
