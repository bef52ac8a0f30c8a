/**
 * The gateway drops a signing key once it leaves the JWKS (on the rotation
 * event and on its periodic refresh), with the tokens it had already verified,
 * and refuses tokens that live longer than the configured lifetime.
 */
import { decodeJwt } from "jose";
import { nodeSecrets } from "../../lib/secrets";
import { openSigningKey, type SigningKey, type StoredKey } from "../../services/auth/keys";
import { signAccessToken } from "../../services/auth/tokens";
import { signup, type Session } from "../helpers/http";
import { startTestMint, waitFor, type TestMint } from "../helpers/mint";

const TTL_SEC = 60;
const TEN_YEARS_SEC = 10 * 365 * 86_400;

const authOf = (mint: TestMint) => mint.broker.getLocalService("auth") as any;
const keyStore = (mint: TestMint) => authOf(mint).stores.signingKeys;
const currentStoredKey = async (mint: TestMint): Promise<StoredKey> => (await keyStore(mint).find({ query: { state: "current" } }))[0];

const walletStatus = async (mint: TestMint, accessToken: string) =>
	(await mint.http.get("/api/v1/wallet/user").set("Authorization", `Bearer ${accessToken}`)).status;

/** A token for the session's user, as auth would sign it with the given key (possibly one auth no longer publishes). */
async function tokenSignedWith(mint: TestMint, key: SigningKey, session: Session, ttlSec = TTL_SEC): Promise<string> {
	const { sid } = decodeJwt(session.access) as { sid: string };
	const { issuer, audience } = mint.config.auth;
	return (await signAccessToken(key, { userId: session.user.id, sessionId: sid }, { issuer, audience, ttlSec })).token;
}

const openStored = (mint: TestMint, stored: StoredKey) => openSigningKey(stored, nodeSecrets(mint.config).unsealWith);

/** Makes a retired key's tokens count as expired, so auth stops publishing it (and deletes it at the next rotation). */
async function expireRetiredKey(mint: TestMint, kid: string): Promise<void> {
	expect(await keyStore(mint).updateMany({ _id: kid, state: "retired" }, { $set: { expiresAt: Date.now() - 1 } })).toBe(1);
	expect((await mint.broker.call<{ keys: { kid: string }[] }>("auth.jwks")).keys.map(k => k.kid)).not.toContain(kid);
}

describe("a signing key removed by a rotation", () => {
	let mint: TestMint;
	beforeAll(async () => {
		mint = await startTestMint({ ACCESS_TOKEN_TTL_SEC: String(TTL_SEC) });
	});
	afterAll(() => mint.stop());

	it("is no longer trusted once the rotation event arrives, nor are the tokens it signed that the gateway had cached", async () => {
		const alice = await signup(mint);
		const first = await currentStoredKey(mint);
		const firstKey = openStored(mint, first);
		expect(await walletStatus(mint, alice.access)).toBe(200); // verified and cached by the gateway

		await mint.broker.call("auth.rotateKeys");
		// Retired but still published: its tokens may still be alive.
		expect(await walletStatus(mint, alice.access)).toBe(200);
		expect(await walletStatus(mint, await tokenSignedWith(mint, firstKey, alice))).toBe(200);

		await expireRetiredKey(mint, first._id);
		await mint.broker.call("auth.rotateKeys");
		expect(await keyStore(mint).findOne({ _id: first._id })).toBeNull();
		expect(mint.events.filter(e => e.name === "auth.keysRotated")).toHaveLength(2);

		expect(await walletStatus(mint, alice.access)).toBe(401);
		expect(await walletStatus(mint, await tokenSignedWith(mint, firstKey, alice))).toBe(401);
		// The current key still works.
		const bob = await signup(mint);
		expect(await walletStatus(mint, bob.access)).toBe(200);
	});
});

describe("a retired key whose tokens have expired", () => {
	let mint: TestMint;
	beforeAll(async () => {
		mint = await startTestMint({ ACCESS_TOKEN_TTL_SEC: String(TTL_SEC), JWKS_REFRESH_SEC: "1" });
	});
	afterAll(() => mint.stop());

	it("leaves the JWKS without any event, and the gateway's periodic refresh drops it", async () => {
		const alice = await signup(mint);
		const first = await currentStoredKey(mint);
		const firstKey = openStored(mint, first);
		expect(await walletStatus(mint, alice.access)).toBe(200);
		await mint.broker.call("auth.rotateKeys");
		expect(await walletStatus(mint, alice.access)).toBe(200);

		const rotationEvents = mint.events.length;
		await expireRetiredKey(mint, first._id);
		await waitFor(async () => (await walletStatus(mint, alice.access)) === 401, 5000);
		expect(await walletStatus(mint, await tokenSignedWith(mint, firstKey, alice))).toBe(401);
		expect(mint.events.slice(rotationEvents).filter(e => e.name === "auth.keysRotated")).toEqual([]);
	});
});

describe("token lifetime", () => {
	let mint: TestMint;
	let alice: Session;
	beforeAll(async () => {
		mint = await startTestMint({ ACCESS_TOKEN_TTL_SEC: String(TTL_SEC) });
		alice = await signup(mint);
	});
	afterAll(() => mint.stop());

	it("a token signed with the current key but living 10 years is refused; one living the configured lifetime passes", async () => {
		const current: SigningKey = authOf(mint).signingKey;
		expect(current.kid).toBe((await currentStoredKey(mint))._id);
		expect(await walletStatus(mint, await tokenSignedWith(mint, current, alice, TEN_YEARS_SEC))).toBe(401);
		expect(await walletStatus(mint, await tokenSignedWith(mint, current, alice, TTL_SEC))).toBe(200);
	});
});
