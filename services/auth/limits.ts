/**
 * auth's rate limits: login attempts (the login guard) and the limits on
 * signups, reset emails and searches, each counted atomically before the
 * work it limits. In Redis when REDIS_URL is set (shared by every auth
 * node), else in this process. Limits a person never meets; 429 with
 * Retry-After beyond them.
 *
 * Redis is not needed to start or to serve: while it is down each limiter
 * counts in this process (lib/limits.ts), and the client reconnects by
 * itself. The outage is logged once when it begins and once when it ends.
 */
import type Redis from "ioredis";
import type { Config } from "../../lib/config";
import { createLimiter, takePoints } from "../../lib/limits";
import { LoginGuard } from "./login-guard";
import type { Log } from "./support";

type AuthConfig = Config["auth"];
type Limiter = ReturnType<typeof createLimiter>;

const TOO_MANY_SIGNUPS = "Too many signups, try again later";
/** How long a starting node waits for Redis before it counts in memory. */
const CONNECT_WAIT_MS = 2000;

export class AuthLimits {
	/** Login attempts per (account, IP) pair and per IP, with growing delays. */
	readonly login: LoginGuard;
	private readonly redis?: Redis;
	private readonly signupsPerIp: Limiter;
	private readonly signupsPerEmail: Limiter;
	private readonly resetsPerEmail: Limiter;
	private readonly resetsPerIp: Limiter;
	private readonly searchesPerUser: Limiter;

	constructor(
		auth: Pick<AuthConfig, "limits" | "loginMaxFailuresPerAccount" | "loginMaxFailuresPerIp" | "loginWindowSec">,
		redisUrl: string | undefined,
		private readonly log: Log,
	) {
		// No offline queue: while Redis is down a command fails at once and its limiter counts in memory.
		// ioredis is loaded here, where REDIS_URL asks for it: a node without Redis starts 30 ms sooner.
		this.redis = redisUrl
			? new (require("ioredis") as typeof import("ioredis").default)(redisUrl, {
					maxRetriesPerRequest: 2,
					lazyConnect: true,
					enableOfflineQueue: false,
					disconnectTimeout: 200,
				})
			: undefined;
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

	/**
	 * Connects; resolves when Redis is ready, or fails to connect, or after
	 * CONNECT_WAIT_MS: a node starts and serves while Redis is down (and the
	 * client keeps reconnecting), but counts in Redis from its first request
	 * when Redis is up.
	 */
	async start(): Promise<void> {
		const redis = this.redis;
		if (!redis) return;
		let down = false;
		redis.on("error", (err: Error) => {
			if (down) return;
			down = true;
			this.log.warn({ err }, "rate limits: Redis unavailable, counting in this process until it is back");
		});
		redis.on("ready", () => {
			if (!down) return;
			down = false;
			this.log.info({}, "rate limits: Redis is back, counting in Redis again");
		});
		let timer: NodeJS.Timeout | undefined;
		await Promise.race([
			// Rejects on a failed first attempt (reported by the error event).
			redis.connect().catch(() => undefined),
			new Promise(resolve => {
				timer = setTimeout(resolve, CONNECT_WAIT_MS);
			}),
		]);
		clearTimeout(timer);
	}

	async stop(): Promise<void> {
		if (this.redis?.status === "ready") await this.redis.quit();
		else this.redis?.disconnect();
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
