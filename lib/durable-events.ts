/**
 * Durable events over RabbitMQ (amqplib), for the cluster.
 *
 * Moleculer's own events are fire-and-forget: an event emitted while its
 * consumer's node is down is gone. In cluster mode the events that must not
 * be missed (DURABLE_EVENTS) are also published, persistent and
 * publisher-confirmed, to the topic exchange
 * `<namespace>.events`. A consumer that must not miss events (notifications)
 * reads its own durable queue `<namespace>.<group>`, bound to the events it
 * needs: messages wait there while it is down. A failed handler's message
 * goes to `<group>.retry` with a growing TTL and comes back; after
 * `maxAttempts` it is parked in `<group>.dead` for an operator.
 */
import amqp from "amqplib";
import type { Middleware } from "moleculer";
import { DURABLE_EVENTS } from "./events";

export interface DurableSubscription {
	group: string;
	events: string[];
	maxAttempts: number;
	retryBaseMs: number;
	handle(event: string, payload: any): Promise<void>;
}

interface Logger {
	info(obj: object, msg: string): void;
	warn(obj: object, msg: string): void;
	error(obj: object, msg: string): void;
}

const ATTEMPT_HEADER = "x-mint-attempts";
const DURABLE = new Set<string>(DURABLE_EVENTS);

export class DurableEvents {
	private connection?: amqp.ChannelModel;
	private channel?: amqp.ConfirmChannel;
	private connecting?: Promise<amqp.ConfirmChannel>;
	private readonly subscriptions: DurableSubscription[] = [];
	private closed = false;
	readonly exchange: string;

	constructor(
		private readonly url: string,
		private readonly namespace: string,
		private readonly logger: Logger,
	) {
		this.exchange = `${namespace}.events`;
	}

	queueOf(group: string) {
		return `${this.namespace}.${group}`;
	}

	/** Publishes persistently and waits for RabbitMQ's confirm. */
	async publish(event: string, payload: { eventId?: string }): Promise<void> {
		const channel = await this.open();
		channel.publish(this.exchange, event, Buffer.from(JSON.stringify(payload)), {
			persistent: true,
			contentType: "application/json",
			messageId: payload.eventId,
			type: event,
		});
		await channel.waitForConfirms();
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

	private async consume(channel: amqp.ConfirmChannel, sub: DurableSubscription) {
		const queue = this.queueOf(sub.group);
		await channel.assertQueue(queue, { durable: true });
		// Retry queue: messages wait out their TTL, then dead-letter back to the main queue.
		await channel.assertQueue(`${queue}.retry`, { durable: true, arguments: { "x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue } });
		await channel.assertQueue(`${queue}.dead`, { durable: true });
		for (const event of sub.events) await channel.bindQueue(queue, this.exchange, event);
		await channel.consume(queue, async message => {
			if (!message) return;
			const attempts = Number(message.properties.headers?.[ATTEMPT_HEADER] ?? 0) + 1;
			try {
				// Redelivered from the retry or dead queue, the routing key is the queue's name: the event is in `type`.
				await sub.handle(String(message.properties.type ?? message.fields.routingKey), JSON.parse(message.content.toString("utf8")));
				channel.ack(message);
			} catch (err) {
				const parkIt = attempts >= sub.maxAttempts;
				const target = parkIt ? `${queue}.dead` : `${queue}.retry`;
				const headers = { ...message.properties.headers, [ATTEMPT_HEADER]: attempts, "x-mint-last-error": String((err as Error)?.message ?? err).slice(0, 300) };
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

	private async connect(): Promise<amqp.ConfirmChannel> {
		const connection = await amqp.connect(this.url, { noDelay: true });
		const channel = await connection.createConfirmChannel();
		await channel.prefetch(16);
		await channel.assertExchange(this.exchange, "topic", { durable: true });
		this.connection = connection;
		this.channel = channel;
		const lost = (reason: string) => (err?: unknown) => {
			if (this.channel !== channel) return;
			this.channel = undefined;
			this.connection = undefined;
			if (this.closed) return;
			this.logger.error({ err }, `durable events: ${reason}; reconnecting`);
			void this.reconnect();
		};
		connection.on("error", lost("connection error"));
		connection.on("close", lost("connection closed"));
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
 * outbox keeps the event for its relay. The bus is `broker.durableEvents`.
 */
export function DurableEventsMiddleware(url: string): Middleware {
	let bus: DurableEvents;
	return {
		name: "DurableEvents",
		created(broker: any) {
			bus = new DurableEvents(url, broker.namespace || "mint", broker.getLogger("durable-events"));
			broker.durableEvents = bus;
		},
		emit(next: any) {
			return async (event: string, payload: any, opts: any) => {
				if (DURABLE.has(event)) await bus.publish(event, payload);
				return next(event, payload, opts);
			};
		},
		async stopped() {
			await bus.close();
		},
	} as unknown as Middleware;
}
