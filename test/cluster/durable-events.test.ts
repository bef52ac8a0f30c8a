/** The durable event layer itself, against the real RabbitMQ: retries, dead letters, re-drive, waiting while no consumer runs. */
import crypto from "node:crypto";
import { DurableEvents } from "../../lib/durable-events";
import { RABBITMQ_URL, describeWithInfra, rabbitmqNeed, removeFromRabbitmq } from "../helpers/infra";
import { waitFor } from "../helpers/mint";

const AMQP_URL = RABBITMQ_URL;
const quiet = { info() {}, warn() {}, error() {} };

describeWithInfra("durable events over RabbitMQ", rabbitmqNeed(), () => {
	const namespace = `mint-test-${crypto.randomUUID().slice(0, 8)}`;
	const buses: DurableEvents[] = [];
	const bus = () => {
		const b = new DurableEvents(AMQP_URL, namespace, quiet);
		buses.push(b);
		return b;
	};
	const event = (n: number) => ({ eventId: crypto.randomUUID(), n });

	afterAll(async () => {
		for (const b of buses) await b.close();
		await removeFromRabbitmq({
			queues: ["flaky", "broken", "late"].flatMap(group => ["", ".retry", ".dead"].map(suffix => `${namespace}.${group}${suffix}`)),
			exchanges: [`${namespace}.events`],
		});
	});

	it("retries a failing handler with backoff until it succeeds, once per event", async () => {
		const consumer = bus();
		const calls: number[] = [];
		const done: number[] = [];
		await consumer.subscribe({
			group: "flaky",
			events: ["test.flaky"],
			maxAttempts: 5,
			retryBaseMs: 30,
			async handle(_name, payload) {
				calls.push(payload.n);
				if (calls.filter(n => n === payload.n).length < 3) throw new Error("not yet");
				done.push(payload.n);
			},
		});
		await bus().publish("test.flaky", event(1));
		await waitFor(() => done.length === 1 || undefined, 5000);
		expect(calls).toEqual([1, 1, 1]);
		expect(await consumer.depth("flaky")).toEqual({ queued: 0, retrying: 0, dead: 0 });
	});

	it("parks an event in the dead-letter queue after maxAttempts; a re-drive delivers it again", async () => {
		const consumer = bus();
		let healthy = false;
		const seen: string[] = [];
		await consumer.subscribe({
			group: "broken",
			events: ["test.broken"],
			maxAttempts: 2,
			retryBaseMs: 20,
			async handle(name, payload) {
				seen.push(`${name}:${payload.n}:${healthy}`);
				if (!healthy) throw new Error("down");
			},
		});
		await bus().publish("test.broken", event(7));
		await waitFor(async () => ((await consumer.depth("broken")).dead === 1 ? true : undefined), 5000);
		expect(seen).toEqual(["test.broken:7:false", "test.broken:7:false"]);
		healthy = true;
		expect(await consumer.redriveDead("broken")).toBe(1);
		await waitFor(() => seen.includes("test.broken:7:true") || undefined, 5000);
		expect(await consumer.depth("broken")).toEqual({ queued: 0, retrying: 0, dead: 0 });
	});

	it("keeps events published while no consumer runs, for when it comes", async () => {
		const first = bus();
		const got: number[] = [];
		const subscription = { group: "late", events: ["test.late"], maxAttempts: 3, retryBaseMs: 20, handle: async (_: string, p: any) => void got.push(p.n) };
		await first.subscribe(subscription);
		await first.close(); // the consumer's node goes down
		const producer = bus();
		for (const n of [1, 2, 3]) await producer.publish("test.late", event(n));
		await producer.publish("test.unrelated", event(99));
		expect((await producer.depth("late")).queued).toBe(3);
		await bus().subscribe(subscription); // it comes back
		await waitFor(() => got.length === 3 || undefined, 5000);
		expect(got.sort()).toEqual([1, 2, 3]);
	});
});
