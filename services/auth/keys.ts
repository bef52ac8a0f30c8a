/**
 * RS256 signing keys: generation, sealing at rest, JWKS, and the rotation
 * states a key moves through:
 *   next (published, not signing) -> current (signing) -> retired (published
 *   until the last token it signed has expired) -> deleted.
 * Publishing the next key one rotation ahead means every verifier's cached
 * JWKS already knows a key before any token is signed with it.
 */
import crypto from "node:crypto";
import { calculateJwkThumbprint, type JWK } from "jose";
import { seal, unseal } from "../../lib/sealing";

export type KeyState = "next" | "current" | "retired";

/**
 * The unique place a key holds in the set (a unique sparse index on the
 * field): every next key holds "next", and a current key created because the
 * set had none holds "current" until it is rotated out, so nodes racing to
 * create either write one key between them. A key leaves its slot in the same
 * write that changes its state (signing-keys.ts).
 */
export type KeySlot = "current" | "next";

export interface StoredKey {
	_id: string; // kid
	state: KeyState;
	publicJwk: JWK;
	sealedPrivateKey: string;
	createdAt: number;
	activatedAt: number | null;
	/** For retired keys: when the last token signed with it expires. */
	expiresAt: number | null;
	slot?: KeySlot;
}

export interface SigningKey {
	kid: string;
	privateKey: crypto.KeyObject;
}

export async function generateKey(bits: number, secret: string, now = Date.now()): Promise<StoredKey> {
	const { publicKey, privateKey } = await new Promise<{ publicKey: crypto.KeyObject; privateKey: crypto.KeyObject }>((resolve, reject) =>
		crypto.generateKeyPair("rsa", { modulusLength: bits }, (err, pub, priv) => (err ? reject(err) : resolve({ publicKey: pub, privateKey: priv }))),
	);
	const publicJwk = publicKey.export({ format: "jwk" }) as JWK;
	const kid = await calculateJwkThumbprint(publicJwk);
	const pem = privateKey.export({ format: "pem", type: "pkcs8" }) as string;
	return {
		_id: kid,
		state: "next",
		publicJwk: { ...publicJwk, kid, alg: "RS256", use: "sig" },
		sealedPrivateKey: seal(pem, secret),
		createdAt: now,
		activatedAt: null,
		expiresAt: null,
	};
}

export function openSigningKey(stored: StoredKey, secret: string | readonly string[]): SigningKey {
	let pem: string;
	try {
		pem = unseal(stored.sealedPrivateKey, secret);
	} catch {
		// The usual cause: a node started with another AUTH_SECRET than the one that sealed the keys (a moved or restored deployment).
		throw new Error(
			`Cannot open signing key ${stored._id} with AUTH_SECRET (or AUTH_SECRET_PREVIOUS): start this node with the secret that sealed it (a deployment without AUTH_SECRET keeps its generated one in DATA_DIR/auth-secret)`,
		);
	}
	return { kid: stored._id, privateKey: crypto.createPrivateKey(pem) };
}

/** Keys a verifier must know: next, current, and retired ones whose tokens may still be alive. */
export function publishedKeys(keys: StoredKey[], now = Date.now()): JWK[] {
	return keys.filter(k => k.state !== "retired" || (k.expiresAt ?? 0) > now).map(k => k.publicJwk);
}

/**
 * The signing key: the most recently activated current key, ties broken by
 * kid, so every node picks the same one. Two exist for a moment in a rotation
 * (the new one is activated before the old one is retired) and in a set from
 * before key slots.
 */
export function currentKey(keys: StoredKey[]): StoredKey | undefined {
	return keys.filter(k => k.state === "current").sort((a, b) => (b.activatedAt ?? 0) - (a.activatedAt ?? 0) || a._id.localeCompare(b._id))[0];
}
