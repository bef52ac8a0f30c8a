/**
 * The gateway's authentication, without a broker: Bearer or cookie, the
 * Origin check only for a cookie that authenticates, the silent refresh, and
 * the revocation list loaded from auth and resynced.
 */
import type { AccessClaims } from "../../lib/access-tokens";
import { loadConfig } from "../../lib/config";
import { compileTrustedProxies, type Res, type RoutedReq } from "../../services/api/http";
import type { RevokedSession } from "../../contracts/users";
import { REVOCATION_RESYNC_MS, SessionAuth } from "../../services/api/session-auth";

const VALID = "valid-token";
const OUR_ORIGIN = "http://mint.test";
const EVIL_ORIGIN = "https://evil.example";

const claimsFor = (sub: string, sid: string) => ({ sub, sid }) as AccessClaims;

/** A request as moleculer-web hands it to authenticate: routed, with its cookies parsed. */
function routedReq(opts: { method?: string; action?: string; bearer?: string; cookies?: Record<string, string>; origin?: string } = {}): RoutedReq {
	const headers: Record<string, string> = { host: "mint.test" };
	if (opts.bearer) headers.authorization = `Bearer ${opts.bearer}`;
	if (opts.origin) headers.origin = opts.origin;
	return {
		method: opts.method ?? "GET",
		headers,
		socket: { remoteAddress: "10.0.0.1" },
		$params: {},
		$action: { name: opts.action ?? "wallet.mine" },
		$cookies: opts.cookies ?? {},
	} as unknown as RoutedReq;
}

/** Just enough of a response to collect Set-Cookie. */
function fakeRes() {
	const headers = new Map<string, unknown>();
	const res = {
		getHeader: (name: string) => headers.get(name.toLowerCase()),
		setHeader: (name: string, value: unknown) => headers.set(name.toLowerCase(), value),
	};
	const setCookies = () => (headers.get("set-cookie") as string[] | undefined) ?? [];
	return { res: res as unknown as Res, setCookies };
}

const SESSION = { sessionId: "sid-2", accessToken: "new-access", accessExpiresAt: 2e9, refreshToken: "new-refresh", refreshExpiresAt: 2e9 };
const REFRESHED = { user: { id: "user-2" }, session: SESSION } as never;

function harness(revocations: () => Promise<RevokedSession[]> = async () => []) {
	let clock = 1_000_000;
	const verifier = { verify: jest.fn(async (token: string) => (token === VALID ? claimsFor("user-1", "sid-1") : null)), revokeSessions: jest.fn() };
	const loadRevocations = jest.fn(revocations);
	const logger = { warn: jest.fn() };
	const auth = new SessionAuth({
		verifier,
		loadRevocations,
		logger,
		config: loadConfig({}),
		trustProxy: compileTrustedProxies([]),
		secure: false,
		now: () => clock,
	});
	const refresh = jest.fn(async (_refreshToken: string) => REFRESHED);
	return { auth, verifier, loadRevocations, logger, refresh, advance: (ms: number) => (clock += ms) };
}

describe("SessionAuth.authenticate", () => {
	it("names the caller of a valid Bearer token, with no Origin check even on a write", async () => {
		const { auth, refresh } = harness();
		const { res } = fakeRes();
		const caller = await auth.authenticate(routedReq({ method: "POST", bearer: VALID, origin: EVIL_ORIGIN }), res, refresh);
		expect(caller).toEqual({ id: "user-1", sid: "sid-1" });
	});

	it("refuses (403) a cross-site write that a valid access cookie would authenticate, and allows our own page", async () => {
		const { auth, refresh } = harness();
		const { res } = fakeRes();
		const cookies = { "access.token": VALID };
		await expect(auth.authenticate(routedReq({ method: "POST", cookies, origin: EVIL_ORIGIN }), res, refresh)).rejects.toMatchObject({ code: 403 });
		await expect(auth.authenticate(routedReq({ method: "POST", cookies, origin: OUR_ORIGIN }), res, refresh)).resolves.toEqual({ id: "user-1", sid: "sid-1" });
		await expect(auth.authenticate(routedReq({ method: "GET", cookies, origin: EVIL_ORIGIN }), res, refresh)).resolves.toEqual({ id: "user-1", sid: "sid-1" });
	});

	it("lets a stale access cookie authenticate nothing, without an Origin check", async () => {
		const { auth, refresh } = harness();
		const { res, setCookies } = fakeRes();
		const caller = await auth.authenticate(routedReq({ method: "POST", cookies: { "access.token": "stale" }, origin: EVIL_ORIGIN }), res, refresh);
		expect(caller).toBeNull();
		expect(refresh).not.toHaveBeenCalled();
		expect(setCookies()).toEqual([]);
	});

	it("refreshes silently from the refresh cookie, setting the new session's cookies", async () => {
		const { auth, refresh } = harness();
		const { res, setCookies } = fakeRes();
		const caller = await auth.authenticate(routedReq({ cookies: { "access.token": "expired", "refresh.token": "old-refresh" } }), res, refresh);
		expect(caller).toEqual({ id: "user-2", sid: "sid-2" });
		expect(refresh).toHaveBeenCalledWith("old-refresh");
		expect(setCookies().map(c => c.split(";")[0])).toEqual(["access.token=new-access", "refresh.token=new-refresh"]);
	});

	it("checks the Origin before a silent refresh on a write", async () => {
		const { auth, refresh } = harness();
		const { res } = fakeRes();
		const req = routedReq({ method: "POST", cookies: { "refresh.token": "old-refresh" }, origin: EVIL_ORIGIN });
		await expect(auth.authenticate(req, res, refresh)).rejects.toMatchObject({ code: 403 });
		expect(refresh).not.toHaveBeenCalled();
	});

	it("clears the cookies and answers anonymous when auth refuses the refresh (401), and passes any other error on", async () => {
		const { auth, refresh } = harness();
		const cookies = { "refresh.token": "old-refresh" };
		refresh.mockRejectedValueOnce(Object.assign(new Error("Session expired"), { code: 401 }));
		const refused = fakeRes();
		expect(await auth.authenticate(routedReq({ cookies }), refused.res, refresh)).toBeNull();
		expect(refused.setCookies().map(c => c.split(";")[0])).toEqual(["access.token=", "refresh.token="]);

		refresh.mockRejectedValueOnce(Object.assign(new Error("auth is down"), { code: 503 }));
		await expect(auth.authenticate(routedReq({ cookies }), fakeRes().res, refresh)).rejects.toThrow("auth is down");
	});

	it("does no silent refresh for the actions that read the refresh cookie themselves or issue a session", async () => {
		const { auth, refresh } = harness();
		for (const action of ["auth.refresh", "auth.logout", "auth.login", "auth.signup"]) {
			const req = routedReq({ action, cookies: { "refresh.token": "old-refresh" }, origin: OUR_ORIGIN });
			expect(await auth.authenticate(req, fakeRes().res, refresh)).toBeNull();
		}
		expect(refresh).not.toHaveBeenCalled();
	});

	it("never involves auth for the gateway's own health checks or an anonymous request", async () => {
		const { auth, verifier, loadRevocations, refresh } = harness();
		expect(await auth.authenticate(routedReq({ action: "api.ready", cookies: { "access.token": VALID } }), fakeRes().res, refresh)).toBeNull();
		expect(await auth.authenticate(routedReq(), fakeRes().res, refresh)).toBeNull();
		expect(verifier.verify).not.toHaveBeenCalled();
		expect(loadRevocations).not.toHaveBeenCalled();
	});
});

describe("SessionAuth revocation list", () => {
	it("loads the active revocations before the first verification, then again only after the resync interval", async () => {
		const { auth, verifier, loadRevocations, refresh, advance } = harness(async () => [{ sid: "sid-9", expiresAt: 5_000_000 }]);
		await auth.authenticate(routedReq({ bearer: VALID }), fakeRes().res, refresh);
		expect(verifier.revokeSessions).toHaveBeenCalledWith(["sid-9"], 5_000_000);
		await auth.authenticate(routedReq({ bearer: VALID }), fakeRes().res, refresh);
		expect(loadRevocations).toHaveBeenCalledTimes(1);
		advance(REVOCATION_RESYNC_MS);
		await auth.authenticate(routedReq({ bearer: VALID }), fakeRes().res, refresh);
		expect(loadRevocations).toHaveBeenCalledTimes(2);
	});

	it("shares one load among concurrent requests", async () => {
		const { auth, loadRevocations } = harness();
		await Promise.all([auth.ensureRevocationsLoaded(), auth.ensureRevocationsLoaded(), auth.ensureRevocationsLoaded()]);
		expect(loadRevocations).toHaveBeenCalledTimes(1);
	});

	it("cannot vouch for any session before a first load succeeds, and keeps the last list when a resync fails", async () => {
		const { auth, loadRevocations, logger, refresh, advance } = harness();
		loadRevocations.mockRejectedValueOnce(new Error("auth is down"));
		await expect(auth.authenticate(routedReq({ bearer: VALID }), fakeRes().res, refresh)).rejects.toThrow("auth is down");

		await auth.ensureRevocationsLoaded();
		advance(REVOCATION_RESYNC_MS);
		loadRevocations.mockRejectedValueOnce(new Error("auth is down again"));
		await expect(auth.authenticate(routedReq({ bearer: VALID }), fakeRes().res, refresh)).resolves.toEqual({ id: "user-1", sid: "sid-1" });
		expect(logger.warn).toHaveBeenCalledWith(
			{ err: expect.objectContaining({ message: "auth is down again" }) },
			"revocation resync failed; keeping the last list",
		);
	});
});
