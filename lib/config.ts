/**
 * The one place that reads the environment. Every variable is parsed and
 * validated once at start-up; a bad value stops the process with a message
 * naming the variable.
 */
import net from "node:net";
import path from "node:path";
import { ConnectionString } from "mongodb-connection-string-url";
import proxyaddr from "proxy-addr";

export const ALL_SERVICES = ["api", "auth", "wallet", "transactions", "notifications"] as const;
export type ServiceName = (typeof ALL_SERVICES)[number];

export interface Config {
	nodeEnv: "development" | "production" | "test";
	production: boolean;
	namespace: string;
	nodeId?: string;
	services: ServiceName[];
	host: string;
	port: number;
	/**
	 * Where a node without the gateway answers /health and /ready: PORT when
	 * it is set explicitly (as the Docker image does), so several such nodes
	 * started by hand on one host do not contend for 3000.
	 */
	probePort?: number;
	publicUrl?: string;
	dataDir: string;
	/** EMBEDDED_STORE: the engine of DATA_DIR's collections when MONGO_URI is not set (mixins/db.mixin.ts). */
	embeddedStore: "nedb" | "sqlite";
	mongoUri?: string;
	transporter?: string;
	redisUrl?: string;
	logLevel: "fatal" | "error" | "warn" | "info" | "debug" | "trace";
	/** LOG_FORMAT: pino's JSON lines, or readable lines (lib/logger-format.ts); unset: readable when stdout is a terminal. */
	logFormat?: "json" | "pretty";
	currency: string;
	requestTimeoutMs: number;
	/**
	 * Moleculer's circuit breaker, per endpoint (an action on one node): it opens
	 * when at least `threshold` of `minRequestCount` or more calls in the last
	 * `windowSec` failed (errors of status 500+, timeouts), and lets one call
	 * through again `halfOpenMs` later.
	 */
	circuitBreaker: { threshold: number; minRequestCount: number; windowSec: number; halfOpenMs: number };
	http: {
		/** Largest JSON body in bytes, after Content-Encoding is undone. */
		bodyLimitBytes: number;
		cookieSecure: boolean;
		allowedOrigins: string[];
		trustedProxies: string[];
	};
	auth: {
		/** AUTH_SECRET; unset outside production: the node generates one (lib/secrets.ts). */
		secret?: string;
		/** AUTH_SECRET_PREVIOUS: older secrets, still used to open what they sealed. */
		previousSecrets: string[];
		issuer: string;
		audience: string;
		accessTokenTtlSec: number;
		refreshTokenTtlSec: number;
		refreshGraceSec: number;
		keyBits: number;
		keyRotationDays: number;
		/** How often the gateway rereads the JWKS: a retired key leaves it without any event. */
		jwksRefreshSec: number;
		verifyEmailTtlSec: number;
		passwordResetTtlSec: number;
		publicBaseUrl: string;
		loginMaxFailuresPerAccount: number;
		loginMaxFailuresPerIp: number;
		loginWindowSec: number;
		/** A session (refresh-token family) ends this long after its login, however often it is refreshed. */
		sessionMaxAgeSec: number;
		/** Per hour: signups per client IP and per email address; reset emails per address and per IP. Per minute: searches per user. */
		limits: { signupsPerIp: number; signupsPerEmail: number; resetsPerEmail: number; resetsPerIp: number; searchesPerUser: number };
		argon2: { memoryCost: number; timeCost: number; parallelism: number };
	};
	/** Open the Moleculer REPL on this process's terminal (`npm run repl`). */
	repl: boolean;
	mail: {
		/** smtp(s)://user:pass@host:port; unset: messages are written as .eml files under DATA_DIR/mail. */
		smtpUrl?: string;
		from: string;
		maxAttempts: number;
		retryBaseMs: number;
		retryMaxMs: number;
		pollMs: number;
		/** Days a sent email's delivery record is kept (for operators, and to send a redelivered event's email once); then it is removed. */
		keepSentDays: number;
		/** Without SMTP_URL: how many .eml files DATA_DIR/mail keeps, the newest (0: all). */
		dirKeep: number;
	};
	metricsPort: number;
	/** Where METRICS_PORT listens: METRICS_HOST, else HOST (0.0.0.0 for a Prometheus in another container or on another host). */
	metricsHost: string;
	/**
	 * Where the spans of every action call and event go: ZIPKIN_URL (Zipkin v2
	 * JSON, which Jaeger and Tempo ingest too) and/or TRACING=console
	 * (development); neither: spans are made and kept in process only.
	 */
	/** `sampleRate`: the share of traces exported (TRACING_SAMPLE_RATE); every request still gets its trace id in the logs. */
	tracing: { zipkinUrl?: string; console: boolean; sampleRate: number };
	/**
	 * GET /api/v1/wallet/stream, on each gateway node: how many streams one
	 * user and the whole node may hold open (429 beyond), and how often a
	 * quiet stream gets a heartbeat comment (below the edge's read timeout:
	 * nginx's is 75 s for the stream).
	 */
	streams: { perUser: number; perNode: number; heartbeatSec: number };
	transactions: {
		topUpMaxMinor: number;
		transferMaxMinor: number;
		/** POST answers 201 with the final state if processing ends within this, else 202. */
		syncWaitMs: number;
		/** A transaction still Pending/Processing this long after its last step is re-driven by the sweeper. */
		stuckAfterMs: number;
		sweepIntervalMs: number;
	};
}

export class ConfigError extends Error {
	constructor(
		readonly variable: string,
		problem: string,
	) {
		super(`Invalid configuration: ${variable} ${problem}`);
		this.name = "ConfigError";
	}
}

type Env = Record<string, string | undefined>;

function str(env: Env, name: string, fallback?: string): string | undefined {
	const raw = env[name];
	if (raw === undefined || raw.trim() === "") return fallback;
	return raw.trim();
}

function int(env: Env, name: string, fallback: number, min: number, max: number): number {
	const raw = str(env, name);
	if (raw === undefined) return fallback;
	if (!/^-?\d+$/.test(raw)) throw new ConfigError(name, `must be an integer, got "${raw}"`);
	const value = Number(raw);
	if (value < min || value > max) throw new ConfigError(name, `must be between ${min} and ${max}, got ${value}`);
	return value;
}

function bool(env: Env, name: string, fallback: boolean): boolean {
	const raw = str(env, name);
	if (raw === undefined) return fallback;
	if (/^(1|true|yes|on)$/i.test(raw)) return true;
	if (/^(0|false|no|off)$/i.test(raw)) return false;
	throw new ConfigError(name, `must be true or false, got "${raw}"`);
}

function list(env: Env, name: string): string[] {
	return (str(env, name) ?? "")
		.split(",")
		.map(s => s.trim())
		.filter(Boolean);
}

function url(env: Env, name: string, protocols: string[]): string | undefined {
	const raw = str(env, name);
	if (raw === undefined) return undefined;
	let parsed: URL;
	try {
		parsed = new URL(raw);
	} catch {
		throw new ConfigError(name, "must be a URL");
	}
	if (!protocols.includes(parsed.protocol)) {
		throw new ConfigError(name, `must use ${protocols.join(" or ")}, got ${parsed.protocol}`);
	}
	return raw;
}

/** A fraction in (0, 1], such as 0.5. */
function fraction(env: Env, name: string, fallback: number): number {
	const raw = str(env, name);
	if (raw === undefined) return fallback;
	const value = Number(raw);
	if (!/^\d*\.?\d+$/.test(raw) || !(value > 0 && value <= 1)) throw new ConfigError(name, `must be a number above 0 and at most 1, got "${raw}"`);
	return value;
}

/**
 * A MongoDB connection string, checked as the driver reads it: one host or a
 * replica set's list (`mongodb://a:27017,b:27017,c:27017/?replicaSet=rs0`,
 * which WHATWG URL cannot parse), or `mongodb+srv://`.
 */
function mongoUri(env: Env, name: string): string | undefined {
	const raw = str(env, name);
	if (raw === undefined) return undefined;
	try {
		new ConnectionString(raw);
	} catch (err) {
		throw new ConfigError(name, `must be a mongodb:// or mongodb+srv:// connection string (${(err as Error).message})`);
	}
	return raw;
}

/** An address to listen on: an IP address (0.0.0.0 or :: for every interface) or a host name. */
function listenAddress(env: Env, name: string, fallback: string): string {
	const raw = str(env, name);
	if (raw === undefined) return fallback;
	if (net.isIP(raw) === 0 && !/^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/i.test(raw)) {
		throw new ConfigError(name, `must be an IP address or a host name, got "${raw}"`);
	}
	return raw;
}

/** TRACING: `console` prints spans (development); unset leaves them to ZIPKIN_URL, or in process. */
function tracingConsole(env: Env): boolean {
	const raw = str(env, "TRACING");
	if (raw === undefined) return false;
	if (raw.toLowerCase() !== "console") throw new ConfigError("TRACING", `must be console or unset, got "${raw}"`);
	return true;
}

/** A money limit given in major units ("100000.00"), as minor units. */
function majorLimit(env: Env, name: string, fallbackMinor: number): number {
	const raw = str(env, name);
	if (raw === undefined) return fallbackMinor;
	const match = /^(\d{1,13})(?:\.(\d{1,2}))?$/.exec(raw);
	if (!match || Number(raw) <= 0) throw new ConfigError(name, `must be a positive amount with at most 2 decimals, got "${raw}"`);
	return Number(match[1]) * 100 + Number((match[2] ?? "").padEnd(2, "0"));
}

function origin(name: string, value: string): string {
	try {
		const parsed = new URL(value);
		if (parsed.origin === "null") throw new Error("opaque");
		return parsed.origin;
	} catch {
		throw new ConfigError(name, `must list origins like https://app.example.com, got "${value}"`);
	}
}

export function loadConfig(env: Env = process.env): Config {
	const nodeEnv = (str(env, "NODE_ENV", "development") as string).toLowerCase();
	if (!["development", "production", "test"].includes(nodeEnv)) {
		throw new ConfigError("NODE_ENV", `must be development, production or test, got "${nodeEnv}"`);
	}
	const production = nodeEnv === "production";

	const servicesRaw = list(env, "SERVICES");
	const services = servicesRaw.includes("none") ? [] : servicesRaw.length === 0 || servicesRaw.includes("all") ? [...ALL_SERVICES] : servicesRaw;
	for (const name of services) {
		if (!(ALL_SERVICES as readonly string[]).includes(name)) {
			throw new ConfigError("SERVICES", `names an unknown service "${name}" (known: ${ALL_SERVICES.join(", ")})`);
		}
	}

	const logLevel = (str(env, "LOG_LEVEL", "info") as string).toLowerCase();
	if (!["fatal", "error", "warn", "info", "debug", "trace"].includes(logLevel)) {
		throw new ConfigError("LOG_LEVEL", `must be one of fatal, error, warn, info, debug, trace, got "${logLevel}"`);
	}
	const logFormat = str(env, "LOG_FORMAT")?.toLowerCase();
	if (logFormat !== undefined && logFormat !== "json" && logFormat !== "pretty") {
		throw new ConfigError("LOG_FORMAT", `must be json or pretty (unset: pretty on a terminal, else json), got "${logFormat}"`);
	}

	const embeddedStore = (str(env, "EMBEDDED_STORE", "nedb") as string).toLowerCase();
	if (embeddedStore !== "nedb" && embeddedStore !== "sqlite") {
		throw new ConfigError("EMBEDDED_STORE", `must be nedb or sqlite, got "${embeddedStore}"`);
	}

	const currency = (str(env, "CURRENCY", "USD") as string).toUpperCase();
	if (!/^[A-Z]{3}$/.test(currency)) throw new ConfigError("CURRENCY", `must be an ISO 4217 code like USD, got "${currency}"`);

	const bodyLimit = str(env, "BODY_LIMIT", "100kb") as string;
	const limitMatch = /^(\d+)(b|kb|mb)$/i.exec(bodyLimit);
	if (!limitMatch) throw new ConfigError("BODY_LIMIT", `must look like 100kb, got "${bodyLimit}"`);
	const bodyLimitBytes = Number(limitMatch[1]) * { b: 1, kb: 1024, mb: 1024 * 1024 }[limitMatch[2].toLowerCase() as "b" | "kb" | "mb"];
	if (bodyLimitBytes < 1024 || bodyLimitBytes > 10 * 1024 * 1024) throw new ConfigError("BODY_LIMIT", `must be between 1kb and 10mb, got "${bodyLimit}"`);

	// A proxy on this host (nginx, a dev server) is trusted by default; others must be listed.
	const trustedProxies = env.TRUSTED_PROXIES === undefined ? ["loopback"] : list(env, "TRUSTED_PROXIES");
	try {
		proxyaddr.compile(trustedProxies);
	} catch (err) {
		throw new ConfigError("TRUSTED_PROXIES", `must list IP addresses, CIDR ranges or loopback/linklocal/uniquelocal: ${(err as Error).message}`);
	}

	// Secure cookies by default (browsers, curl and most cookie jars accept
	// them from http://localhost too); COOKIE_SECURE=false is the explicit
	// opt-out for other plain-HTTP hosts, refused in production.
	const cookieSecure = bool(env, "COOKIE_SECURE", true);
	if (production && !cookieSecure) {
		throw new ConfigError("COOKIE_SECURE", "cannot be false in production");
	}

	const secret = str(env, "AUTH_SECRET");
	if (secret === undefined && production) throw new ConfigError("AUTH_SECRET", "must be set in production");
	const previousSecrets = list(env, "AUTH_SECRET_PREVIOUS");
	for (const [name, value] of [...(secret === undefined ? [] : [["AUTH_SECRET", secret]]), ...previousSecrets.map(v => ["AUTH_SECRET_PREVIOUS", v])]) {
		if (value.length < 32) throw new ConfigError(name, "must be at least 32 characters");
		if (production && /change[-_ ]?me|placeholder|secret/i.test(value)) {
			throw new ConfigError(name, "is a placeholder; set a random value of at least 32 characters");
		}
	}

	// In production the REPL runs only on an operator node that hosts no services
	// (`npm run repl`), never inside a serving, network-facing process.
	const repl = bool(env, "REPL", false);
	if (production && repl && services.length > 0) {
		throw new ConfigError("REPL", "cannot be on in production on a node that hosts services; use `npm run repl` (SERVICES=none)");
	}

	const host = str(env, "HOST", "127.0.0.1") as string;
	const port = int(env, "PORT", 3000, 0, 65535);
	const publicUrl = url(env, "PUBLIC_URL", ["http:", "https:"]);
	const transporter = url(env, "TRANSPORTER", ["amqp:", "amqps:"]) ?? url(env, "AMQP_URL", ["amqp:", "amqps:"]);

	return {
		nodeEnv: nodeEnv as Config["nodeEnv"],
		production,
		namespace: str(env, "NAMESPACE", "mint") as string,
		nodeId: str(env, "NODE_ID"),
		services: services as ServiceName[],
		host,
		port,
		probePort: str(env, "PORT") === undefined ? undefined : port,
		publicUrl,
		dataDir: path.resolve(str(env, "DATA_DIR", "./data") as string),
		embeddedStore,
		mongoUri: mongoUri(env, "MONGO_URI"),
		transporter,
		redisUrl: url(env, "REDIS_URL", ["redis:", "rediss:"]),
		logLevel: logLevel as Config["logLevel"],
		logFormat,
		currency,
		requestTimeoutMs: int(env, "REQUEST_TIMEOUT_MS", 10_000, 100, 600_000),
		circuitBreaker: {
			threshold: fraction(env, "CIRCUIT_BREAKER_THRESHOLD", 0.5),
			minRequestCount: int(env, "CIRCUIT_BREAKER_MIN_REQUESTS", 20, 1, 1_000_000),
			windowSec: int(env, "CIRCUIT_BREAKER_WINDOW_SEC", 60, 1, 86_400),
			halfOpenMs: int(env, "CIRCUIT_BREAKER_HALF_OPEN_MS", 10_000, 100, 3_600_000),
		},
		http: {
			bodyLimitBytes,
			cookieSecure,
			allowedOrigins: list(env, "ALLOWED_ORIGINS").map(o => origin("ALLOWED_ORIGINS", o)),
			trustedProxies,
		},
		auth: {
			secret,
			previousSecrets,
			issuer: str(env, "JWT_ISSUER", "mint") as string,
			audience: str(env, "JWT_AUDIENCE", "mint-api") as string,
			accessTokenTtlSec: int(env, "ACCESS_TOKEN_TTL_SEC", 900, 60, 86_400),
			refreshTokenTtlSec: int(env, "REFRESH_TOKEN_TTL_SEC", 7 * 86_400, 300, 90 * 86_400),
			refreshGraceSec: int(env, "REFRESH_GRACE_SEC", 30, 0, 300),
			keyBits: int(env, "JWT_KEY_BITS", 3072, 2048, 8192),
			keyRotationDays: int(env, "KEY_ROTATION_DAYS", 0, 0, 3650),
			jwksRefreshSec: int(env, "JWKS_REFRESH_SEC", 300, 1, 300),
			verifyEmailTtlSec: int(env, "VERIFY_EMAIL_TTL_SEC", 48 * 3600, 300, 30 * 86_400),
			passwordResetTtlSec: int(env, "PASSWORD_RESET_TTL_SEC", 3600, 60, 86_400),
			publicBaseUrl: publicUrl ?? `http://localhost:${port}`,
			loginMaxFailuresPerAccount: int(env, "LOGIN_MAX_FAILURES_PER_ACCOUNT", 5, 1, 1000),
			loginMaxFailuresPerIp: int(env, "LOGIN_MAX_FAILURES_PER_IP", 50, 1, 100_000),
			loginWindowSec: int(env, "LOGIN_WINDOW_SEC", 900, 1, 86_400),
			sessionMaxAgeSec: int(env, "SESSION_MAX_AGE_SEC", 30 * 86_400, 300, 365 * 86_400),
			limits: {
				signupsPerIp: int(env, "SIGNUPS_PER_IP_HOUR", 20, 1, 1_000_000),
				signupsPerEmail: int(env, "SIGNUPS_PER_EMAIL_HOUR", 10, 1, 1_000_000),
				resetsPerEmail: int(env, "RESET_EMAILS_PER_ADDRESS_HOUR", 5, 1, 1_000_000),
				resetsPerIp: int(env, "RESET_EMAILS_PER_IP_HOUR", 20, 1, 1_000_000),
				searchesPerUser: int(env, "SEARCHES_PER_USER_MINUTE", 30, 1, 1_000_000),
			},
			argon2: {
				// OWASP: Argon2id, m=19 MiB, t=2, p=1 as the floor.
				memoryCost: int(env, "ARGON2_MEMORY_KIB", 19_456, 19_456, 1_048_576),
				timeCost: int(env, "ARGON2_TIME_COST", 2, 2, 20),
				parallelism: int(env, "ARGON2_PARALLELISM", 1, 1, 16),
			},
		},
		repl,
		mail: {
			smtpUrl: url(env, "SMTP_URL", ["smtp:", "smtps:"]),
			from: str(env, "MAIL_FROM", "Mint <no-reply@mint.local>") as string,
			maxAttempts: int(env, "MAIL_MAX_ATTEMPTS", 8, 1, 100),
			retryBaseMs: int(env, "MAIL_RETRY_BASE_MS", 2000, 1, 3_600_000),
			retryMaxMs: int(env, "MAIL_RETRY_MAX_MS", 600_000, 1, 86_400_000),
			pollMs: int(env, "MAIL_POLL_MS", 1000, 10, 600_000),
			keepSentDays: int(env, "MAIL_KEEP_SENT_DAYS", 90, 1, 36_500),
			dirKeep: int(env, "MAIL_DIR_KEEP", 1000, 0, 100_000_000),
		},
		metricsPort: int(env, "METRICS_PORT", 0, 0, 65535),
		metricsHost: listenAddress(env, "METRICS_HOST", host),
		tracing: {
			// Spans are POSTed to `${zipkinUrl}/api/v2/spans`: no trailing slash.
			zipkinUrl: url(env, "ZIPKIN_URL", ["http:", "https:"])?.replace(/\/+$/, ""),
			sampleRate: fraction(env, "TRACING_SAMPLE_RATE", 1),
			console: tracingConsole(env),
		},
		streams: {
			perUser: int(env, "STREAMS_PER_USER", 5, 1, 1000),
			perNode: int(env, "STREAMS_PER_NODE", 10_000, 1, 1_000_000),
			heartbeatSec: int(env, "STREAM_HEARTBEAT_SEC", 15, 1, 60),
		},
		transactions: {
			topUpMaxMinor: majorLimit(env, "TOPUP_MAX", 100_000_00),
			transferMaxMinor: majorLimit(env, "TRANSFER_MAX", 50_000_00),
			syncWaitMs: int(env, "TX_SYNC_WAIT_MS", 3000, 0, 60_000),
			stuckAfterMs: int(env, "TX_STUCK_AFTER_MS", 30_000, 100, 86_400_000),
			sweepIntervalMs: int(env, "TX_SWEEP_INTERVAL_MS", 10_000, 50, 3_600_000),
		},
	};
}
