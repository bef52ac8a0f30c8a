/**
 * Secrets at rest: AES-256-GCM with a key derived (HKDF) from AUTH_SECRET
 * and a purpose, so a stolen database alone leaks no signing key, token or
 * reset link, and one purpose's ciphertext never opens as another's.
 * Unsealing takes the current secret and any previous ones
 * (AUTH_SECRET_PREVIOUS), so a deployment can change its secret.
 */
import crypto from "node:crypto";

/** What a sealed value is for: each gets its own key. */
export type SealPurpose = "signing-key-seal" | "mail-vars";

function sealingKey(secret: string, purpose: SealPurpose): Buffer {
	return Buffer.from(crypto.hkdfSync("sha256", secret, "mint-auth", purpose, 32));
}

export function seal(plaintext: string, secret: string, purpose: SealPurpose = "signing-key-seal"): string {
	const iv = crypto.randomBytes(12);
	const cipher = crypto.createCipheriv("aes-256-gcm", sealingKey(secret, purpose), iv);
	const data = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()]);
	return [iv, cipher.getAuthTag(), data].map(b => b.toString("base64url")).join(".");
}

/** Opens a sealed value with the first secret that fits; throws if none does (or it was tampered with). */
export function unseal(sealed: string, secrets: string | readonly string[], purpose: SealPurpose = "signing-key-seal"): string {
	const [iv, tag, data] = sealed.split(".").map(part => Buffer.from(part, "base64url"));
	let failure: unknown;
	for (const secret of typeof secrets === "string" ? [secrets] : secrets) {
		try {
			const decipher = crypto.createDecipheriv("aes-256-gcm", sealingKey(secret, purpose), iv, { authTagLength: 16 });
			decipher.setAuthTag(tag);
			return Buffer.concat([decipher.update(data), decipher.final()]).toString("utf8");
		} catch (err) {
			failure = err;
		}
	}
	throw failure ?? new Error("No secret to unseal with");
}
