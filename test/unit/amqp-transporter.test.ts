/** The AMQP transporter's one change (lib/amqp-transporter.ts): a packet on a closing channel, while the broker stops, is dropped, not thrown. */
import { StoppingSafeAmqpTransporter } from "../../lib/amqp-transporter";

/** A channel the server is closing: amqplib throws on every publish. */
const closingChannel = () => {
	const fail = () => {
		throw Object.assign(new Error("Channel closing"), { name: "IllegalOperationError" });
	};
	return { publish: jest.fn(fail), sendToQueue: jest.fn(fail) };
};
const heartbeat = { balanced: false, packet: { target: null } };

describe("StoppingSafeAmqpTransporter", () => {
	it("drops a packet the closing channel refuses while the transporter disconnects", async () => {
		const transporter = new StoppingSafeAmqpTransporter({ url: "amqp://mq:5672", socketOptions: { noDelay: true } });
		const channel = closingChannel();
		Object.assign(transporter, { channel, connectionDisconnecting: true });
		await expect(transporter.send("MOL.HEARTBEAT", Buffer.from("{}"), heartbeat)).resolves.toBeUndefined();
		expect(channel.publish).toHaveBeenCalledTimes(1);
	});

	it("still fails a publish the channel refuses at any other time", () => {
		const transporter = new StoppingSafeAmqpTransporter({ url: "amqp://mq:5672" });
		Object.assign(transporter, { channel: closingChannel(), connectionDisconnecting: false });
		expect(() => transporter.send("MOL.REQB.wallet.debit", Buffer.from("{}"), { balanced: true, packet: { target: null } })).toThrow("Channel closing");
	});

	it("keeps Moleculer's options, amqplib's socket options included", () => {
		const transporter = new StoppingSafeAmqpTransporter({ url: "amqp://mq:5672", socketOptions: { noDelay: true }, prefetch: 64 });
		expect(transporter.opts).toMatchObject({ url: ["amqp://mq:5672"], socketOptions: { noDelay: true }, prefetch: 64 });
	});
});
