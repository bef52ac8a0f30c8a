/**
 * The durable event layer itself, against the real RabbitMQ: retries, dead
 * letters, re-drive, waiting while no consumer runs (or has ever run), and
 * publishes that reach no queue refused rather than dropped.
 */
import crypto from "node:crypto";
import amqp from "amqplib";
import { DurableEvents, type DurableTopology } from "../../lib/durable-events";
import { RABBITMQ_URL, describeWithInfra, rabbitmqNeed, removeFromRabbitmq } from "../helpers/infra";
import { waitFor } from "../helpers/mint";

const AMQP_URL = RABBITMQ_URL;
const quiet = { info() {}, warn() {}, error() {} };

describeWithInfra("durable events over RabbitMQ", rabbitmqNeed(), () => {
	const namespace = `mint-test-${crypto.randomUUID().slice(0, 8)}`;
	const buses: DurableEvents[] = [];
	const groups = ["flaky", "broken", "late", "early", "gone", "shared", "resumed"];
	// Each bus declares only the subscriptions a test gives it (not Mint's own).
	const bus = (topology: DurableTopology = {}) => {
		const b = new DurableEvents(AMQP_URL, namespace, quiet, topology);
		buses.push(b);
		return b;
	};
	const event = (n: number) => ({ eventId: crypto.randomUUID(), n });
	/** What an operator would do in the management UI. */
	const deleteQueue = (group: string) => removeFromRabbitmq({ queues: [`${namespace}.${group}`] });
	const consumersOf = async (group: string) => {
		const connection = await amqp.connect(AMQP_URL);
		try {
			return (await (await connection.createChannel()).checkQueue(`${namespace}.${group}`)).consumerCount;
		} finally {
			await connection.close();
		}
	};

	afterAll(async () => {
		for (const b of buses) await b.close();
		await removeFromRabbitmq({
			queues: groups.flatMap(group => ["", ".retry", ".dead"].map(suffix => `${namespace}.${group}${suffix}`)),
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
			async handle(_name, payload: any) {
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
			async handle(name, payload: any) {
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
		await expect(producer.publish("test.unrelated", event(99))).rejects.toThrow(/reached no queue/);
		expect((await producer.depth("late")).queued).toBe(3);
		await bus().subscribe(subscription); // it comes back
		await waitFor(() => got.length === 3 || undefined, 5000);
		expect(got.sort()).toEqual([1, 2, 3]);
	});

	it("refuses an event no queue is bound to, rather than have RabbitMQ confirm and drop it", async () => {
		const producer = bus();
		await expect(producer.publish("test.nobody", event(1))).rejects.toThrow(/test.nobody .* reached no queue/);
		// The channel is still good: the same bus goes on publishing (and refusing).
		await expect(producer.publish("test.nobody", event(2))).rejects.toThrow(/reached no queue/);
	});

	it("declares its subscribers' queues before its first publish: events wait for a consumer that never ran", async () => {
		const producer = bus({ early: ["test.early"] });
		for (const n of [1, 2]) await producer.publish("test.early", event(n));
		expect((await producer.depth("early")).queued).toBe(2);
		const got: number[] = [];
		await bus().subscribe({ group: "early", events: ["test.early"], maxAttempts: 3, retryBaseMs: 20, handle: async (_, p: any) => void got.push(p.n) });
		await waitFor(() => got.length === 2 || undefined, 5000);
		expect(got.sort()).toEqual([1, 2]);
	});

	it("refuses a publish after its queue was deleted, and declares the queue again before the next", async () => {
		const producer = bus({ gone: ["test.gone"] });
		await producer.publish("test.gone", event(1));
		await deleteQueue("gone");
		await expect(producer.publish("test.gone", event(2))).rejects.toThrow(/reached no queue/);
		await producer.publish("test.gone", event(3));
		expect(await producer.depth("gone")).toEqual({ queued: 1, retrying: 0, dead: 0 });
	});

	it("refuses only the publishes that were returned, among several awaiting confirms on one channel", async () => {
		const producer = bus({ shared: ["test.shared"] });
		await producer.publish("test.shared", event(0)); // connected, topology declared
		const results = await Promise.allSettled(Array.from({ length: 20 }, (_, n) => producer.publish(n % 3 === 0 ? "test.nobody" : "test.shared", event(n))));
		const refused = results.flatMap((r, n) => (r.status === "rejected" ? [n] : []));
		expect(refused).toEqual([0, 3, 6, 9, 12, 15, 18]);
		expect((await producer.depth("shared")).queued).toBe(1 + 13);
	});

	it("a consumer whose queue is deleted under it declares the queue again and goes on consuming", async () => {
		const got: number[] = [];
		const consumer = bus();
		await consumer.subscribe({ group: "resumed", events: ["test.resumed"], maxAttempts: 3, retryBaseMs: 20, handle: async (_, p: any) => void got.push(p.n) });
		await deleteQueue("resumed");
		await waitFor(async () => ((await consumersOf("resumed").catch(() => 0)) === 1 ? true : undefined), 5000);
		await bus({ resumed: ["test.resumed"] }).publish("test.resumed", event(5));
		await waitFor(() => got.length === 1 || undefined, 5000);
		expect(got).toEqual([5]);
	});
});
