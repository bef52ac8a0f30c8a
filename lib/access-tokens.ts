/**
 * The access token's shape (RS256 JWT) and its verification: auth signs
 * (services/auth/tokens.ts), every gateway verifies against the JWKS.
 */
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JSONWebKeySet, type JWTPayload } from "jose";

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
