/** lib/keyed-queue.ts: one key's tasks one after another, in order; other keys alongside; a failure stays its own. */
import { KeyedQueue } from "../../lib/keyed-queue";

/** A task that records its start and end, and ends when told. */
function gate(log: string[], name: string) {
	let open!: () => void;
	const opened = new Promise<void>(resolve => {
		open = resolve;
	});
	return {
		open,
		task: async () => {
			log.push(`${name} start`);
			await opened;
			log.push(`${name} end`);
			return name;
		},
	};
}

const turn = () => new Promise(resolve => setImmediate(resolve));

describe("KeyedQueue", () => {
	it("runs one key's tasks one after another, in the order given", async () => {
		const queue = new KeyedQueue();
		const log: string[] = [];
		const [a, b, c] = ["a", "b", "c"].map(name => gate(log, name));
		const results = [queue.run("w", a.task), queue.run("w", b.task), queue.run("w", c.task)];
		await turn();
		expect(log).toEqual(["a start"]);
		c.open();
		b.open();
		await turn();
		expect(log).toEqual(["a start"]);
		a.open();
		expect(await Promise.all(results)).toEqual(["a", "b", "c"]);
		expect(log).toEqual(["a start", "a end", "b start", "b end", "c start", "c end"]);
	});

	it("runs tasks of different keys side by side", async () => {
		const queue = new KeyedQueue();
		const log: string[] = [];
		const [a, b] = ["a", "b"].map(name => gate(log, name));
		const results = [queue.run("w1", a.task), queue.run("w2", b.task)];
		await turn();
		expect(log).toEqual(["a start", "b start"]);
		b.open();
		expect(await results[1]).toBe("b");
		a.open();
		expect(await results[0]).toBe("a");
	});

	it("hands a task's failure, thrown or rejected, to its caller only, and runs the next", async () => {
		const queue = new KeyedQueue();
		const thrown = queue.run("w", () => {
			throw new Error("thrown");
		});
		const rejected = queue.run("w", async () => {
			throw new Error("rejected");
		});
		const next = queue.run("w", async () => "next");
		await expect(thrown).rejects.toThrow("thrown");
		await expect(rejected).rejects.toThrow("rejected");
		expect(await next).toBe("next");
	});

	it("forgets a key once its last task has ended, and starts the next task at once", async () => {
		const queue = new KeyedQueue();
		const log: string[] = [];
		const a = gate(log, "a");
		const running = queue.run("w", a.task);
		expect(queue.size).toBe(1);
		a.open();
		await running;
		await turn();
		expect(queue.size).toBe(0);
		// Nothing to wait for: the next task starts at once.
		let started = false;
		const again = queue.run("w", async () => {
			started = true;
		});
		expect(started).toBe(true);
		await again;
	});
});
