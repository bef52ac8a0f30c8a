/**
 * Broker options from the validated config. Resilience is configured
 * explicitly: a request timeout, the circuit breaker and the bulkhead. The
 * retry policy retries nothing by default (`retries: 0`): only calls to
 * idempotent actions pass `retries`, and only retryable errors are retried.
 */
import os from "node:os";
import { ServiceBroker, type BrokerOptions, type ReplOptions, type TracerOptions } from "moleculer";
import { StoppingSafeAmqpTransporter } from "./lib/amqp-transporter";
import { MintMemoryCacher, MintRedisCacher } from "./lib/cacher";
import type { Config } from "./lib/config";
import { DurableEventsMiddleware } from "./lib/durable-events";
import { logDestination } from "./lib/logger-format";
import { ProbeServerMiddleware } from "./lib/probe-server";
import { metricsOptions } from "./lib/metrics-endpoint";
import { mintReplCommands } from "./lib/repl-commands";
import { RequestContextMiddleware, requestLogFields, ZipkinExporter } from "./lib/request-context";
import { ServiceOwnershipMiddleware } from "./lib/service-ownership";

/**
 * The circuit breaker wraps the request timeout. In Moleculer's order of its
 * internal middlewares the breaker sits inside the timeout and sees only the
 * call itself: a call to a node that died without a word never settles, its
 * timeout is never counted, and the breaker never opens on that node
 * (moleculer#1202). With the breaker moved just outside the timeout, a
 * timed-out call is a failure of the endpoint it went to.
 *
 * Moved in Moleculer's own list (ServiceBroker.INTERNAL_MIDDLEWARES, which
 * every broker registers after the configured middlewares), rather than by
 * listing them all with `internalMiddlewares: false`: the middlewares
 * startMint appends (tests' fault injection) must stay inside Moleculer's
 * retry, timeout and error handling, as Mint's own do.
 */
function breakerAroundTimeout(order: string[]): void {
	order.splice(order.indexOf("CircuitBreaker"), 1);
	order.splice(order.indexOf("Timeout") + 1, 0, "CircuitBreaker");
}
breakerAroundTimeout(ServiceBroker.INTERNAL_MIDDLEWARES);

export function brokerOptions(config: Config): BrokerOptions {
	const exporter = tracingExporters(config);
	return {
		namespace: config.namespace,
		// server.ts owns the process's signals and crash handling; Moleculer's own handlers would stop the broker a second time.
		skipProcessEventRegistration: true,
		nodeID: config.nodeId ?? `${os.hostname()}-${process.pid}`,
		// Moleculer's AMQP transporter, safe to stop while a heartbeat is on its way (lib/amqp-transporter.ts); one per broker.
		transporter: config.transporter
			? new StoppingSafeAmqpTransporter({
					url: config.transporter,
					// Without noDelay every remote call waits ~40 ms for Nagle.
					socketOptions: { noDelay: true },
					// Measured: 1 is a third of the throughput; 16 to 256 are alike (README, Benchmarks).
					prefetch: 64,
					heartbeatTimeToLive: 10_000,
					// A node's own queues (requests, responses, events) expire 2 minutes after it is gone.
					autoDeleteQueues: 120_000,
				})
			: undefined,
		// Exact invalidation, no stale fill, Redis down = uncached (lib/cacher.ts); keys are per namespace.
		cacher: config.redisUrl
			? new MintRedisCacher({ redis: redisOptionsOf(config.redisUrl), prefix: `${config.namespace}:cache` })
			: new MintMemoryCacher({ singleProcess: !config.transporter, prefix: `${config.namespace}:cache` }),
		logger: {
			type: "Pino",
			options: {
				level: config.logLevel,
				pino: {
					options: {
						// Every line written while serving a request carries its request id, trace id and span id.
						mixin: requestLogFields,
						// Never log secrets, even if a caller passes them in an object.
						redact: {
							paths: [
								"password",
								"passwordConfirm",
								"*.password",
								"*.passwordConfirm",
								"*.token",
								"*.refreshToken",
								"*.accessToken",
								"req.headers.cookie",
								"req.headers.authorization",
							],
							censor: "[redacted]",
						},
					},
					// JSON lines as pino writes them, or readable ones for a person at a terminal (LOG_FORMAT; lib/logger-format.ts).
					destination: logDestination(config),
				},
			},
		},
		// In the cluster, events also go to durable RabbitMQ queues (lib/durable-events.ts).
		middlewares: [
			// First: a node refused the ownership of its files (lib/service-ownership.ts) starts nothing else.
			ServiceOwnershipMiddleware(config),
			RequestContextMiddleware,
			...(config.transporter ? [DurableEventsMiddleware(config.transporter)] : []),
			// A node without the gateway still answers /health and /ready on an explicit PORT (lib/probe-server.ts).
			...(config.probePort !== undefined && config.services.length > 0 && !config.services.includes("api") ? [ProbeServerMiddleware(config)] : []),
		],
		// Moleculer types a command's args as string[]; moleculer-repl hands it an object (lib/repl-commands.ts).
		replOptions: { delimiter: "mint $", customCommands: mintReplCommands({ currency: config.currency }) as unknown as ReplOptions["customCommands"] },
		requestTimeout: config.requestTimeoutMs,
		retryPolicy: {
			enabled: true,
			retries: 0,
			delay: 100,
			maxDelay: 2000,
			factor: 2,
			check: (err: Error) => (err as Error & { retryable?: boolean }).retryable === true,
		},
		circuitBreaker: {
			enabled: true,
			threshold: config.circuitBreaker.threshold,
			minRequestCount: config.circuitBreaker.minRequestCount,
			windowTime: config.circuitBreaker.windowSec,
			halfOpenTime: config.circuitBreaker.halfOpenMs,
		},
		bulkhead: { enabled: true, concurrency: 64, maxQueueSize: 1000 },
		heartbeatInterval: 5,
		heartbeatTimeout: 15,
		validator: true,
		errorRegenerator: undefined,
		// Always counted; METRICS_PORT serves them to Prometheus on METRICS_HOST, without host identifiers (lib/metrics-endpoint.ts).
		metrics: metricsOptions(config),
		// A span for every action call and event, whose trace id is the request id (lib/request-context.ts), wherever spans
		// go somewhere: with no exporter they would only cost (about 6% of a cached read). Log lines carry the request id,
		// trace id and a span id either way.
		tracing: {
			enabled: exporter !== null,
			events: true,
			// Params and error data can carry passwords and tokens: a span names the call, never its input.
			tags: { action: { params: false }, event: { params: false } },
			// Five fields: Moleculer merges this list into its default index by index, and the default's fifth is `data`.
			errorFields: ["name", "message", "code", "type", "retryable"],
			exporter,
			// Exporting every span to Zipkin about doubles a cached read's CPU: operators of busy nodes sample.
			sampling: { rate: config.tracing.sampleRate },
		},
	};
}

/** Where spans go: Zipkin v2 JSON to ZIPKIN_URL, the console with TRACING=console, else nowhere (kept in process). */
function tracingExporters(config: Config): TracerOptions["exporter"] {
	const exporters: Extract<NonNullable<TracerOptions["exporter"]>, unknown[]> = [];
	// Moleculer takes an exporter instance too, but types only the named ones.
	if (config.tracing.zipkinUrl) exporters.push(new ZipkinExporter({ baseURL: config.tracing.zipkinUrl, interval: 1 }) as unknown as (typeof exporters)[number]);
	if (config.tracing.console) exporters.push({ type: "Console", options: { width: 120 } });
	return exporters.length > 0 ? exporters : null;
}

/** ioredis options from a redis:// or rediss:// URL (Moleculer's Redis cacher takes options, not a URL). */
export function redisOptionsOf(url: string): Record<string, unknown> {
	const parsed = new URL(url);
	return {
		host: parsed.hostname,
		port: Number(parsed.port || 6379),
		...(parsed.username ? { username: decodeURIComponent(parsed.username) } : {}),
		...(parsed.password ? { password: decodeURIComponent(parsed.password) } : {}),
		...(parsed.pathname.length > 1 ? { db: Number(parsed.pathname.slice(1)) } : {}),
		...(parsed.protocol === "rediss:" ? { tls: {} } : {}),
	};
}
