/**
 * amqplib's frames out of a connection in one socket write per turn.
 *
 * amqplib queues each channel's frames and, once a turn of the event loop
 * (its Mux, on a setImmediate), writes every queued frame to the socket one
 * `write` at a time: each a system call, in which the kernel also hands the
 * bytes over to RabbitMQ on loopback. On the core node of the bench's cluster
 * that was 14% of the CPU profile's samples under transfers (requests,
 * responses, events, the durable events' confirmed publishes). Corking the
 * socket around that loop sends the same frames, in the same order, in one
 * `writev`. Flow control is amqplib's own: a write still answers false past
 * the socket's high-water mark, and the loop still stops there.
 *
 * Installed on amqplib's Mux (lib/mux.js, the version pinned by
 * package-lock.json) for every connection of the process: Moleculer's
 * transporter and the durable events' own (lib/durable-events.ts).
 */

interface MuxOut {
	cork?: () => void;
	uncork?: () => void;
}

interface MuxPrototype {
	out: MuxOut;
	_readIncoming(): void;
	[CORKED]?: true;
}

const CORKED = Symbol.for("mint.amqpCorkedWrites");

/** amqplib's multiplexer (its typings leave it out). */
export const amqplibMux: { prototype: MuxPrototype } = require("amqplib/lib/mux").Mux;

/** Idempotent: a process installs it once, whoever asks. */
export function corkAmqpWrites(): void {
	const proto = amqplibMux.prototype;
	if (proto[CORKED]) return;
	const readIncoming = proto._readIncoming;
	proto._readIncoming = function (this: MuxPrototype) {
		const out = this.out;
		if (typeof out.cork !== "function" || typeof out.uncork !== "function") return readIncoming.call(this);
		out.cork();
		try {
			readIncoming.call(this);
		} finally {
			out.uncork();
		}
	};
	proto[CORKED] = true;
}
