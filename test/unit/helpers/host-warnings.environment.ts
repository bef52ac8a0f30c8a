/**
 * Jest's node environment, plus the worker's own warnings re-emitted on the
 * test's `process`: the sandbox `process` is a copy, so a listener on it never
 * hears what Node itself emits (util.promisify's DEP0174, for one).
 */
import { TestEnvironment } from "jest-environment-node";

export default class HostWarningsEnvironment extends TestEnvironment {
	private readonly forward = (warning: Error) => void this.global.process.emit("warning", warning);

	async setup() {
		await super.setup();
		process.on("warning", this.forward);
	}

	async teardown() {
		process.off("warning", this.forward);
		await super.teardown();
	}
}
