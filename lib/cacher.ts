/**
 * Mint's cacher: Moleculer's own (Redis with REDIS_URL, memory otherwise),
 * with exact invalidation, no stale fill, and an outage that costs speed only.
 *
 * Entries. An action caches with `cache: { scope, ttl, strict? }`
 * (CacheSettings). Its entries are grouped in scopes `<service>:<subject>`,
 * the subject read from the call like a Moleculer cache key (`#user.id` from
 * meta, `id` from params): `wallet:<userId>` holds that user's wallet view,
 * `transactions:<userId>` every page of their history. An entry's key is the
 * subject and all the call's params (an action that declares none has none):
 * Moleculer validates params inside the cacher, so a hit must answer only a
 * call identical to one the action has answered (an extra or different param
 * is a miss, and meets its own validation).
 * A scope has a token (a random id kept in the cache beside its entries); a
 * reader takes the scope's token before it reads the database, stores its
 * entry with that token, and an entry is served only while its scope still
 * has the token it was stored with.
 *
 * Invalidation is deleting a scope's token (invalidate()): every entry of the
 * scope dies at once, whatever its key (a transaction page with any filter),
 * in one exact DEL, no SCAN. A writer does it after its write and before its
 * answer. A reader that read the database before the write and stores its
 * entry after the invalidation stores it under a dead token: never served
 * (the race a plain delete-then-set loses). Concurrent misses of one entry
 * under one token, on one node, share one run of the action (no herd after
 * an invalidation); a read that starts after an invalidation has a new
 * token, so it never joins a run that began before the write.
 *
 * Where the entries live: in Redis every node shares them, so the writer's
 * own invalidation is seen by every reader at once. In memory each node has
 * its own, and other nodes hear of a change by its event (CacheCleaner) a
 * few milliseconds after the write's answer. So `strict` reads (a balance, a
 * transaction's status: never stale once the write has answered) are cached
 * in memory only when the process is the whole Mint (embedded); in a cluster
 * without Redis they are not cached at all.
 *
 * Failure is a miss. A lookup that fails (Redis down or slow) is served by
 * the action, uncached, counted (`mint.cache.lookups.total{result="unavailable"}`)
 * and logged; a store that fails is counted and forgotten. An invalidation
 * that fails may leave stale entries behind: that node stops using the
 * cache until it has flushed every entry of its namespace.
 *
 * Metrics: `mint.cache.lookups.total{action, result: hit|miss|coalesced|unavailable}`
 * and `mint.cache.errors.total{operation}` (Moleculer's own
 * `moleculer.cacher.*` counters have no action label).
 */
import crypto from "node:crypto";
import type Redis from "ioredis";
import { Cachers, type CallingOptions, type Context, type ServiceBroker } from "moleculer";

/** An action's `cache` settings (a type, not an interface: it must fit the schema's `Record<string, unknown>`). */
export type CacheSettings = {
	/** The subject the result is about, and its scope: a meta (`#user.id`) or param (`id`) path. With the params, all a result may depend on. */
	scope: string;
	/** Seconds an entry may live: memory's bound, never what makes it correct. */
	ttl: number;
	/** Must never be stale once a write has answered: not cached where the cache is per node in a cluster. */
	strict?: boolean;
};

/** What a writer invalidates: a service's entries about one subject (e.g. a user). */
export const cacheScope = (service: string, subject: string): string => `${service}:${subject}`;

export const CACHE_LOOKUPS_METRIC = "mint.cache.lookups.total";
export const CACHE_ERRORS_METRIC = "mint.cache.errors.total";

/** A scope's token outlives its entries: when it expires, its entries die with it (a miss, never a stale hit). */
const SCOPE_TTL_SEC = 3600;
/** At most one log line per operation and interval while the cache fails. */
const LOG_INTERVAL_MS = 10_000;
/** The memory cacher's bound, entries and scope tokens together. */
const MEMORY_MAX_ENTRIES = 100_000;
/** How often a node that missed an invalidation tries to flush. */
const FLUSH_RETRY_MS = 1000;

type LookupResult = "hit" | "miss" | "coalesced" | "unavailable";
type Operation = "lookup" | "fill" | "invalidate" | "flush";
type Lookup = { hit: true; value: unknown } | { hit: false; token: string };
type Handler = (ctx: Context) => Promise<unknown>;

/** The part of a Moleculer cacher the protocol uses: its own storage. */
interface Storage {
	connected: boolean | null;
	get(key: string): Promise<unknown>;
	set(key: string, data: unknown, ttl?: number): Promise<unknown>;
	del(key: string | string[]): Promise<unknown>;
	clean(match?: string | string[]): Promise<unknown>;
}

/** A Mint cacher, as services see it. */
export interface ExactCacher {
	/** Kills every entry of these scopes on this node (and, in Redis, for every node); never rejects. */
	invalidate(scopes: readonly string[]): Promise<void>;
	/** A cached action's entry for this call, if the cache holds one (ExactCache.peek); never rejects. */
	peek(name: string, settings: CacheSettings, call: CacheCall, declaresParams?: boolean): Promise<{ value: unknown } | undefined>;
}

const tokenKey = (scope: string) => `scope:${scope}`;

function isCacheSettings(value: unknown): value is CacheSettings {
	const s = value as Partial<CacheSettings> | null;
	return typeof s === "object" && s !== null && typeof s.scope === "string" && typeof s.ttl === "number" && s.ttl > 0;
}

/** What a cache key is made of: a call's params and meta. */
export type CacheCall = Pick<Context, "params" | "meta">;

/** A param (`id`) or meta (`#user.id`) value of a call, as Moleculer's cache keys name them. */
function valueAt(path: string, ctx: CacheCall): unknown {
	const [source, dotted] = path.startsWith("#") ? [ctx.meta, path.slice(1)] : [ctx.params, path];
	let value: unknown = source;
	for (const part of dotted.split(".")) value = value === null || typeof value !== "object" ? undefined : (value as Record<string, unknown>)[part];
	return value;
}

/**
 * Where a call's result lives: its scope and its key (the action, the subject, and the params when the
 * action declares any); undefined when the call has no subject (not cached).
 */
function entryOf(name: string, service: string, settings: CacheSettings, withParams: boolean, call: CacheCall): { scope: string; key: string } | undefined {
	const subject = valueAt(settings.scope, call);
	if (subject === undefined || subject === null || subject === "") return undefined;
	return {
		scope: cacheScope(service, String(subject)),
		key: `${name}:${JSON.stringify(subject)}${withParams ? `|${JSON.stringify(call.params ?? null)}` : ""}`,
	};
}

/** The protocol (tokens, lookups, fills, invalidation, failure), over either cacher's storage. */
class ExactCache {
	private broker?: ServiceBroker;
	private readonly lastLogAt = new Map<string, number>();
	/** Handlers running for a miss, by token and key: concurrent misses of one entry on this node wait for the same one. */
	private readonly inFlight = new Map<string, Promise<unknown>>();
	private readonly creatingTokens = new Map<string, Promise<string>>();
	/** Set when an invalidation failed: entries may be stale until everything is flushed. */
	private mustFlush = false;
	private flushTimer?: NodeJS.Timeout;
	private wasAvailable = true;

	constructor(
		private readonly storage: Storage,
		/** Every reader sees this cache (Redis, or a process that is the whole Mint): strict reads may be cached. */
		private readonly shared: boolean,
	) {}

	init(broker: ServiceBroker): void {
		this.broker = broker;
		broker.metrics.register({
			type: "counter",
			name: CACHE_LOOKUPS_METRIC,
			labelNames: ["action", "result"],
			description: "Cached actions' lookups: hit, miss, coalesced (a concurrent miss's result shared), or unavailable (served uncached)",
		});
		broker.metrics.register({ type: "counter", name: CACHE_ERRORS_METRIC, labelNames: ["operation"], description: "Cache operations that failed" });
	}

	close(): void {
		clearTimeout(this.flushTimer);
	}

	/** Moleculer's cacher middleware, for CacheSettings. */
	middleware() {
		return {
			name: "Cacher",
			localAction: (handler: Handler, action: { name?: string; cache?: unknown; params?: unknown; service?: { name: string } }): Handler => {
				if (!action.cache) return handler;
				const name = String(action.name);
				const settings = action.cache;
				if (!isCacheSettings(settings)) throw new Error(`${name}: cache settings need { scope, ttl } (lib/cacher.ts)`);
				if (settings.strict && !this.shared) return handler;
				const service = action.service?.name ?? name.split(".")[0];
				// An action without params cannot depend on them: a query string added to its route is no new entry.
				const withParams = action.params !== undefined;
				return async (ctx: Context) => {
					if ((ctx.meta as { $cache?: boolean }).$cache === false) return handler(ctx);
					const entry = entryOf(name, service, settings, withParams, ctx);
					if (!entry) return handler(ctx);
					const { key } = entry;
					const lookup = await this.lookup(entry.scope, key);
					if (!lookup) {
						this.count(name, "unavailable");
						return handler(ctx);
					}
					if (lookup.hit) {
						ctx.cachedResult = true;
						this.count(name, "hit");
						return lookup.value;
					}
					// The same entry already being computed here, under the same token: share it (no herd on a fresh miss).
					const flight = `${lookup.token}|${key}`;
					const leader = this.inFlight.get(flight);
					if (leader) {
						this.count(name, "coalesced");
						return leader.then(
							result => structuredClone(result),
							() => handler(ctx),
						);
					}
					this.count(name, "miss");
					const running = handler(ctx);
					this.inFlight.set(flight, running);
					try {
						const result = await running;
						if (result !== undefined) void this.fill(key, lookup.token, result, settings.ttl);
						return result;
					} finally {
						this.inFlight.delete(flight);
					}
				};
			},
		};
	}

	/**
	 * What the cache holds for a call of a cached action, without calling it (the gateway answering
	 * wallet.mine, api/cached-reads.ts; callCached below): the entry under its scope's current token,
	 * counted as a hit, or undefined (nothing there, a strict read this cache may not hold, the cache
	 * unavailable): then the action is called, and its own lookup counts the miss. `declaresParams`
	 * must say what the action's schema says (its key holds the params then). Never stores anything
	 * but a scope's first token.
	 */
	async peek(name: string, settings: CacheSettings, call: CacheCall, declaresParams = false): Promise<{ value: unknown } | undefined> {
		if (settings.strict && !this.shared) return undefined;
		const entry = entryOf(name, name.split(".")[0], settings, declaresParams, call);
		const lookup = entry && (await this.lookup(entry.scope, entry.key));
		if (!lookup?.hit) return undefined;
		this.count(name, "hit");
		return { value: lookup.value };
	}

	async invalidate(scopes: readonly string[]): Promise<void> {
		if (scopes.length === 0) return;
		try {
			await this.storage.del(scopes.map(tokenKey));
		} catch (err) {
			this.failed("invalidate", err);
			// Those scopes' entries may have outlived their data: this node serves nothing from the cache until it has flushed.
			this.mustFlush = true;
			this.scheduleFlush();
		}
	}

	/** The entry under the scope's current token (a hit), or the token to store a fresh one under; null when the cache cannot answer. */
	private async lookup(scope: string, key: string): Promise<Lookup | null> {
		if (!this.available()) return null;
		try {
			const [token, entry] = await Promise.all([this.storage.get(tokenKey(scope)), this.storage.get(key)]);
			if (typeof token === "string") {
				const stored = entry as { s?: unknown; v?: unknown } | null | undefined;
				return stored?.s === token ? { hit: true, value: stored.v } : { hit: false, token };
			}
			return { hit: false, token: await this.newToken(scope) };
		} catch (err) {
			this.failed("lookup", err);
			return null;
		}
	}

	/** A scope's new token, stored before it is used; concurrent lookups on this node share one (and so one run of the action). */
	private newToken(scope: string): Promise<string> {
		let creating = this.creatingTokens.get(scope);
		if (!creating) {
			const fresh = crypto.randomUUID();
			creating = this.storage
				.set(tokenKey(scope), fresh, SCOPE_TTL_SEC)
				.then(() => fresh)
				.finally(() => this.creatingTokens.delete(scope));
			this.creatingTokens.set(scope, creating);
		}
		return creating;
	}

	private async fill(key: string, token: string, value: unknown, ttl: number): Promise<void> {
		try {
			await this.storage.set(key, { s: token, v: value }, ttl);
		} catch (err) {
			this.failed("fill", err);
		}
	}

	private available(): boolean {
		const available = this.storage.connected !== false && !this.mustFlush;
		if (available !== this.wasAvailable) {
			this.wasAvailable = available;
			if (available) this.broker?.getLogger("cacher").info("cache available again");
			else this.broker?.getLogger("cacher").warn({ mustFlush: this.mustFlush }, "cache unavailable: serving cached actions uncached");
		}
		return available;
	}

	private scheduleFlush(): void {
		if (this.flushTimer) return;
		this.flushTimer = setTimeout(() => {
			this.flushTimer = undefined;
			if (!this.mustFlush) return;
			this.storage.clean().then(
				() => {
					this.mustFlush = false;
				},
				(err: unknown) => {
					this.failed("flush", err);
					this.scheduleFlush();
				},
			);
		}, FLUSH_RETRY_MS);
		this.flushTimer.unref();
	}

	private count(action: string, result: LookupResult): void {
		this.broker?.metrics.increment(CACHE_LOOKUPS_METRIC, { action, result });
	}

	private failed(operation: Operation, err: unknown): void {
		this.broker?.metrics.increment(CACHE_ERRORS_METRIC, { operation });
		const now = Date.now();
		if (now - (this.lastLogAt.get(operation) ?? 0) < LOG_INTERVAL_MS) return;
		this.lastLogAt.set(operation, now);
		this.broker?.getLogger("cacher").warn({ err, operation }, "cache operation failed; served uncached");
	}
}

/** The in-process cacher: the embedded default, and cluster nodes without REDIS_URL. */
export class MintMemoryCacher extends Cachers.MemoryLRU implements ExactCacher {
	private readonly exact: ExactCache;

	/** `singleProcess`: this process is the whole Mint (no transporter), so its cache is every reader's. */
	constructor(opts: { singleProcess: boolean; prefix: string }) {
		// Entries are copies (a caller that changes a result must not change the cache); the least recently
		// used go first past MEMORY_MAX_ENTRIES (an evicted scope token is an invalidation: never stale).
		super({ clone: true, prefix: opts.prefix, max: MEMORY_MAX_ENTRIES });
		this.exact = new ExactCache(this, opts.singleProcess);
	}

	init(broker: ServiceBroker): void {
		super.init(broker);
		this.exact.init(broker);
	}

	close(): Promise<void> {
		this.exact.close();
		return super.close();
	}

	middleware() {
		return this.exact.middleware();
	}

	invalidate(scopes: readonly string[]): Promise<void> {
		return this.exact.invalidate(scopes);
	}

	peek(name: string, settings: CacheSettings, call: CacheCall, declaresParams?: boolean): Promise<{ value: unknown } | undefined> {
		return this.exact.peek(name, settings, call, declaresParams);
	}
}

/** The shared cacher (REDIS_URL). Redis out of reach makes commands fail at once (no offline queue), never wait. */
export class MintRedisCacher extends Cachers.Redis<Redis> implements ExactCacher {
	private readonly exact: ExactCache;

	constructor(opts: { redis: Record<string, unknown>; prefix: string }) {
		super({
			prefix: opts.prefix,
			// Auto-pipelining: the commands of a turn of the event loop go out in one socket write, each answered as its own
			// (on the core node of the bench cluster: socket writes per transfer 21.7 -> 10.4, README Benchmarks).
			redis: {
				...opts.redis,
				enableAutoPipelining: true,
				enableOfflineQueue: false,
				maxRetriesPerRequest: 1,
				commandTimeout: 500,
				connectTimeout: 2000,
				disconnectTimeout: 200,
			},
		});
		this.exact = new ExactCache(this, true);
	}

	init(broker: ServiceBroker): void {
		super.init(broker);
		this.exact.init(broker);
		// Moleculer marks the cacher disconnected on an error only; a closed connection is as unusable.
		this.client.on("close", () => {
			this.connected = false;
		});
	}

	async close(): Promise<void> {
		this.exact.close();
		// QUIT needs a connection; without one, just drop the client.
		await super.close().catch(() => this.client.disconnect());
	}

	middleware() {
		return this.exact.middleware();
	}

	invalidate(scopes: readonly string[]): Promise<void> {
		return this.exact.invalidate(scopes);
	}

	peek(name: string, settings: CacheSettings, call: CacheCall, declaresParams?: boolean): Promise<{ value: unknown } | undefined> {
		return this.exact.peek(name, settings, call, declaresParams);
	}
}

/** A cached action's entry for this call through the broker's cacher (ExactCache.peek); undefined without a Mint cacher. */
export function peekCache(
	broker: ServiceBroker,
	name: string,
	settings: CacheSettings,
	call: CacheCall,
	declaresParams = false,
): Promise<{ value: unknown } | undefined> {
	const cacher = broker.cacher as Partial<ExactCacher> | undefined;
	return typeof cacher?.peek === "function" ? cacher.peek(name, settings, call, declaresParams) : Promise.resolve(undefined);
}

/**
 * Calls a cached action that declares params (its `cache` given as `settings`), answered from the
 * cache when it holds this call's entry: no call at all, so on a cluster with Redis no hop to the
 * action's node (notifications asking auth.contactOf for every receipt). A miss is the call, and the
 * action's own lookup fills the entry. With tracing on it always calls, so that the trace shows it.
 */
export async function callCached<T>(ctx: Context, name: string, settings: CacheSettings, params: Record<string, unknown>, opts?: CallingOptions): Promise<T> {
	if (!ctx.broker.isTracingEnabled()) {
		const hit = await peekCache(ctx.broker, name, settings, { params, meta: ctx.meta }, true);
		if (hit) return hit.value as T;
	}
	return ctx.call<T, Record<string, unknown>>(name, params, opts);
}

/** Kills these scopes' entries through the broker's cacher (a Mint cacher; any other has none of ours). */
export async function invalidateCache(broker: ServiceBroker, scopes: readonly string[]): Promise<void> {
	const cacher = broker.cacher as Partial<ExactCacher> | undefined;
	if (typeof cacher?.invalidate === "function") await cacher.invalidate(scopes);
}
