/**
 * Moleculer's AMQP transporter, with one race closed: a heartbeat begun just
 * before the broker stops (Moleculer samples the CPU first, for a while)
 * publishes on the channel the stop is closing. amqplib throws "Channel
 * closing", and the heartbeat timer's promise has nobody to catch it: an
 * unhandled rejection, which server.ts treats as fatal, so a node could exit
 * 1 on a clean stop. While the transporter disconnects, a packet that cannot
 * go out any more is dropped, as it would be a moment later; at any other
 * time a failed publish still fails. And its frames of a turn go out in one
 * socket write (lib/amqp-corked-writes.ts).
 */
import { Transporters } from "moleculer";
import { corkAmqpWrites } from "./amqp-corked-writes";

/** Moleculer's AMQP options, and amqplib's socket options, which it passes on (its typings leave them out). */
type AmqpOptions = Exclude<ConstructorParameters<typeof Transporters.AMQP>[0], string | undefined> & { socketOptions?: Record<string, unknown> };

export class StoppingSafeAmqpTransporter extends Transporters.AMQP {
	constructor(opts: AmqpOptions) {
		super(opts);
		// Each connection's frames of a turn go out in one socket write (lib/amqp-corked-writes.ts).
		corkAmqpWrites();
	}

	send(topic: string, data: Buffer, meta: object): Promise<void> {
		try {
			return super.send(topic, data, meta);
		} catch (err) {
			if (this.connectionDisconnecting) return Promise.resolve();
			throw err;
		}
	}
}
