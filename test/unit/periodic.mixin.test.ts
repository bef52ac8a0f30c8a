/** Periodic jobs: on schedule, never overlapping themselves, failures logged, stopped cleanly; and the outbox relay on top. */
import { ServiceBroker } from "moleculer";
import { defineService } from "../../lib/define-service";
import { OutboxRelay } from "../../mixins/outbox.mixin";
import { PeriodicJobs } from "../../mixins/periodic.mixin";

const sleep = (ms: number) => new Promise(r => setTimeout(r, ms));

describe("PeriodicJobs", () => {
	let broker: ServiceBroker;
	afterEach(() => broker?.stop());

	it("runs every interval without overlapping itself, and stop() waits for the run in flight", async () => {
		broker = new ServiceBroker({ logger: false });
		const log: string[] = [];
		let concurrent = 0;
		let maxConcurrent = 0;
		broker.createService(
			defineService()({
				name: "jobs",
				mixins: [
					PeriodicJobs([
						{
							name: "slow",
							intervalMs: 10,
							async run() {
								log.push("start");
								concurrent++;
								maxConcurrent = Math.max(maxConcurrent, concurrent);
								await sleep(35);
								concurrent--;
								log.push("done");
							},
						},
					]),
				],
			}),
		);
		await broker.start();
		// Wait for three runs to finish (not a fixed sleep: a busy CI machine may delay timers).
		const done = () => log.filter(e => e === "done").length;
		const deadline = Date.now() + 10_000;
		while (done() < 3 && Date.now() < deadline) await sleep(5);
		expect(done()).toBeGreaterThanOrEqual(3);
		expect(maxConcurrent).toBe(1);
		// Stop while a run is in flight: stop() resolves only once it has finished.
		while (concurrent === 0) await sleep(2);
		await broker.stop();
		expect(concurrent).toBe(0);
		expect(log.filter(e => e === "start").length).toBe(log.filter(e => e === "done").length);
		const atStop = log.length;
		await sleep(60);
		expect(log.length).toBe(atStop);
	});

	it("keeps running after a failure, logging it; runJob joins the run in flight", async () => {
		broker = new ServiceBroker({ logger: false });
		let calls = 0;
		const service = broker.createService(
			defineService()({
				name: "flaky",
				mixins: [
					PeriodicJobs([
						{
							name: "flaky",
							intervalMs: 60_000,
							async run() {
								calls++;
								await sleep(20);
								if (calls === 1) throw new Error("first run fails");
							},
						},
					]),
				],
			}),
		) as unknown as { runJob(name: string): Promise<void>; logger: { error: jest.Mock } };
		await broker.start();
		const errors = jest.spyOn(service.logger, "error");
		await Promise.all([service.runJob("flaky"), service.runJob("flaky")]);
		expect(calls).toBe(1);
		expect(errors).toHaveBeenCalledWith(expect.objectContaining({ job: "flaky" }), "periodic job failed");
		await service.runJob("flaky");
		expect(calls).toBe(2);
		await expect(service.runJob("nope")).rejects.toThrow('No periodic job "nope"');
	});
});

describe("OutboxRelay", () => {
	it("relays what has been pending since before the quiet time, and counts what went out", async () => {
		const broker = new ServiceBroker({ logger: false });
		const docs = [
			{ id: "a", pendingSince: Date.now() - 10_000, published: false },
			{ id: "b", pendingSince: Date.now(), published: false },
			{ id: "c", pendingSince: Date.now() - 10_000, published: false, failing: true },
		];
		const service = broker.createService(
			defineService()({
				name: "producer",
				mixins: [
					OutboxRelay<any, (typeof docs)[number]>({
						intervalMs: 60_000,
						quietMs: 5_000,
						async pending(quietBefore) {
							return docs.filter(d => !d.published && d.pendingSince < quietBefore.getTime());
						},
						async relay(doc) {
							if (doc.failing) throw new Error("bus down");
							doc.published = true;
							return 1;
						},
					}),
				],
			}),
		) as unknown as { relayOutbox(): Promise<number> };
		await broker.start();
		try {
			expect(await service.relayOutbox()).toBe(1);
			expect(docs.map(d => d.published)).toEqual([true, false, false]);
			expect(await service.relayOutbox()).toBe(0);
		} finally {
			await broker.stop();
		}
	});
});
