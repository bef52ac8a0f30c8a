/**
 * Periodic jobs, one way for every service: each job runs every
 * `intervalMs` (and optionally once at start), never overlapping itself (a
 * run still going when the next is due skips that tick), logs its failures,
 * and stops cleanly: stopped() clears the timers and waits for runs in flight.
 * Timers are unref'd: they never keep a process alive.
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

interface RunningJob {
	timer?: NodeJS.Timeout;
	running?: Promise<void>;
}

/** What the mixin adds to `this`. */
export interface PeriodicVars {
	/** Runs a job now unless it is already running (tests, REPL, a kick after new work). */
	runJob(name: string): Promise<void>;
}

export function PeriodicJobs<TThis extends Service>(jobs: PeriodicJob<TThis>[]) {
	const state = new WeakMap<object, Map<string, RunningJob>>();
	const active = jobs.filter(job => job.enabled !== false);
	const jobsOf = (service: object) => {
		let byName = state.get(service);
		if (!byName) state.set(service, (byName = new Map(active.map(job => [job.name, {}]))));
		return byName;
	};
	function runOnce(this: TThis, name: string): Promise<void> {
		const job = active.find(j => j.name === name);
		const slot = jobsOf(this).get(name);
		if (!job || !slot) return Promise.reject(new Error(`No periodic job "${name}"`));
		slot.running ??= job.run
			.call(this)
			.then(
				() => undefined,
				(err: unknown) => this.logger.error({ err, job: name }, "periodic job failed"),
			)
			.finally(() => (slot.running = undefined));
		return slot.running;
	}
	return defineMixin()({
		methods: {
			runJob(name: string): Promise<void> {
				return runOnce.call(this as unknown as TThis, name);
			},
		},
		started() {
			for (const job of active) {
				const slot = jobsOf(this).get(job.name)!;
				slot.timer = setInterval(() => void runOnce.call(this as unknown as TThis, job.name), job.intervalMs);
				slot.timer.unref();
				if (job.runAtStart) void runOnce.call(this as unknown as TThis, job.name);
			}
		},
		async stopped() {
			const slots = [...jobsOf(this).values()];
			for (const slot of slots) clearInterval(slot.timer);
			await Promise.all(slots.map(slot => slot.running));
		},
	});
}
