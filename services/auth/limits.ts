/**
 * auth's rate limits: login attempts (the login guard) and the limits on
 * signups, reset emails and searches, each counted atomically before the
 * work it limits. In Redis when REDIS_URL is set (shared by every auth
 * node), else in this process. Limits a person never meets; 429 with
 * Retry-After beyond them.
 */
import Redis from "ioredis";
import type { Config } from "../../lib/config";
import { createLimiter, takePoints } from "../../lib/limits";
import { LoginGuard } from "./login-guard";

type AuthConfig = Config["auth"];
type Limiter = ReturnType<typeof createLimiter>;

const TOO_MANY_SIGNUPS = "Too many signups, try again later";

export class AuthLimits {
	/** Login attempts per (account, IP) pair and per IP, with growing delays. */
	readonly login: LoginGuard;
	private readonly redis?: Redis;
	private readonly signupsPerIp: Limiter;
	private readonly signupsPerEmail: Limiter;
	private readonly resetsPerEmail: Limiter;
	private readonly resetsPerIp: Limiter;
	private readonly searchesPerUser: Limiter;

	constructor(auth: Pick<AuthConfig, "limits" | "loginMaxFailuresPerAccount" | "loginMaxFailuresPerIp" | "loginWindowSec">, redisUrl?: string) {
		this.redis = redisUrl ? new Redis(redisUrl, { maxRetriesPerRequest: 2, lazyConnect: true }) : undefined;
		this.login = new LoginGuard(
			{ maxPerPair: auth.loginMaxFailuresPerAccount, maxPerIp: auth.loginMaxFailuresPerIp, windowSec: auth.loginWindowSec },
			this.redis,
		);
		const hourly = (name: keyof AuthConfig["limits"]) => createLimiter({ name, points: auth.limits[name], durationSec: 3600 }, this.redis);
		this.signupsPerIp = hourly("signupsPerIp");
		this.signupsPerEmail = hourly("signupsPerEmail");
		this.resetsPerEmail = hourly("resetsPerEmail");
		this.resetsPerIp = hourly("resetsPerIp");
		this.searchesPerUser = createLimiter({ name: "searchesPerUser", points: auth.limits.searchesPerUser, durationSec: 60 }, this.redis);
	}

	async start(): Promise<void> {
		await this.redis?.connect();
	}

	async stop(): Promise<void> {
		await this.redis?.quit();
	}

	/** Counted before anything else a signup does. */
	signupFromIp(ip: string): Promise<void> {
		return takePoints([[this.signupsPerIp, ip]], TOO_MANY_SIGNUPS);
	}

	/** Counted only for a free address: a taken one answers 409 first. */
	signupForEmail(email: string): Promise<void> {
		return takePoints([[this.signupsPerEmail, email]], TOO_MANY_SIGNUPS);
	}

	resetRequest(ip: string, email: string): Promise<void> {
		return takePoints(
			[
				[this.resetsPerIp, ip],
				[this.resetsPerEmail, email],
			],
			"Too many reset requests, try again later",
		);
	}

	search(userId: string): Promise<void> {
		return takePoints([[this.searchesPerUser, userId]], "Too many searches, try again in a minute");
	}
}
