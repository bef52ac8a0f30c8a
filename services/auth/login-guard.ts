/**
 * Login attempts, counted before the password is checked (atomically, so
 * parallel guesses cannot all slip under the limit), per client IP and per
 * (account, IP) pair. A pair gets LOGIN_MAX_FAILURES_PER_ACCOUNT attempts
 * in LOGIN_WINDOW_SEC; the attempt after that blocks the pair for a delay
 * that doubles each time it happens again within a day (30 s, 1 min, 2 min,
 * ... at most an hour). A stranger's guesses block only the stranger's own
 * pair: the owner, from their address, still logs in. A success gives the
 * IP its point back and forgets the pair.
 */
import type Redis from "ioredis";
import { tooManyRequests } from "../../lib/errors";
import { createLimiter, isOverLimit } from "../../lib/limits";

export interface LoginGuardOptions {
	maxPerPair: number;
	maxPerIp: number;
	windowSec: number;
	firstDelaySec?: number;
	maxDelaySec?: number;
}

const DAY_SEC = 86_400;

export class LoginGuard {
	private readonly perIp;
	private readonly perPair;
	private readonly blocksOfPair;

	constructor(
		private readonly opts: LoginGuardOptions,
		redis?: Redis,
	) {
		this.perIp = createLimiter({ name: "login-ip", points: opts.maxPerIp, durationSec: opts.windowSec }, redis);
		this.perPair = createLimiter({ name: "login-pair", points: opts.maxPerPair, durationSec: opts.windowSec }, redis);
		this.blocksOfPair = createLimiter({ name: "login-pair-blocks", points: Number.MAX_SAFE_INTEGER, durationSec: DAY_SEC }, redis);
	}

	/** Counts this attempt; 429 with Retry-After when the IP or the pair has none left. */
	async admit(email: string, ip: string): Promise<void> {
		const pair = `${email}|${ip}`;
		const [byIp, byPair] = await Promise.allSettled([this.perIp.consume(ip), this.perPair.consume(pair)]);
		const waits = await Promise.all(
			[byIp, byPair].map(async (result, i) => {
				if (result.status === "fulfilled") return 0;
				if (!isOverLimit(result.reason)) throw result.reason;
				// The one attempt that first goes over the pair's allowance sets the pair's (growing) delay.
				if (i === 1 && result.reason.consumedPoints === this.opts.maxPerPair + 1) return (await this.blockPair(pair)) * 1000;
				return result.reason.msBeforeNext;
			}),
		);
		const waitMs = Math.max(...waits);
		if (waitMs > 0) throw tooManyRequests(waitMs / 1000, "Too many failed logins, try again later");
	}

	/** Blocks the pair for its next delay: doubled for each block in the last day. Returns the delay in seconds. */
	private async blockPair(pair: string): Promise<number> {
		const blocks = (await this.blocksOfPair.penalty(pair, 1)).consumedPoints;
		const delaySec = Math.min((this.opts.firstDelaySec ?? 30) * 2 ** (blocks - 1), this.opts.maxDelaySec ?? 3600);
		await this.perPair.block(pair, delaySec);
		return delaySec;
	}

	async succeeded(email: string, ip: string): Promise<void> {
		const pair = `${email}|${ip}`;
		await Promise.all([this.perIp.reward(ip, 1), this.perPair.delete(pair), this.blocksOfPair.delete(pair)]);
	}
}
