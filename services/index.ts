/** The service factories by name; SERVICES picks which ones a node hosts. */
import type { ServiceSchema } from "moleculer";
import type { Config, ServiceName } from "../lib/config";
import createApiService from "./api.service";
import createAuthService from "./auth.service";
import createNotificationsService from "./notifications.service";
import createTransactionsService from "./transactions.service";
import createWalletService from "./wallet.service";

const FACTORIES: Record<ServiceName, (config: Config) => ServiceSchema> = {
	api: createApiService,
	auth: createAuthService,
	wallet: createWalletService,
	transactions: createTransactionsService,
	notifications: createNotificationsService,
};

export function createServices(config: Config): ServiceSchema[] {
	return config.services.map(name => FACTORIES[name](config));
}
