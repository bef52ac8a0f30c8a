/**
 * Starts a Mint node: the services named in SERVICES (default: all) on one
 * broker. `npm start` runs this; with no TRANSPORTER it is the embedded
 * single-process Mint.
 */
import { ServiceBroker, type BrokerOptions, type ServiceSchema } from "moleculer";
import { ConfigError, loadConfig, type Config } from "./lib/config";
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
	const options = brokerOptions(config);
	const broker = new ServiceBroker({ ...options, middlewares: [...(options.middlewares ?? []), ...extraMiddlewares] });
	for (const schema of [...createServices(config), ...extraServices]) broker.createService(schema);
	await broker.start();
	return broker;
}

async function main() {
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
	const broker = await startMint(config);
	if (config.repl) {
		broker.repl();
		return; // the REPL owns the terminal; its `quit` stops the broker
	}
	const api = broker.getLocalService("api") as any;
	if (api) {
		const host = config.host === "0.0.0.0" ? "localhost" : config.host;
		broker.logger.info(`Mint is listening on http://${host}:${api.listenPort ?? config.port}/api/v1`);
		console.log(`Mint is up: http://${host}:${api.listenPort ?? config.port}/api/v1 (services: ${config.services.join(", ")})`);
	} else {
		console.log(`Mint node is up (services: ${config.services.join(", ") || "none"})`);
	}
	let stopping = false;
	const stop = async (signal: string) => {
		if (stopping) return;
		stopping = true;
		broker.logger.info(`${signal}: shutting down`);
		await broker.stop();
		process.exit(0);
	};
	process.on("SIGINT", () => void stop("SIGINT"));
	process.on("SIGTERM", () => void stop("SIGTERM"));
}

if (require.main === module) {
	main().catch(err => {
		console.error("Mint failed to start:", err instanceof Error ? err.message : err);
		process.exit(1);
	});
}
