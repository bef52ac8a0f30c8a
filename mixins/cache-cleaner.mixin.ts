/**
 * Cache cleaning, as icebob/kantab's cache-cleaner mixin: a service's cached
 * entries about a subject (a user) die when an event says the subject
 * changed, on every node that runs the service.
 *
 *   mixins: [CacheCleaner({ "wallet.credited": ["userId"], ... })]
 *
 * Each event names the payload fields that hold the subjects (user ids); the
 * service's scopes `<service>:<subject>` (lib/cacher.ts) are invalidated.
 *
 * Every node hears them: the cleaner subscribes in a group of its own per
 * service instance, so an emitted event (transaction.*, which must be
 * emitted: they are durable) reaches every instance as a broadcast one
 * (wallet.*, user.updated) does. Moleculer runs a node's own handlers before
 * its emit or broadcast resolves: the writer's node has cleaned by the time
 * publish() returns, and in Redis that is every node's cache.
 *
 * Writers also clean explicitly (`cleanCache`, `cleanCacheFor`) where the
 * event alone is not enough: a retried movement that publishes nothing, or
 * an announcement the durable bus may refuse before any handler runs.
 */
import crypto from "node:crypto";
import type { Context } from "moleculer";
import type { EVENT_CONTRACTS, EventName } from "../contracts/events";
import { cacheScope, invalidateCache } from "../lib/cacher";
import { defineMixin, type EventDef, type ServiceThis } from "../lib/define-service";
import { consumerContract } from "../lib/events";

export interface CacheCleanerVars {
	/** Invalidates this service's entries about these subjects (missing ones are skipped), before the caller answers. */
	cleanCache(subjects: readonly (string | undefined)[]): Promise<void>;
	/** Invalidates what this event, by the cleaner's spec, says changed (nothing for an event the cleaner does not follow). */
	cleanCacheFor(event: string, payload: unknown): Promise<void>;
}

/** Per event, the payload fields naming the subjects whose entries it invalidates. */
export type CleaningSpec = { [N in EventName]?: readonly (keyof (typeof EVENT_CONTRACTS)[N] & string)[] };

export function CacheCleaner(spec: CleaningSpec) {
	// One group per service instance: every instance hears an emitted event too.
	const group = `cache-cleaner.${crypto.randomUUID()}`;
	const fieldsOf = (event: string): readonly string[] => (spec as Record<string, readonly string[] | undefined>)[event] ?? [];
	const events: Record<string, EventDef<ServiceThis<CacheCleanerVars, Record<never, never>>>> = {};
	for (const name of Object.keys(spec) as EventName[]) {
		events[name] = {
			group,
			params: consumerContract(name, ...(fieldsOf(name) as (keyof (typeof EVENT_CONTRACTS)[typeof name])[])),
			handler(ctx: Context<unknown>) {
				return this.cleanCacheFor(name, ctx.params);
			},
		};
	}

	return defineMixin<CacheCleanerVars>()({
		events,
		methods: {
			async cleanCache(subjects: readonly (string | undefined)[]): Promise<void> {
				const unique = [...new Set(subjects.filter((s): s is string => typeof s === "string" && s.length > 0))];
				await invalidateCache(
					this.broker,
					unique.map(subject => cacheScope(this.name, subject)),
				);
			},
			cleanCacheFor(event: string, payload: unknown): Promise<void> {
				const fields = payload !== null && typeof payload === "object" ? (payload as Record<string, unknown>) : {};
				return this.cleanCache(fieldsOf(event).map(field => (typeof fields[field] === "string" ? (fields[field] as string) : undefined)));
			},
		},
	});
}
