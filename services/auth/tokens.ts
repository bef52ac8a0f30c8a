/**
 * Access tokens (RS256 JWTs) and opaque secrets (refresh, verification and
 * reset tokens). Opaque tokens are stored only as SHA-256 hashes.
 */
import crypto from "node:crypto";
import { SignJWT, jwtVerify, createLocalJWKSet, decodeProtectedHeader, type JSONWebKeySet, type JWTPayload } from "jose";
import type { SigningKey } from "./keys";

export interface AccessClaims extends JWTPayload {
	sub: string;
	jti: string;
	sid: string; // refresh-token family (session) id
	exp: number;
	iat: number;
}

export interface TokenAudience {
	issuer: string;
	audience: string;
}

export async function signAccessToken(
	key: SigningKey,
	subject: { userId: string; sessionId: string },
	opts: TokenAudience & { ttlSec: number },
	nowSec = Math.floor(Date.now() / 1000),
): Promise<{ token: string; expiresAt: number; jti: string }> {
	const jti = crypto.randomUUID();
	const expiresAt = nowSec + opts.ttlSec;
	const token = await new SignJWT({ sid: subject.sessionId })
		.setProtectedHeader({ alg: "RS256", kid: key.kid, typ: "JWT" })
		.setSubject(subject.userId)
		.setIssuer(opts.issuer)
		.setAudience(opts.audience)
		.setIssuedAt(nowSec)
		.setExpirationTime(expiresAt)
		.setJti(jti)
		.sign(key.privateKey);
	return { token, expiresAt, jti };
}

/** Verifies an access token against a JWKS; throws on anything wrong. */
export async function verifyAccessToken(token: string, jwks: JSONWebKeySet, opts: TokenAudience): Promise<AccessClaims> {
	const { payload } = await jwtVerify(token, createLocalJWKSet(jwks), {
		issuer: opts.issuer,
		audience: opts.audience,
		algorithms: ["RS256"],
		requiredClaims: ["exp", "iat", "sub", "jti", "sid"],
	});
	if (typeof payload.sid !== "string") throw new Error("sid claim must be a string");
	return payload as AccessClaims;
}

/** The kid a token claims, or undefined when the header is unreadable. */
export function tokenKid(token: string): string | undefined {
	try {
		const header = decodeProtectedHeader(token);
		return typeof header.kid === "string" ? header.kid : undefined;
	} catch {
		return undefined;
	}
}

export const randomToken = (): string => crypto.randomBytes(32).toString("base64url");

export const hashToken = (token: string): string => crypto.createHash("sha256").update(token).digest("hex");

/**
 * The successor of a refresh token, derived rather than stored: requests that
 * race with the same just-rotated token all get the same successor without
 * Mint ever storing a raw token.
 */
export const successorToken = (token: string, secret: string): string =>
	crypto.createHmac("sha256", secret).update(`refresh-successor:${token}`).digest("base64url");
