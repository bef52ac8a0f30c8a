/** Argon2id password hashing, and login throttling per account and per IP. */
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

export interface ThrottleDecision {
	blocked: boolean;
	retryAfterSec: number;
}

/**
 * Counts failed logins in a fixed window per key. In-process; every auth
 * node keeps its own counts (a cluster-wide store is future work).
 */
export class FailureThrottle {
	private readonly windows = new Map<string, { count: number; resetAt: number }>();

	constructor(
		private readonly windowSec: number,
		private readonly now: () => number = Date.now,
	) {}

	check(key: string, max: number): ThrottleDecision {
		const entry = this.live(key);
		if (entry && entry.count >= max) return { blocked: true, retryAfterSec: Math.ceil((entry.resetAt - this.now()) / 1000) };
		return { blocked: false, retryAfterSec: 0 };
	}

	fail(key: string): void {
		const entry = this.live(key);
		if (entry) entry.count++;
		else this.windows.set(key, { count: 1, resetAt: this.now() + this.windowSec * 1000 });
		if (this.windows.size > 100_000) this.sweep();
	}

	clear(key: string): void {
		this.windows.delete(key);
	}

	private live(key: string) {
		const entry = this.windows.get(key);
		if (entry && entry.resetAt <= this.now()) {
			this.windows.delete(key);
			return undefined;
		}
		return entry;
	}

	private sweep() {
		for (const key of [...this.windows.keys()]) this.live(key);
	}
}
