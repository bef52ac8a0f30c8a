/**
 * Signing access tokens (RS256 JWTs; their shape and verification are in
 * lib/access-tokens.ts), and opaque secrets (refresh, verification and
 * reset tokens). Opaque tokens are stored only as SHA-256 hashes.
 */
import crypto from "node:crypto";
import { SignJWT } from "jose";
import type { TokenAudience } from "../../lib/access-tokens";
import type { SigningKey } from "./keys";

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

export const randomToken = (): string => crypto.randomBytes(32).toString("base64url");

export const hashToken = (token: string): string => crypto.createHash("sha256").update(token).digest("hex");

/**
 * The successor of a refresh token, derived rather than stored: requests that
 * race with the same just-rotated token all get the same successor without
 * Mint ever storing a raw token.
 */
export const successorToken = (token: string, secret: string): string =>
	crypto.createHmac("sha256", secret).update(`refresh-successor:${token}`).digest("base64url");
