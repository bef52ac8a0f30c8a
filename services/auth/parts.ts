/**
 * auth's parts, built once per service instance: each a plain module that
 * takes what it needs (stores, settings, secrets, an emitter, a logger), so
 * it can be tested without a broker.
 */
import type { Config } from "../../lib/config";
import type { NodeSecrets } from "../../lib/secrets";
import { Accounts } from "./accounts";
import { AuthLimits } from "./limits";
import { OneTimeTokens } from "./one-time-tokens";
import { PasswordHasher } from "./passwords";
import { Sessions } from "./sessions";
import { SigningKeys } from "./signing-keys";
import { authStores, type AuthDbVars, type AuthStores } from "./stores";
import type { Emitter, Log } from "./support";
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
export function authParts(service: AuthDbVars & { broker: Emitter; logger: Log }, config: Config, secrets: NodeSecrets): AuthParts {
	const { auth } = config;
	const log = service.logger;
	const db = authStores(service);
	const keys = new SigningKeys(db, auth, secrets, log);
	const limits = new AuthLimits(auth, config.redisUrl);
	const users = new Users(db);
	const tokens = new OneTimeTokens(db);
	const outbox = new UserOutbox(db, secrets, log);
	const sessions = new Sessions({ db, settings: auth, signer: keys, secret: secrets.current, emitter: service.broker, log });
	const hasher = new PasswordHasher(auth.argon2);
	const accounts = new Accounts({ users, tokens, outbox, sessions, hasher, limits, settings: auth, emitter: service.broker, log });
	return { db, users, accounts, sessions, tokens, keys, limits, outbox };
}
