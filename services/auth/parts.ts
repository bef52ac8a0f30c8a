/**
 * auth's parts, built once per service instance: each a plain module that
 * takes what it needs (stores, settings, secrets, an emitter, a logger), so
 * it can be tested without a broker.
 */
import type { ServiceBroker } from "moleculer";
import type { RevokedSession } from "../../contracts/users";
import { authMetrics } from "../../lib/business-metrics";
import type { Config } from "../../lib/config";
import type { NodeSecrets } from "../../lib/secrets";
import { Accounts } from "./accounts";
import { AuthLimits } from "./limits";
import { OneTimeTokens } from "./one-time-tokens";
import { PasswordHasher } from "./passwords";
import { Sessions } from "./sessions";
import { SigningKeys } from "./signing-keys";
import { authStores, type AuthDbVars, type AuthStores } from "./stores";
import type { Log } from "./support";
import { UserOutbox } from "./user-outbox";
import { Users } from "./users";

export interface AuthParts {
	db: AuthStores;
	users: Users;
	accounts: Accounts;
	sessions: Sessions;
	tokens: OneTimeTokens;
	keys: SigningKeys;
	limits: AuthLimits;
	outbox: UserOutbox;
}

/** `service`: where the stores are (read on use), the broker (events published outside any request) and the logger. */
export function authParts(service: AuthDbVars & { broker: ServiceBroker; logger: Log }, config: Config, secrets: NodeSecrets): AuthParts {
	const { auth } = config;
	const log = service.logger;
	const db = authStores(service);
	const keys = new SigningKeys(db, auth, secrets, log);
	const limits = new AuthLimits(auth, config.redisUrl, log);
	const users = new Users(db);
	const tokens = new OneTimeTokens(db);
	const outbox = new UserOutbox(db, secrets, log);
	const sessions = new Sessions({
		db,
		settings: auth,
		signer: keys,
		secret: secrets.current,
		emitter: service.broker,
		tellGateways: revoked => tellEveryGateway(service.broker, revoked, log),
		log,
	});
	const hasher = new PasswordHasher(auth.argon2);
	const metrics = authMetrics(service.broker);
	const accounts = new Accounts({ users, tokens, outbox, sessions, hasher, limits, settings: auth, emitter: service.broker, log, metrics });
	return { db, users, accounts, sessions, tokens, keys, limits, outbox };
}

/** How long a gateway may take to acknowledge a revocation before the logout answers anyway. */
const GATEWAY_ACK_MS = 1000;

/**
 * Every available gateway node (api service) gets the revocation by a direct
 * call, and the logout waits for their answers: a gateway that is down or
 * slow is logged and left to the broadcast event and its resync.
 */
async function tellEveryGateway(broker: ServiceBroker, revoked: RevokedSession[], log: Log): Promise<void> {
	const gateways = broker.registry.getServiceList({ onlyAvailable: true }).filter(service => service.name === "api");
	const results = await Promise.allSettled(
		gateways.map(gateway => broker.call("api.denySessions", { revoked }, { nodeID: gateway.nodeID, timeout: GATEWAY_ACK_MS, retries: 0 })),
	);
	const failed = results.filter(result => result.status === "rejected").length;
	if (failed > 0) log.warn({ failed, gateways: gateways.length }, "not every gateway acknowledged a revocation; the broadcast and its resync cover it");
}
