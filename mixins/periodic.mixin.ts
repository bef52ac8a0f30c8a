/**
 * Periodic jobs, one way for every service: each job runs every
 * `intervalMs` (and optionally once at start), never overlapping itself (a
 * run still going when the next is due skips that tick), logs its failures,
 * and stops cleanly: stopped() clears the timers and waits for runs in flight.
 * Timers are unref'd: they never keep a process alive. A service may use the
 * mixin more than once (its own jobs, an outbox relay): all its jobs share
 * one registry, so `runJob(name)` finds any of them.
 *
 *   mixins: [PeriodicJobs<ThisService>([{ name: "sweep", intervalMs: 10_000, run() { return this.sweep(); } }])]
 */
import type { Service } from "moleculer";
import { defineMixin } from "../lib/define-service";

export interface PeriodicJob<TThis> {
	name: string;
	intervalMs: number;
	/** Also run once when the service starts (not awaited: the start does not wait for it). */
	runAtStart?: boolean;
	/** Skipped when false (e.g. a schedule that is switched off by config). */
	enabled?: boolean;
	run(this: TThis): Promise<unknown>;
}

interface Slot {
	job: PeriodicJob<Service>;
	timer?: NodeJS.Timeout;
	running?: Promise<void>;
}

/** Every service's jobs, by name. */
const registry = new WeakMap<Service, Map<string, Slot>>();
const slotsOf = (service: Service) => {
	const slots = registry.get(service) ?? new Map<string, Slot>();
	registry.set(service, slots);
	return slots;
};

/** What the mixin adds to `this`. */
export interface PeriodicVars {
	/** Runs a job now, or joins its run in flight (tests, the REPL, a kick after new work). */
	runJob(name: string): Promise<void>;
}

function runOnce(service: Service, name: string): Promise<void> {
	const slot = slotsOf(service).get(name);
	if (!slot) return Promise.reject(new Error(`No periodic job "${name}"`));
	slot.running ??= slot.job.run
		.call(service)
		.then(
			() => undefined,
			(err: unknown) => service.logger.error({ err, job: name }, "periodic job failed"),
		)
		.finally(() => (slot.running = undefined));
	return slot.running;
}

export function PeriodicJobs<TThis extends Service>(jobs: PeriodicJob<TThis>[]) {
	const active = jobs.filter(job => job.enabled !== false) as unknown as PeriodicJob<Service>[];
	return defineMixin()({
		methods: {
			runJob(name: string): Promise<void> {
				return runOnce(this, name);
			},
		},
		created() {
			for (const job of active) slotsOf(this).set(job.name, { job });
		},
		started() {
			for (const job of active) {
				const slot = slotsOf(this).get(job.name);
				if (!slot) continue;
				slot.timer = setInterval(() => void runOnce(this, job.name), job.intervalMs);
				slot.timer.unref();
				if (job.runAtStart) void runOnce(this, job.name);
			}
		},
		async stopped() {
			const mine = active.flatMap(job => slotsOf(this).get(job.name) ?? []);
			for (const slot of mine) clearInterval(slot.timer);
			await Promise.all(mine.map(slot => slot.running));
		},
	});
}
