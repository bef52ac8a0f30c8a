/**
 * amqplib's frames of a turn in one socket write (lib/amqp-corked-writes.ts):
 * the same bytes in the same order as amqplib's own loop, in one writev;
 * amqplib's flow control kept; and on a real RabbitMQ connection, a burst of
 * publishes arrives whole and in order in far fewer socket writes.
 */
import type { Socket } from "node:net";
import { Readable, Writable } from "node:stream";
import amqp from "amqplib";
import { amqplibMux, corkAmqpWrites } from "../../lib/amqp-corked-writes";
import { describeWithInfra, RABBITMQ_URL, rabbitmqNeed } from "../helpers/infra";
import { countSocketWrites } from "../helpers/socket-writes";

type MuxInstance = { pipeFrom(readable: Readable): void };
const Mux = amqplibMux as unknown as new (out: Writable) => MuxInstance;
/** amqplib's own loop, kept before any test installs the corked one (Jest gives each test file its own modules). */
const ownReadIncoming = amqplibMux.prototype._readIncoming;

/** A socket stand-in: records each write call (one chunk, or a writev's chunks) and the bytes in order. */
function recordingOut(highWaterMark = 1 << 20) {
	const calls: string[][] = [];
	let bytes = "";
	const out = new Writable({
		highWaterMark,
		write(chunk: Buffer, _encoding, done) {
			calls.push([chunk.toString()]);
			bytes += chunk.toString();
			done();
		},
		writev(chunks, done) {
			calls.push(chunks.map(c => String(c.chunk)));
			bytes += chunks.map(c => String(c.chunk)).join("");
			done();
		},
	});
	return { out, calls, bytes: () => bytes };
}

/** Three channels' frame queues, as amqplib's channels pipe them into the Mux: object streams of Buffers. */
function channels(frames: number): Readable[] {
	return ["a", "b", "c"].map(name => {
		const readable = new Readable({ objectMode: true, read() {} });
		for (let i = 0; i < frames; i++) readable.push(Buffer.from(`${name}${i};`));
		return readable;
	});
}

const turn = () => new Promise(resolve => setImmediate(resolve));

async function muxed(frames: number, highWaterMark?: number) {
	const recording = recordingOut(highWaterMark);
	const mux = new Mux(recording.out);
	for (const readable of channels(frames)) mux.pipeFrom(readable);
	for (let i = 0; i < 10; i++) await turn();
	return recording;
}

describe("amqplib's Mux, corked", () => {
	afterEach(() => {
		amqplibMux.prototype._readIncoming = ownReadIncoming;
		delete (amqplibMux.prototype as unknown as { [key: symbol]: unknown })[Symbol.for("mint.amqpCorkedWrites")];
	});

	it("writes a turn's frames in one write, the same bytes in the same order as amqplib's own loop", async () => {
		const own = await muxed(4);
		expect(own.calls.length).toBe(12);
		corkAmqpWrites();
		const corked = await muxed(4);
		expect(corked.calls).toHaveLength(1);
		expect(corked.calls[0]).toHaveLength(12);
		expect(corked.bytes()).toBe(own.bytes());
		// Round robin over the channels, as amqplib writes them.
		expect(corked.bytes().startsWith("a0;b0;c0;a1;")).toBe(true);
	});

	it("keeps amqplib's flow control: past the high-water mark the loop stops, and the rest follows on drain", async () => {
		const own = await muxed(20, 16);
		corkAmqpWrites();
		const corked = await muxed(20, 16);
		expect(corked.bytes()).toBe(own.bytes());
		expect(corked.bytes().split(";").filter(Boolean)).toHaveLength(60);
		// Stopped at the mark: more than one write, each far fewer than the 60 frames.
		expect(corked.calls.length).toBeGreaterThan(1);
		expect(Math.max(...corked.calls.map(call => call.length))).toBeLessThan(60);
	});

	it("is installed once, however often it is asked", () => {
		corkAmqpWrites();
		const installed = amqplibMux.prototype._readIncoming;
		corkAmqpWrites();
		expect(amqplibMux.prototype._readIncoming).toBe(installed);
		expect(installed).not.toBe(ownReadIncoming);
	});
});

describeWithInfra("amqplib's Mux, corked, on RabbitMQ", rabbitmqNeed(), () => {
	it("delivers a burst of publishes whole and in order, in far fewer socket writes than frames", async () => {
		corkAmqpWrites();
		const connection = await amqp.connect(RABBITMQ_URL, { noDelay: true });
		try {
			const channel = await connection.createChannel();
			const { queue } = await channel.assertQueue("", { exclusive: true, autoDelete: true });
			// The connection's socket (amqplib's typings leave it out): its write calls, counted.
			const writes = countSocketWrites((connection as unknown as { connection: { stream: Socket } }).connection.stream);
			const received: string[] = [];
			const all = new Promise<void>(resolve => {
				void channel.consume(
					queue,
					message => {
						if (!message) return;
						received.push(message.content.toString());
						if (received.length === 200) resolve();
					},
					{ noAck: true },
				);
			});
			await turn();
			writes.reset();
			const sent = Array.from({ length: 200 }, (_, i) => `m${i}`);
			for (const body of sent) channel.sendToQueue(queue, Buffer.from(body));
			await all;
			expect(received).toEqual(sent);
			// 200 publishes in one turn: amqplib's own loop made a write each.
			expect(writes.count()).toBeGreaterThan(0);
			expect(writes.count()).toBeLessThan(20);
		} finally {
			await connection.close();
		}
	});
});
