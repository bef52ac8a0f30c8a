/** Shared key and token helpers for the unit tests (not a test file). */
import { SignJWT, type JWK, type JSONWebKeySet, type JWTPayload } from "jose";
import { generateKey, openSigningKey, type SigningKey, type StoredKey } from "../../../services/auth/keys";
import type { SessionSettings } from "../../../services/auth/sessions";
import { signAccessToken } from "../../../services/auth/tokens";

export const TEST_SECRET = "unit-test-sealing-secret-0123456789abcdef";
export const ISSUER = "mint";
export const AUDIENCE = "mint-api";
export const KEY_BITS = 2048;

/** Session settings for tests that build Sessions by hand: short, but the shapes of production. */
export const TEST_SESSION_SETTINGS: SessionSettings = {
	issuer: ISSUER,
	audience: AUDIENCE,
	accessTokenTtlSec: 900,
	refreshTokenTtlSec: 3600,
	refreshGraceSec: 30,
	sessionMaxAgeSec: 86_400,
};
export const TEST_SECRETS = { current: TEST_SECRET, unsealWith: [TEST_SECRET] };
/** A logger that says nothing. */
export const QUIET_LOG = { info() {}, warn() {}, error() {} };

export interface TestKey {
	stored: StoredKey;
	signing: SigningKey;
	kid: string;
	publicJwk: JWK;
}

export async function makeTestKey(now = Date.now()): Promise<TestKey> {
	const stored = await generateKey(KEY_BITS, TEST_SECRET, now);
	return { stored, signing: openSigningKey(stored, TEST_SECRET), kid: stored._id, publicJwk: stored.publicJwk };
}

export const jwksOf = (...keys: TestKey[]): JSONWebKeySet => ({ keys: keys.map(k => k.publicJwk) });

export const nowSec = () => Math.floor(Date.now() / 1000);

/** A normal access token, as the auth service issues it. */
export async function issueToken(
	key: TestKey,
	opts: { userId?: string; sessionId?: string; issuer?: string; audience?: string; ttlSec?: number; nowSec?: number } = {},
) {
	return signAccessToken(
		key.signing,
		{ userId: opts.userId ?? "user-1", sessionId: opts.sessionId ?? "session-1" },
		{ issuer: opts.issuer ?? ISSUER, audience: opts.audience ?? AUDIENCE, ttlSec: opts.ttlSec ?? 900 },
		opts.nowSec,
	);
}

/** A token built by hand with jose, for shapes the auth service never issues. */
export async function handSignedToken(
	key: TestKey,
	payload: JWTPayload,
	opts: { withExp?: boolean; withIat?: boolean; withJti?: boolean; withSub?: boolean } = {},
): Promise<string> {
	const { withExp = true, withIat = true, withJti = true, withSub = true } = opts;
	let jwt = new SignJWT(payload).setProtectedHeader({ alg: "RS256", kid: key.kid, typ: "JWT" }).setIssuer(ISSUER).setAudience(AUDIENCE);
	if (withSub) jwt = jwt.setSubject("user-1");
	if (withIat) jwt = jwt.setIssuedAt();
	if (withExp) jwt = jwt.setExpirationTime("15m");
	if (withJti) jwt = jwt.setJti("jti-1");
	return jwt.sign(key.signing.privateKey);
}

export const b64url = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");
export const decodeSegment = (segment: string) => JSON.parse(Buffer.from(segment, "base64url").toString("utf8"));

/** Replaces one character in the middle of a base64url segment with a different one. */
export function flipCharInMiddle(segment: string): string {
	const i = Math.floor(segment.length / 2);
	const replacement = segment[i] === "A" ? "B" : "A";
	return segment.slice(0, i) + replacement + segment.slice(i + 1);
}
