import { decodeProtectedHeader } from "jose";
import { tokenKid, verifyAccessToken } from "../../lib/access-tokens";
import { hashToken, randomToken, successorToken } from "../../services/auth/tokens";
import { AUDIENCE, ISSUER, b64url, handSignedToken, issueToken, jwksOf, makeTestKey, nowSec, type TestKey } from "./helpers/signing";

let key: TestKey;
let otherKey: TestKey;

beforeAll(async () => {
	[key, otherKey] = await Promise.all([makeTestKey(), makeTestKey()]);
});

const audience = { issuer: ISSUER, audience: AUDIENCE };

describe("signAccessToken / verifyAccessToken", () => {
	it("a signed token verifies with the issued subject, session, issuer, audience, jti and lifetime", async () => {
		const issued = await issueToken(key, { userId: "user-42", sessionId: "sess-7", ttlSec: 600 });
		const claims = await verifyAccessToken(issued.token, jwksOf(key), audience);
		expect(claims.sub).toBe("user-42");
		expect(claims.sid).toBe("sess-7");
		expect(claims.iss).toBe(ISSUER);
		expect(claims.aud).toBe(AUDIENCE);
		expect(claims.jti).toBe(issued.jti);
		expect(claims.exp).toBe(issued.expiresAt);
		expect(claims.exp - claims.iat).toBe(600);
		expect(Math.abs(claims.iat - nowSec())).toBeLessThanOrEqual(2);
	});

	it("uses the given clock for iat and exp", async () => {
		const at = nowSec() - 30;
		const issued = await issueToken(key, { ttlSec: 900, nowSec: at });
		const claims = await verifyAccessToken(issued.token, jwksOf(key), audience);
		expect(claims.iat).toBe(at);
		expect(claims.exp).toBe(at + 900);
		expect(issued.expiresAt).toBe(at + 900);
	});

	it("a token carries an RS256 header with the signing key's kid", async () => {
		const { token } = await issueToken(key);
		expect(decodeProtectedHeader(token)).toEqual({ alg: "RS256", kid: key.kid, typ: "JWT" });
		expect(tokenKid(token)).toBe(key.kid);
	});

	it("every token gets a fresh jti", async () => {
		const [a, b] = await Promise.all([issueToken(key), issueToken(key)]);
		expect(a.jti).not.toBe(b.jti);
		expect(a.jti).toMatch(/^[0-9a-f-]{36}$/);
	});

	it("a token does not verify against a JWKS holding only another key", async () => {
		const { token } = await issueToken(key);
		await expect(verifyAccessToken(token, jwksOf(otherKey), audience)).rejects.toThrow();
	});

	it("a token signed by another key under this key's kid is refused", async () => {
		const forged = await issueToken({ ...otherKey, signing: { kid: key.kid, privateKey: otherKey.signing.privateKey } });
		await expect(verifyAccessToken(forged.token, jwksOf(key, otherKey), audience)).rejects.toThrow(/signature/i);
	});

	// The gateway's lifetime check (exp - iat) relies on both being present.
	it("a token without iat or without exp is refused", async () => {
		await expect(verifyAccessToken(await handSignedToken(key, { sid: "s" }, { withIat: false }), jwksOf(key), audience)).rejects.toThrow(/iat/);
		await expect(verifyAccessToken(await handSignedToken(key, { sid: "s" }, { withExp: false }), jwksOf(key), audience)).rejects.toThrow(/exp/);
		expect((await verifyAccessToken(await handSignedToken(key, { sid: "s" }), jwksOf(key), audience)).sid).toBe("s");
	});

	it("a token for another audience or issuer is refused", async () => {
		const { token } = await issueToken(key);
		await expect(verifyAccessToken(token, jwksOf(key), { ...audience, audience: "other-api" })).rejects.toThrow(/aud/);
		await expect(verifyAccessToken(token, jwksOf(key), { ...audience, issuer: "other" })).rejects.toThrow(/iss/);
	});
});

describe("tokenKid", () => {
	it("returns undefined for an unreadable header or a header without a string kid", () => {
		expect(tokenKid("garbage")).toBeUndefined();
		expect(tokenKid(`${b64url({ alg: "RS256", kid: 5 })}.${b64url({})}.sig`)).toBeUndefined();
		expect(tokenKid(`${b64url({ alg: "RS256", kid: "k1" })}.${b64url({})}.sig`)).toBe("k1");
	});
});

describe("opaque tokens", () => {
	it("randomToken gives 32 random bytes as base64url", () => {
		const a = randomToken();
		expect(a).toMatch(/^[A-Za-z0-9_-]{43}$/);
		expect(Buffer.from(a, "base64url")).toHaveLength(32);
		expect(randomToken()).not.toBe(a);
	});

	it("hashToken is the hex SHA-256 of the token", () => {
		expect(hashToken("abc")).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	});

	it("successorToken is deterministic per token and secret", () => {
		const s = successorToken("tok", "secret-a");
		expect(successorToken("tok", "secret-a")).toBe(s);
		expect(successorToken("tok2", "secret-a")).not.toBe(s);
		expect(successorToken("tok", "secret-b")).not.toBe(s);
		expect(s).toMatch(/^[A-Za-z0-9_-]{43}$/);
	});
});
