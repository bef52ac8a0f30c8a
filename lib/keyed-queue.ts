/**
 * Tasks run one after another per key; tasks of different keys run side by
 * side. The wallet service queues each wallet's movements here
 * (services/wallet/wallets.ts, by user): on one node they no longer race
 * for the wallet's next ledger sequence, which the ledger would settle by
 * compare-and-set and retry (correct, but under 32 concurrent transfers from
 * one sender each one retried many times). Correctness never rests on the
 * queue: other nodes (MongoDB) still race, and the ledger still settles it.
 */
export class KeyedQueue {
	/** Each key's last task, settled either way; gone once it is the last and has ended. */
	private readonly tails = new Map<string, Promise<void>>();

	/** Runs `task` after the key's earlier tasks have ended (their failures are theirs). */
	run<T>(key: string, task: () => Promise<T>): Promise<T> {
		const before = this.tails.get(key);
		const result = before ? before.then(task) : started(task);
		const tail = result.then(done, done);
		this.tails.set(key, tail);
		void tail.then(() => {
			if (this.tails.get(key) === tail) this.tails.delete(key);
		});
		return result;
	}

	/** Keys with a task running or waiting. */
	get size(): number {
		return this.tails.size;
	}
}

function done(): void {}

/** A task's promise, a synchronous throw turned into a rejection. */
function started<T>(task: () => Promise<T>): Promise<T> {
	try {
		return task();
	} catch (err) {
		return Promise.reject(err);
	}
}
