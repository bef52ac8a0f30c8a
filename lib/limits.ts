/**
 * Rate limits (rate-limiter-flexible): counted atomically per key, in Redis
 * when REDIS_URL is set (shared by every node), else in the process. Each
 * request takes its point before the work it limits, so parallel requests
 * cannot all slip under the limit.
 *
 * Redis down or failing: each limiter falls back to counting in this process
 * (rate-limiter-flexible's insurance limiter, same points and window), so a
 * login or a signup is still limited, per node, and never fails because of
 * the outage.
 */
import type Redis from "ioredis";
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from "rate-limiter-flexible";
import { tooManyRequests } from "./errors";

export interface LimitSpec {
	/** Also the key prefix: `mint:<name>:<key>` in Redis. */
	name: string;
	points: number;
	durationSec: number;
}

export function createLimiter(spec: LimitSpec, redis?: Redis): RateLimiterAbstract {
	const opts = { keyPrefix: `mint:${spec.name}`, points: spec.points, duration: spec.durationSec };
	return redis ? new RateLimiterRedis({ ...opts, storeClient: redis, insuranceLimiter: new RateLimiterMemory(opts) }) : new RateLimiterMemory(opts);
}

/** A refusal from the store (over the limit), as opposed to the store failing. */
export const isOverLimit = (err: unknown): err is RateLimiterRes => err instanceof RateLimiterRes;

/**
 * Takes one point from each (limiter, key); over any limit: 429 with the
 * longest wait. A store that fails throws its own error (a 500, not a pass).
 */
export async function takePoints(checks: [RateLimiterAbstract, string][], message?: string): Promise<void> {
	const refused = (await Promise.allSettled(checks.map(([limiter, key]) => limiter.consume(key)))).flatMap(r => (r.status === "rejected" ? [r.reason] : []));
	const failure = refused.find(r => !isOverLimit(r));
	if (failure) throw failure;
	if (refused.length) throw tooManyRequests(Math.max(...refused.map(r => (r as RateLimiterRes).msBeforeNext)) / 1000, message);
}
