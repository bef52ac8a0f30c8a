/**
 * The outbox relay, one shape for every producer. A state change and the
 * event it must announce are written together (in the same document); the
 * event goes out right away, and a document whose events were not confirmed
 * published stays "pending". The relay, a periodic job, finds documents
 * pending since before `quietMs` ago and publishes their events again under
 * the same event ids (consumers dedupe), marking each by compare-and-set.
 *
 *   mixins: [OutboxRelay<This, UserEntity>({ intervalMs, quietMs, pending(quietBefore) {...}, relay(doc) {...} })]
 */
import type { Service } from "moleculer";
import { defineMixin } from "../lib/define-service";
import { PeriodicJobs } from "./periodic.mixin";

export interface OutboxSpec<TThis, TDoc> {
	/** How often the relay looks. */
	intervalMs: number;
	/** How long an event may wait for its first publish before the relay sends it again. */
	quietMs: number;
	/** Documents holding events not yet confirmed published, last changed before `quietBefore`. */
	pending(this: TThis, quietBefore: Date): Promise<TDoc[]>;
	/** Publishes one document's pending events again and marks them; how many went out (0 when it must wait for the next run). */
	relay(this: TThis, doc: TDoc): Promise<number>;
}

/** What the mixin adds to `this`: one relay run now (tests, the REPL), or the run in flight. */
export interface OutboxVars {
	relayOutbox(): Promise<number>;
}

export function OutboxRelay<TThis extends Service, TDoc>(spec: OutboxSpec<TThis, TDoc>) {
	async function relayAll(this: TThis): Promise<number> {
		let published = 0;
		for (const doc of await spec.pending.call(this, new Date(Date.now() - spec.quietMs))) {
			try {
				published += await spec.relay.call(this, doc);
			} catch (err) {
				this.logger.warn({ err }, "outbox relay could not publish; will try again");
			}
		}
		if (published) this.logger.warn({ published }, "outbox relay published pending events");
		return published;
	}
	return defineMixin()({
		mixins: [PeriodicJobs<TThis>([{ name: "outbox-relay", intervalMs: spec.intervalMs, run: relayAll }])],
		methods: {
			relayOutbox(): Promise<number> {
				return relayAll.call(this as unknown as TThis);
			},
		},
	});
}
