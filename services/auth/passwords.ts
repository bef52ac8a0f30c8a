/** Argon2id password hashing, and login throttling per account and per IP. */
import argon2 from "argon2";
import type Redis from "ioredis";
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

/** Failed logins counted in a fixed window per key (an account, an IP). */
export interface FailureThrottle {
	check(key: string, max: number): Promise<ThrottleDecision>;
	fail(key: string): Promise<void>;
	clear(key: string): Promise<void>;
}

/** One process's counts: the embedded default. */
export class MemoryFailureThrottle implements FailureThrottle {
	private readonly windows = new Map<string, { count: number; resetAt: number }>();

	constructor(
		private readonly windowSec: number,
		private readonly now: () => number = Date.now,
	) {}

	async check(key: string, max: number): Promise<ThrottleDecision> {
		const entry = this.live(key);
		if (entry && entry.count >= max) return { blocked: true, retryAfterSec: Math.ceil((entry.resetAt - this.now()) / 1000) };
		return { blocked: false, retryAfterSec: 0 };
	}

	async fail(key: string): Promise<void> {
		const entry = this.live(key);
		if (entry) entry.count++;
		else this.windows.set(key, { count: 1, resetAt: this.now() + this.windowSec * 1000 });
		if (this.windows.size > 100_000) this.sweep();
	}

	async clear(key: string): Promise<void> {
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

/** Counts shared by every auth node through Redis (REDIS_URL): the cluster default. */
export class RedisFailureThrottle implements FailureThrottle {
	constructor(
		private readonly redis: Redis,
		private readonly windowSec: number,
		private readonly prefix = "mint:login-failures:",
	) {}

	async check(key: string, max: number): Promise<ThrottleDecision> {
		const [[, count], [, ttlMs]] = (await this.redis.multi().get(this.prefix + key).pttl(this.prefix + key).exec()) as [unknown, any][];
		if (Number(count ?? 0) >= max && ttlMs > 0) return { blocked: true, retryAfterSec: Math.ceil(ttlMs / 1000) };
		return { blocked: false, retryAfterSec: 0 };
	}

	async fail(key: string): Promise<void> {
		// The window starts at the first failure: create with an expiry, then count.
		await this.redis
			.multi()
			.set(this.prefix + key, 0, "PX", this.windowSec * 1000, "NX")
			.incr(this.prefix + key)
			.exec();
	}

	async clear(key: string): Promise<void> {
		await this.redis.del(this.prefix + key);
	}
}
