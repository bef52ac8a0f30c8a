/**
 * Durable events over RabbitMQ (amqplib), for the cluster.
 *
 * Moleculer's own events are fire-and-forget: an event emitted while its
 * consumer's node is down is gone. In cluster mode the events that must not
 * be missed (DURABLE_EVENTS) are also published, persistent and
 * publisher-confirmed, to the topic exchange `<namespace>.events`. Each
 * consumer group in DURABLE_SUBSCRIPTIONS (lib/events.ts) reads its own
 * durable queue `<namespace>.<group>`, bound to the events it needs: messages
 * wait there while it is down. A failed handler's message goes to
 * `<group>.retry` with a growing TTL and comes back; after `maxAttempts` it is
 * parked in `<group>.dead` for an operator.
 *
 * The publisher declares those queues and bindings too (with the consumer's
 * own declaration, so their arguments cannot differ), on connecting and
 * reconnecting, before its first publish: an event published before any
 * consumer ever ran is kept, not dropped. Publishes are `mandatory`: one
 * RabbitMQ returns as unroutable (a queue deleted meanwhile) makes publish()
 * throw, so the producer's outbox keeps the event for its relay, and the next
 * publish declares the topology again first. A consumer whose queue is
 * deleted under it declares it again and resumes.
 */
import crypto from "node:crypto";
import amqp from "amqplib";
import type { Middleware, ServiceBroker } from "moleculer";
import { corkAmqpWrites } from "./amqp-corked-writes";
import { defineMiddleware } from "./middleware";
import { currentTrace, type TraceHeaders } from "./request-context";
import { DURABLE_EVENTS, DURABLE_SUBSCRIPTIONS } from "../contracts/events";

/** Consumer group -> the events its queue is bound to. */
export type DurableTopology = Readonly<Record<string, readonly string[]>>;

export interface DurableSubscription {
	group: string;
	events: readonly string[];
	maxAttempts: number;
	retryBaseMs: number;
	/** `trace`: the request that published the event, when it was published while serving one. */
	handle(event: string, payload: unknown, trace?: TraceHeaders): Promise<void>;
}

interface Logger {
	info(obj: object, msg: string): void;
	warn(obj: object, msg: string): void;
	error(obj: object, msg: string): void;
}

/** A publish awaiting its confirm; RabbitMQ's return of it (which comes first) marks it. */
interface Publication {
	returned: boolean;
}

const ATTEMPT_HEADER = "x-mint-attempts";
/** The publishing request's trace, so the consumer's spans join it (lib/request-context.ts). */
const TRACE_HEADER = "x-mint-trace";

function traceOf(headers: Record<string, unknown> | undefined): TraceHeaders | undefined {
	const raw = headers?.[TRACE_HEADER];
	if (typeof raw !== "string") return undefined;
	try {
		const trace = JSON.parse(raw) as Partial<TraceHeaders>;
		if (typeof trace.requestId === "string" && typeof trace.parentSpanId === "string")
			return { requestId: trace.requestId, parentSpanId: trace.parentSpanId, sampled: trace.sampled !== false };
	} catch {
		// A header Mint did not write: the event starts its own trace.
	}
	return undefined;
}
const DURABLE = new Set<string>(DURABLE_EVENTS);

export class DurableEvents {
	private connection?: amqp.ChannelModel;
	private channel?: amqp.ConfirmChannel;
	private connecting?: Promise<amqp.ConfirmChannel>;
	private readonly subscriptions: DurableSubscription[] = [];
	/** By messageId (the eventId): several publishes share one confirm channel. */
	private readonly unconfirmed = new Map<string, Publication[]>();
	/** A publish came back unroutable: the next one declares the topology again first. */
	private topologyLost = false;
	private redeclaring?: Promise<void>;
	private reconnecting?: Promise<void>;
	private closed = false;
	readonly exchange: string;

	/** `topology`: the subscriptions whose queues this bus declares before publishing (default: Mint's). */
	constructor(
		private readonly url: string,
		private readonly namespace: string,
		private readonly logger: Logger,
		private readonly topology: DurableTopology = DURABLE_SUBSCRIPTIONS,
	) {
		this.exchange = `${namespace}.events`;
	}

	queueOf(group: string) {
		return `${this.namespace}.${group}`;
	}

	/**
	 * Publishes persistently and waits for RabbitMQ's confirm. Throws if the
	 * event reached no queue (returned as unroutable), so the caller's outbox keeps it.
	 */
	async publish(event: string, payload: { eventId?: string }): Promise<void> {
		const channel = await this.open();
		if (this.topologyLost) await this.redeclare(channel);
		const messageId = payload.eventId ?? crypto.randomUUID();
		const publication: Publication = { returned: false };
		const waiting = this.unconfirmed.get(messageId) ?? [];
		waiting.push(publication);
		this.unconfirmed.set(messageId, waiting);
		try {
			await new Promise<void>((resolve, reject) => {
				const content = Buffer.from(JSON.stringify(payload));
				const trace = currentTrace();
				const headers = trace ? { [TRACE_HEADER]: JSON.stringify(trace) } : undefined;
				const options = { mandatory: true, persistent: true, contentType: "application/json", messageId, type: event, headers };
				channel.publish(this.exchange, event, content, options, err => (err ? reject(err) : resolve()));
			});
		} finally {
			waiting.splice(waiting.indexOf(publication), 1);
			if (waiting.length === 0 && this.unconfirmed.get(messageId) === waiting) this.unconfirmed.delete(messageId);
		}
		if (publication.returned) throw new Error(`Durable event ${event} (${messageId}) reached no queue; not published`);
	}

	/** Consumes the group's durable queue (declaring it, its retry and dead-letter queues, and the bindings). */
	async subscribe(subscription: DurableSubscription): Promise<void> {
		this.subscriptions.push(subscription);
		await this.consume(await this.open(), subscription);
	}

	/** Operator: moves a group's dead-lettered events back to its queue, with a fresh retry budget. */
	async redriveDead(group: string): Promise<number> {
		const channel = await this.open();
		const queue = this.queueOf(group);
		let moved = 0;
		for (;;) {
			const message = await channel.get(`${queue}.dead`, { noAck: false });
			if (!message) return moved;
			const { [ATTEMPT_HEADER]: _attempts, ...headers } = message.properties.headers ?? {};
			channel.sendToQueue(queue, message.content, {
				persistent: true,
				contentType: "application/json",
				messageId: message.properties.messageId,
				type: message.properties.type,
				headers,
			});
			await channel.waitForConfirms();
			channel.ack(message);
			moved++;
		}
	}

	/** Operator: how many events wait in a group's queues. */
	async depth(group: string): Promise<{ queued: number; retrying: number; dead: number }> {
		const channel = await this.open();
		const queue = this.queueOf(group);
		const [main, retry, dead] = await Promise.all([queue, `${queue}.retry`, `${queue}.dead`].map(q => channel.checkQueue(q)));
		return { queued: main.messageCount, retrying: retry.messageCount, dead: dead.messageCount };
	}

	async close(): Promise<void> {
		this.closed = true;
		await this.connection?.close().catch(() => undefined);
	}

	/**
	 * A group's queues and bindings: the main queue; `.retry`, where messages
	 * wait out their TTL, then dead-letter back to the main queue; `.dead`.
	 * Publisher and consumer both declare through here: RabbitMQ closes the
	 * channel (PRECONDITION_FAILED) on a queue re-declared with other arguments.
	 */
	private async declareGroup(channel: amqp.Channel, group: string, events: Iterable<string>) {
		const queue = this.queueOf(group);
		await channel.assertQueue(queue, { durable: true });
		await channel.assertQueue(`${queue}.retry`, { durable: true, arguments: { "x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue } });
		await channel.assertQueue(`${queue}.dead`, { durable: true });
		for (const event of events) await channel.bindQueue(queue, this.exchange, event);
	}

	/** The exchange, and the queues of every subscription this bus knows: its topology and its own consumers. */
	private async declareTopology(channel: amqp.Channel) {
		await channel.assertExchange(this.exchange, "topic", { durable: true });
		const groups = new Map<string, Set<string>>();
		const known = [...Object.entries(this.topology), ...this.subscriptions.map(s => [s.group, s.events] as const)];
		for (const [group, events] of known) groups.set(group, new Set([...(groups.get(group) ?? []), ...events]));
		for (const [group, events] of groups) await this.declareGroup(channel, group, events);
	}

	/** After a return: declares the topology again, once for all the publishes waiting on it. */
	private redeclare(channel: amqp.Channel): Promise<void> {
		this.redeclaring ??= (async () => {
			this.topologyLost = false;
			try {
				await this.declareTopology(channel);
				this.logger.warn({ exchange: this.exchange }, "durable events: a publish reached no queue; topology declared again");
			} catch (err) {
				this.topologyLost = true;
				throw err;
			}
		})().finally(() => (this.redeclaring = undefined));
		return this.redeclaring;
	}

	private async consume(channel: amqp.ConfirmChannel, sub: DurableSubscription) {
		const queue = this.queueOf(sub.group);
		await this.declareGroup(channel, sub.group, sub.events);
		await channel.consume(queue, async message => {
			if (!message) {
				// RabbitMQ cancelled this consumer: its queue was deleted (by an operator?). Declare it again and go on;
				// if that fails the channel is lost, and reconnecting consumes again.
				if (this.channel !== channel || this.closed) return;
				this.logger.warn({ queue }, "durable events: queue deleted under its consumer; declaring it again");
				this.consume(channel, sub).catch(err => this.logger.error({ err, queue }, "durable events: could not consume again"));
				return;
			}
			const attempts = Number(message.properties.headers?.[ATTEMPT_HEADER] ?? 0) + 1;
			try {
				// Redelivered from the retry or dead queue, the routing key is the queue's name: the event is in `type`.
				await sub.handle(
					String(message.properties.type ?? message.fields.routingKey),
					JSON.parse(message.content.toString("utf8")),
					traceOf(message.properties.headers),
				);
				channel.ack(message);
			} catch (err) {
				const parkIt = attempts >= sub.maxAttempts;
				const target = parkIt ? `${queue}.dead` : `${queue}.retry`;
				const headers = {
					...message.properties.headers,
					[ATTEMPT_HEADER]: attempts,
					"x-mint-last-error": String((err as Error)?.message ?? err).slice(0, 300),
				};
				channel.sendToQueue(target, message.content, {
					persistent: true,
					contentType: "application/json",
					messageId: message.properties.messageId,
					type: message.properties.type ?? message.fields.routingKey,
					headers,
					...(parkIt ? {} : { expiration: String(sub.retryBaseMs * 2 ** (attempts - 1)) }),
				});
				await channel.waitForConfirms();
				channel.ack(message);
				this.logger.warn({ err, queue, attempts, parked: parkIt }, parkIt ? "durable event dead-lettered" : "durable event failed; will retry");
			}
		});
	}

	private open(): Promise<amqp.ConfirmChannel> {
		if (this.channel) return Promise.resolve(this.channel);
		this.connecting ??= this.connect().finally(() => (this.connecting = undefined));
		return this.connecting;
	}

	/** A connection and its confirm channel, with the topology declared before anything is published on it. */
	private async connect(): Promise<amqp.ConfirmChannel> {
		corkAmqpWrites();
		const connection = await amqp.connect(this.url, { noDelay: true });
		let channel: amqp.ConfirmChannel | undefined;
		const lost = (reason: string) => (err?: unknown) => {
			if (!channel || this.channel !== channel) return;
			this.channel = undefined;
			this.connection = undefined;
			if (this.closed) return;
			this.logger.error({ err }, `durable events: ${reason}; reconnecting`);
			// A channel the server closed leaves its connection open: drop it, with its consumers.
			connection.close().catch(() => undefined);
			this.reconnecting ??= this.reconnect().finally(() => (this.reconnecting = undefined));
		};
		connection.on("error", lost("connection error"));
		connection.on("close", lost("connection closed"));
		try {
			channel = await connection.createConfirmChannel();
			channel.on("error", lost("channel error"));
			channel.on("close", lost("channel closed"));
			channel.on("return", (message: amqp.Message) => {
				this.topologyLost = true;
				for (const publication of this.unconfirmed.get(String(message.properties.messageId)) ?? []) publication.returned = true;
			});
			await channel.prefetch(16);
			await this.declareTopology(channel);
		} catch (err) {
			await connection.close().catch(() => undefined);
			throw err;
		}
		this.topologyLost = false;
		this.connection = connection;
		this.channel = channel;
		return channel;
	}

	private async reconnect(delayMs = 500): Promise<void> {
		while (!this.closed) {
			await new Promise(r => setTimeout(r, delayMs).unref());
			try {
				const channel = await this.open();
				for (const sub of this.subscriptions) await this.consume(channel, sub);
				this.logger.info({}, "durable events: reconnected");
				return;
			} catch (err) {
				delayMs = Math.min(delayMs * 2, 10_000);
				this.logger.warn({ err }, "durable events: reconnect failed");
			}
		}
	}
}

/**
 * Broker middleware: every durable event that goes through broker.emit (and
 * ctx.emit) is also published durably; a failure throws, so the producer's
 * outbox keeps the event for its relay. The bus is `durableEventsOf(broker)`.
 */
export function DurableEventsMiddleware(url: string): Middleware {
	let bus: DurableEvents;
	return defineMiddleware({
		name: "DurableEvents",
		created(broker) {
			bus = new DurableEvents(url, broker.namespace || "mint", broker.getLogger("durable-events"));
			buses.set(broker, bus);
		},
		emit(next) {
			return async (event, payload, opts) => {
				// Durable events went through publish() (lib/events.ts), which checked their contract: they carry an eventId.
				if (DURABLE.has(event)) await bus.publish(event, payload as { eventId: string });
				return next(event, payload, opts);
			};
		},
		async stopped() {
			await bus.close();
		},
	});
}

const buses = new WeakMap<ServiceBroker, DurableEvents>();

/** The node's durable event bus (cluster mode), or undefined (embedded). */
export const durableEventsOf = (broker: ServiceBroker): DurableEvents | undefined => buses.get(broker);
