/** Readiness names what is down: a transporter that is reconnecting is down, even while Moleculer's transit still says connected. */
import type { ServiceBroker } from "moleculer";
import { readiness } from "../../lib/readiness";

const brokerWith = (transit: object) => ({ started: true, stopping: false, transit, call: async () => ({}), cacher: undefined }) as unknown as ServiceBroker;

describe("readiness", () => {
	it.each([
		[{ connected: true, tx: { connected: true } }, true, "ok"],
		[{ connected: true, tx: { connected: false } }, false, "down"],
		[{ connected: false, tx: { connected: true } }, false, "down"],
	])("transit %j -> ready %p, transporter %p", async (transit, ready, state) => {
		const report = await readiness(brokerWith(transit), []);
		expect([report.ready, report.body.checks.transporter]).toEqual([ready, state]);
		if (!ready) expect(report.body.error).toEqual({ message: "Not ready: transporter", status: 503 });
	});
});
