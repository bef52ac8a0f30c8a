/**
 * The DB mixin: one way for every service to own its collections.
 *
 * - MONGO_URI set: MongooseAdapter (mixins/db/mongo-adapter.ts), a database
 *   per service (`<NAMESPACE>-<service>`, `mint-auth`...) on the process's one MongoDB client, with
 *   pinned write and read concerns.
 * - otherwise, EMBEDDED_STORE=nedb (the default): NedbAdapter
 *   (mixins/db/nedb-adapter.ts), an @seald-io/nedb file per collection under
 *   DATA_DIR; EMBEDDED_STORE=sqlite: SqliteAdapter (mixins/db/sqlite-adapter.ts),
 *   a SQLite file per collection under DATA_DIR (node:sqlite).
 *
 * Both are typed classes implementing the adapter API moleculer-db's DbService
 * calls (`DbAdapter`, mixins/db/store.ts); services see only the `Store` part
 * of it and never learn which one they got: both return plain objects and
 * answer with the same semantics. Documents use string `_id`s chosen by the
 * service, so ids look the same on both. moleculer-db's generated CRUD
 * actions are switched off: nothing outside the service can reach its
 * collections. Every collection, the main one and the extra ones, retries
 * connecting every second until it succeeds (moleculer-db's own rhythm).
 */
import path from "node:path";
import type { ServiceSchema } from "moleculer";
import DbService from "moleculer-db";
import type { Config } from "../lib/config";
import { defineMixin } from "../lib/define-service";
import { NedbAdapter } from "./db/nedb-adapter";
import { SqliteAdapter } from "./db/sqlite-adapter";
import type { AdapterOwner, CollectionSpec, DbAdapter, Store } from "./db/store";

export { NedbAdapter } from "./db/nedb-adapter";
export { SqliteAdapter } from "./db/sqlite-adapter";
export * from "./db/store";

/** What DbMixin adds to `this`: the main collection (moleculer-db's adapter) and the extra ones by name. */
export interface DbVars<TMain, TStores extends Record<string, object> = Record<never, object>> {
	adapter: Store<TMain>;
	stores: { [K in keyof TStores]: Store<TStores[K]> };
}

/**
 * The MongoDB adapter's module, loaded by the first MongoDB collection: mongoose and the MongoDB driver
 * took 0.18 s to load and 18 MB of a node's memory (141 MB resident when ready, 123 MB without them),
 * which a node on the embedded store never uses.
 */
function mongoAdapterModule(): typeof import("./db/mongo-adapter") {
	return require("./db/mongo-adapter") as typeof import("./db/mongo-adapter");
}

/** The adapter for one collection of a service, on the backend the config names. */
export function createAdapter<T>(config: Config, serviceName: string, spec: CollectionSpec): DbAdapter<T> {
	// `<namespace>-<service>`: mint-auth, mint-wallet... by default; another NAMESPACE (another deployment) has its own.
	if (config.mongoUri) return new (mongoAdapterModule().MongooseAdapter)<T>(config.mongoUri, `${config.namespace}-${serviceName}`, spec);
	if (config.embeddedStore === "sqlite") return new SqliteAdapter<T>(spec, path.join(config.dataDir, serviceName, `${spec.name}.sqlite`));
	return new NedbAdapter<T>(spec, path.join(config.dataDir, serviceName, `${spec.name}.db`));
}

// moleculer-db's typings declare its default export as a Service class; at run time it is the mixin schema.
const DbServiceMixin = DbService as unknown as Partial<ServiceSchema>;

const CRUD_ACTIONS = ["find", "count", "list", "create", "insert", "get", "update", "remove"] as const;

/** The schema DbMixin returns: moleculer-db's own keys (`adapter`, `collection`) beside a service schema's. */
export interface DbMixinSchema extends Partial<ServiceSchema> {
	adapter: DbAdapter<unknown>;
	collection: string;
}

/** How long a collection waits before it tries to connect again (moleculer-db's rhythm for the main one). */
const RETRY_CONNECT_MS = 1000;

/** Connects a collection, trying again every second until it succeeds, as moleculer-db does for the main one. */
async function connectRetrying(adapter: DbAdapter<unknown>, name: string, owner: AdapterOwner): Promise<void> {
	for (;;) {
		try {
			await adapter.connect();
			return;
		} catch (err) {
			owner.logger.error({ err, collection: name }, "store: connecting failed, trying again in 1 s");
			await new Promise(resolve => setTimeout(resolve, RETRY_CONNECT_MS));
		}
	}
}

/**
 * The service's main collection through moleculer-db (`this.adapter`), plus
 * extra collections it owns (`this.stores.<name>`), all on the same backend.
 */
export function DbMixin(config: Config, serviceName: string, main: CollectionSpec, extra: CollectionSpec[] = []): DbMixinSchema {
	const lifecycle = defineMixin<{ stores: Record<string, DbAdapter<unknown>> }>()({
		mixins: [DbServiceMixin],
		settings: { idField: "_id" },
		actions: Object.fromEntries(CRUD_ACTIONS.map(name => [name, false as const])),
		async started() {
			this.stores = {};
			for (const spec of extra) {
				const adapter = createAdapter(config, serviceName, spec);
				adapter.init(this.broker, this);
				await connectRetrying(adapter, spec.name, this);
				this.stores[spec.name] = adapter;
			}
		},
		async stopped() {
			for (const adapter of Object.values(this.stores ?? {})) await adapter.disconnect();
		},
	});
	return { ...lifecycle, adapter: createAdapter(config, serviceName, main), collection: main.name };
}
