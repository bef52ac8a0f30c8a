/** Argon2id password hashing (OWASP parameters as the floor). */
import argon2 from "argon2";
import type { Config } from "../../lib/config";

export class PasswordHasher {
	private dummyHash?: Promise<string>;

	constructor(private readonly params: Config["auth"]["argon2"]) {}

	hash(password: string): Promise<string> {
		return argon2.hash(password, { type: argon2.argon2id, ...this.params });
	}

	async verify(hash: string, password: string): Promise<boolean> {
		try {
			return await argon2.verify(hash, password);
		} catch {
			return false;
		}
	}

	/** Spends the same time as a real verification, for unknown accounts. */
	async verifyNobody(password: string): Promise<false> {
		this.dummyHash ??= this.hash("not-a-real-password-for-timing");
		await this.verify(await this.dummyHash, password);
		return false;
	}
}
