/**
 * Starts a Mint node: the services named in SERVICES (default: all) on one
 * broker. `npm start` runs this; with no TRANSPORTER it is the embedded
 * single-process Mint.
 */
import type { Server } from "node:http";
import path from "node:path";
import type { REPLServer } from "node:repl";
import { ServiceBroker, type BrokerOptions, type Service, type ServiceSchema } from "moleculer";
import { ConnectionString } from "mongodb-connection-string-url";
import { ConfigError, loadConfig, type Config } from "./lib/config";
import { terminal } from "./lib/logger-format";
import { ASYNC_CONTEXT_FRAME, usesAsyncContextFrame } from "./lib/node-options";
import { probePortOf } from "./lib/probe-server";
import { ensurePrivateDataDir } from "./lib/secrets";
import { brokerOptions } from "./moleculer.config";
import { createServices } from "./services";

/**
 * Starts a broker with the configured services, plus any extra services
 * (e.g. an operator's tools) and extra middlewares (e.g. fault injection).
 */
export async function startMint(
	config: Config,
	extraServices: ServiceSchema[] = [],
	extraMiddlewares: NonNullable<BrokerOptions["middlewares"]> = [],
): Promise<ServiceBroker> {
	ensurePrivateDataDir(config.dataDir);
	const options = brokerOptions(config);
	const broker = new ServiceBroker({ ...options, middlewares: [...(options.middlewares ?? []), ...extraMiddlewares] });
	for (const schema of [...createServices(config), ...extraServices]) broker.createService(schema);
	await broker.start();
	return broker;
}

/**
 * After an error nothing caught, the process is in an unknown state: log it
 * and exit non-zero, so the supervisor (compose `restart`, systemd
 * `Restart=on-failure`) starts the node afresh. Money steps are idempotent
 * and their sweepers finish what a dead node left half done.
 */
function exitOnUncaughtErrors(loggerOf: () => { fatal(obj: object, msg: string): void } | undefined) {
	const crash = (what: string) => (err: unknown) => {
		try {
			const logger = loggerOf();
			if (logger) logger.fatal({ err }, `${what}; exiting for the supervisor to restart this node`);
			else console.error(`Mint: ${what}; exiting`, err);
		} finally {
			process.exit(1);
		}
	};
	process.on("uncaughtException", crash("uncaught exception"));
	process.on("unhandledRejection", crash("unhandled promise rejection"));
}

/** A listening address as a person types it into a browser: a wildcard address is this host. */
function hostOf(address: string): string {
	if (address === "0.0.0.0" || address === "::") return "localhost";
	return address.includes(":") ? `[${address}]` : address;
}

/**
 * The start banner's lines after the first: where this node's API docs,
 * metrics, data and mail are. A MongoDB is named by its hosts, never its
 * credentials or options.
 */
export function bannerDetails(config: Config, gatewayPort?: number): string[] {
	const lines: [string, string][] = [];
	if (gatewayPort !== undefined) lines.push(["docs", `http://${hostOf(config.host)}:${gatewayPort}/api/docs`]);
	lines.push(["metrics", config.metricsPort > 0 ? `http://${hostOf(config.metricsHost)}:${config.metricsPort}/metrics` : "off (METRICS_PORT serves them)"]);
	const stores = config.services.filter(service => service !== "api");
	if (stores.length > 0) {
		if (config.mongoUri) {
			const uri = new ConnectionString(config.mongoUri);
			const databases = stores.map(service => `${config.namespace}-${service}`).join(", ");
			lines.push(["data", `MongoDB ${uri.isSRV ? "mongodb+srv" : "mongodb"}://${uri.hosts.join(",")} (databases ${databases})`]);
		} else {
			lines.push(["data", `${config.dataDir} (embedded files)`]);
		}
	}
	if (config.services.includes("notifications")) {
		const smtp = config.mail.smtpUrl && new URL(config.mail.smtpUrl);
		lines.push(["mail", smtp ? `${smtp.protocol}//${smtp.host}` : `${path.join(config.dataDir, "mail")} (.eml files; SMTP_URL sends them)`]);
	}
	return lines.map(([what, where]) => `  ${what.padEnd(8)} ${where}`);
}

async function main() {
	// Everything a node writes (data files, .eml, a generated secret) is readable by its own user only.
	process.umask(0o077);
	let broker: ServiceBroker | undefined;
	exitOnUncaughtErrors(() => broker?.logger);
	let config: Config;
	try {
		config = loadConfig();
	} catch (err) {
		if (err instanceof ConfigError) {
			console.error(err.message);
			process.exit(2);
		}
		throw err;
	}
	try {
		broker = await startMint(config);
	} catch (err) {
		// Refused at start-up (e.g. another node owns this service's files: lib/service-ownership.ts): reported as a configuration error.
		if (err instanceof ConfigError) {
			console.error(err.message);
			process.exit(2);
		}
		throw err;
	}
	if (!usesAsyncContextFrame()) {
		broker.logger.warn(
			`started without ${ASYNC_CONTEXT_FRAME}: the request context hooks every promise (about 10% more CPU a request; npm start and the image give the option)`,
		);
	}
	let stopping = false;
	const running = broker;
	const stop = async (signal: string) => {
		if (stopping) return;
		stopping = true;
		running.logger.info(`${signal}: shutting down`);
		await running.stop();
		process.exit(0);
	};
	process.on("SIGTERM", () => void stop("SIGTERM"));
	if (config.repl) {
		// Moleculer types repl() as void; it returns moleculer-repl's node:repl server, above whose prompt log lines now go.
		const repl = broker.repl() as unknown as REPLServer | undefined;
		if (repl) terminal.writeAbovePrompt(repl);
		return; // the REPL owns the terminal (and Ctrl-C); its `quit` stops the broker
	}
	// moleculer-web keeps its node:http server on the service.
	const gateway = broker.getLocalService("api") as (Service & { server?: Server }) | undefined;
	const host = hostOf(config.host);
	if (gateway) {
		const address = gateway.server?.address();
		const port = address && typeof address === "object" ? address.port : config.port;
		broker.logger.info(`Mint is listening on http://${host}:${port}/api/v1`);
		// One write: no log line lands inside the banner. scripts/cluster.ts and the tests read its first line.
		console.log([`Mint is up: http://${host}:${port}/api/v1 (services: ${config.services.join(", ")})`, ...bannerDetails(config, port)].join("\n"));
	} else {
		const probePort = probePortOf(broker);
		const probe = probePort === undefined ? "" : ` (ready: http://${host}:${probePort}/ready)`;
		console.log([`Mint node is up (services: ${config.services.join(", ") || "none"})${probe}`, ...bannerDetails(config)].join("\n"));
	}
	process.on("SIGINT", () => void stop("SIGINT"));
}

if (require.main === module) {
	main().catch(err => {
		console.error("Mint failed to start:", err instanceof Error ? err.message : err);
		process.exit(1);
	});
}
