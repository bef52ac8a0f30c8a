import crypto from "node:crypto";
import path from "node:path";
import { ConfigError, loadConfig } from "../../lib/config";

type Env = Record<string, string | undefined>;

/** The ConfigError thrown for env, or a failure when loadConfig accepts it. */
function configErrorFor(env: Env): ConfigError {
	try {
		loadConfig(env);
	} catch (err) {
		expect(err).toBeInstanceOf(ConfigError);
		return err as ConfigError;
	}
	throw new Error(`loadConfig accepted ${JSON.stringify(env)}`);
}

const randomSecret = (length: number) =>
	crypto
		.randomBytes(length)
		.toString("base64url")
		.slice(0, length)
		.replace(/secret/gi, "xxxxxx");
const production = (env: Env = {}): Env => ({ NODE_ENV: "production", AUTH_SECRET: randomSecret(48), ...env });

describe("loadConfig defaults", () => {
	const config = loadConfig({});

	it("runs all services on port 3000 of localhost in development", () => {
		expect(config.nodeEnv).toBe("development");
		expect(config.production).toBe(false);
		expect(config.port).toBe(3000);
		expect(config.host).toBe("127.0.0.1");
		expect(config.services).toEqual(["api", "auth", "wallet", "transactions", "notifications"]);
	});

	it("uses USD, info logging and Secure cookies unless explicitly turned off", () => {
		expect(config.currency).toBe("USD");
		expect(config.logLevel).toBe("info");
		expect(config.http.cookieSecure).toBe(true);
		expect(loadConfig({ COOKIE_SECURE: "false" }).http.cookieSecure).toBe(false);
		expect(config.http.allowedOrigins).toEqual([]);
		expect(config.http.trustedProxies).toEqual(["loopback"]);
		expect(config.http.bodyLimitBytes).toBe(100 * 1024);
		expect(loadConfig({ BODY_LIMIT: "2mb" }).http.bodyLimitBytes).toBe(2 * 1024 * 1024);
		expect(loadConfig({ TRUSTED_PROXIES: "172.16.0.0/12, fd00::/8, 10.0.0.5" }).http.trustedProxies).toEqual(["172.16.0.0/12", "fd00::/8", "10.0.0.5"]);
		expect(loadConfig({ TRUSTED_PROXIES: "" }).http.trustedProxies).toEqual([]);
		expect(loadConfig({ TRUSTED_PROXIES: "10.0.0.5, 10.0.0.6" }).http.trustedProxies).toEqual(["10.0.0.5", "10.0.0.6"]);
	});

	it("has no secret of its own (the node generates one, lib/secrets.ts) and OWASP argon2 parameters", () => {
		expect(config.auth.secret).toBeUndefined();
		expect(config.auth.previousSecrets).toEqual([]);
		expect(config.auth.argon2).toEqual({ memoryCost: 19_456, timeCost: 2, parallelism: 1 });
		expect(config.auth.keyBits).toBe(3072);
		expect(config.auth.publicBaseUrl).toBe("http://localhost:3000");
		expect(config.dataDir).toBe(path.resolve("./data"));
	});

	it("takes a replica set's MongoDB connection string, which lists several hosts", () => {
		for (const uri of [
			"mongodb://mongo1:27017,mongo2:27017,mongo3:27017/?replicaSet=rs0",
			"mongodb://mint:s3cret@10.0.0.1,10.0.0.2/mint?replicaSet=rs0&authSource=admin",
			"mongodb+srv://cluster0.example.net/?retryWrites=true",
		]) {
			expect(loadConfig({ MONGO_URI: uri }).mongoUri).toBe(uri);
		}
	});

	it("takes valid values as given, normalising case and origins", () => {
		const custom = loadConfig({
			PORT: "8080",
			SERVICES: "api, wallet",
			CURRENCY: "eur",
			LOG_LEVEL: "DEBUG",
			MONGO_URI: "mongodb://db:27017/mint",
			TRANSPORTER: "amqp://mq:5672",
			ALLOWED_ORIGINS: "https://App.Example.com/some/path, http://localhost:5173",
		});
		expect(custom.port).toBe(8080);
		expect(custom.probePort).toBe(8080);
		expect(loadConfig({}).probePort).toBeUndefined();
		expect(custom.services).toEqual(["api", "wallet"]);
		expect(custom.currency).toBe("EUR");
		expect(custom.logLevel).toBe("debug");
		expect(custom.mongoUri).toBe("mongodb://db:27017/mint");
		expect(custom.transporter).toBe("amqp://mq:5672");
		expect(custom.http.allowedOrigins).toEqual(["https://app.example.com", "http://localhost:5173"]);
		expect(custom.auth.publicBaseUrl).toBe("http://localhost:8080");
	});

	it("exports no spans unless ZIPKIN_URL or TRACING=console says where", () => {
		expect(config.tracing).toEqual({ zipkinUrl: undefined, console: false, sampleRate: 1 });
		expect(loadConfig({ ZIPKIN_URL: "http://zipkin:9411", TRACING_SAMPLE_RATE: "0.1" }).tracing).toEqual({
			zipkinUrl: "http://zipkin:9411",
			console: false,
			sampleRate: 0.1,
		});
		// The spans go to `${ZIPKIN_URL}/api/v2/spans`: a trailing slash would double it.
		expect(loadConfig({ ZIPKIN_URL: "https://tempo.example.com/zipkin/" }).tracing.zipkinUrl).toBe("https://tempo.example.com/zipkin");
		expect(loadConfig({ TRACING: "Console" }).tracing).toEqual({ zipkinUrl: undefined, console: true, sampleRate: 1 });
		expect(loadConfig({ TRACING: "", ZIPKIN_URL: " " }).tracing).toEqual({ zipkinUrl: undefined, console: false, sampleRate: 1 });
	});

	it("names the tracing variable and what it takes", () => {
		expect(configErrorFor({ TRACING: "jaeger" }).message).toBe('Invalid configuration: TRACING must be console or unset, got "jaeger"');
		expect(configErrorFor({ ZIPKIN_URL: "udp://zipkin:9411" }).message).toBe("Invalid configuration: ZIPKIN_URL must use http: or https:, got udp:");
	});

	it("LOG_FORMAT picks JSON or readable lines; unset leaves the choice to whether stdout is a terminal", () => {
		expect(config.logFormat).toBeUndefined();
		expect(loadConfig({ LOG_FORMAT: "json" }).logFormat).toBe("json");
		expect(loadConfig({ LOG_FORMAT: " Pretty " }).logFormat).toBe("pretty");
		expect(loadConfig({ LOG_FORMAT: "" }).logFormat).toBeUndefined();
		expect(configErrorFor({ LOG_FORMAT: "text" }).message).toBe(
			'Invalid configuration: LOG_FORMAT must be json or pretty (unset: pretty on a terminal, else json), got "text"',
		);
	});

	it("SERVICES=all means every service", () => {
		expect(loadConfig({ SERVICES: "all" }).services).toEqual(["api", "auth", "wallet", "transactions", "notifications"]);
	});

	it("serves metrics on HOST unless METRICS_HOST says where", () => {
		expect(config.metricsHost).toBe("127.0.0.1");
		expect(loadConfig({ HOST: "0.0.0.0" }).metricsHost).toBe("0.0.0.0");
		expect(loadConfig({ HOST: "10.1.2.3" }).metricsHost).toBe("10.1.2.3");
		expect(loadConfig({ METRICS_HOST: "0.0.0.0" })).toMatchObject({ host: "127.0.0.1", metricsHost: "0.0.0.0" });
		expect(loadConfig({ HOST: "0.0.0.0", METRICS_HOST: "127.0.0.1" })).toMatchObject({ host: "0.0.0.0", metricsHost: "127.0.0.1" });
		expect(loadConfig({ METRICS_HOST: "::1" }).metricsHost).toBe("::1");
		expect(loadConfig({ METRICS_HOST: "metrics.internal" }).metricsHost).toBe("metrics.internal");
		expect(configErrorFor({ METRICS_HOST: "http://0.0.0.0:3031" }).message).toBe(
			'Invalid configuration: METRICS_HOST must be an IP address or a host name, got "http://0.0.0.0:3031"',
		);
	});
});

describe("loadConfig refuses bad variables, naming them", () => {
	it.each([
		["PORT", "abc"],
		["PORT", "70000"],
		["PORT", "-1"],
		["PORT", "3000.5"],
		["SERVICES", "api,bogus"],
		["CURRENCY", "US"],
		["CURRENCY", "US1"],
		["LOG_LEVEL", "loud"],
		["METRICS_HOST", "0.0.0.0:3031"],
		["METRICS_HOST", "metrics host"],
		["LOG_FORMAT", "yaml"],
		["LOG_FORMAT", "auto"],
		["MAIL_DIR_KEEP", "-1"],
		["MAIL_DIR_KEEP", "many"],
		["MONGO_URI", "http://x"],
		["MONGO_URI", "not a url"],
		["MONGO_URI", "mongodb://"],
		["MONGO_URI", "mongodb+srv://a:27017,b:27017/"],
		["TRANSPORTER", "nats://x"],
		["AMQP_URL", "redis://x"],
		["REDIS_URL", "http://x"],
		["PUBLIC_URL", "ftp://x"],
		["ALLOWED_ORIGINS", "notaurl"],
		["ALLOWED_ORIGINS", "https://ok.example.com,notaurl"],
		["JWT_KEY_BITS", "1024"],
		["ARGON2_MEMORY_KIB", "1024"],
		["ARGON2_TIME_COST", "1"],
		["COOKIE_SECURE", "maybe"],
		["NODE_ENV", "staging"],
		["BODY_LIMIT", "lots"],
		["BODY_LIMIT", "1gb"],
		["BODY_LIMIT", "100mb"],
		["TRUSTED_PROXIES", "nginx"],
		["TRUSTED_PROXIES", "10.0.0.0/33"],
		["REQUEST_TIMEOUT_MS", "10"],
		["ZIPKIN_URL", "not a url"],
		["ZIPKIN_URL", "ftp://zipkin:9411"],
		["ZIPKIN_URL", "zipkin:9411"],
		["TRACING", "zipkin"],
		["TRACING", "true"],
		["TRACING_SAMPLE_RATE", "0"],
		["TRACING_SAMPLE_RATE", "1.5"],
	])("%s=%s is a ConfigError for %s", (variable, value) => {
		const err = configErrorFor({ [variable]: value });
		expect(err.variable).toBe(variable);
		expect(err.message).toContain(`Invalid configuration: ${variable}`);
	});

	it("the PORT error quotes the bad value", () => {
		expect(configErrorFor({ PORT: "abc" }).message).toBe('Invalid configuration: PORT must be an integer, got "abc"');
		expect(configErrorFor({ PORT: "70000" }).message).toBe("Invalid configuration: PORT must be between 0 and 65535, got 70000");
	});

	it.each(["development", "test", "production"])("an AUTH_SECRET shorter than 32 characters is refused in %s", nodeEnv => {
		const err = configErrorFor({ NODE_ENV: nodeEnv, AUTH_SECRET: randomSecret(31) });
		expect(err.variable).toBe("AUTH_SECRET");
		expect(err.message).toContain("at least 32 characters");
	});

	it("an AUTH_SECRET of exactly 32 characters is accepted in development", () => {
		const secret = randomSecret(32);
		expect(loadConfig({ AUTH_SECRET: secret }).auth.secret).toBe(secret);
	});
});

describe("loadConfig in production", () => {
	it("refuses a missing AUTH_SECRET", () => {
		const err = configErrorFor({ NODE_ENV: "production" });
		expect(err.variable).toBe("AUTH_SECRET");
		expect(err.message).toContain("must be set in production");
	});

	it("refuses the placeholder AUTH_SECRET older versions shipped, and placeholder-looking ones", () => {
		for (const placeholder of ["dev-only-insecure-secret-change-me", "please-change-me-to-something-random-0123"]) {
			const err = configErrorFor(production({ AUTH_SECRET: placeholder }));
			expect(err.variable).toBe("AUTH_SECRET");
			expect(err.message).toContain("placeholder");
		}
		expect(configErrorFor(production({ AUTH_SECRET_PREVIOUS: "short" })).variable).toBe("AUTH_SECRET_PREVIOUS");
	});

	it("refuses COOKIE_SECURE=false", () => {
		expect(configErrorFor(production({ COOKIE_SECURE: "false" })).variable).toBe("COOKIE_SECURE");
	});

	it("refuses a REPL inside a node that hosts services", () => {
		expect(configErrorFor(production({ REPL: "true" })).variable).toBe("REPL");
		expect(configErrorFor(production({ REPL: "true", SERVICES: "api" })).variable).toBe("REPL");
	});

	it("accepts a random 48-character AUTH_SECRET with defaults and then makes cookies Secure", () => {
		const secret = randomSecret(48);
		expect(secret).toHaveLength(48);
		const config = loadConfig({ NODE_ENV: "production", AUTH_SECRET: secret });
		expect(config.production).toBe(true);
		expect(config.nodeEnv).toBe("production");
		expect(config.auth.secret).toBe(secret);
		expect(config.http.cookieSecure).toBe(true);
		expect(config.repl).toBe(false);
	});

	it("accepts the REPL on an operator node that hosts no services (npm run repl)", () => {
		const config = loadConfig(production({ REPL: "true", SERVICES: "none" }));
		expect(config.repl).toBe(true);
		expect(config.services).toEqual([]);
	});
});
