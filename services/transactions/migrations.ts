/**
 * Transactions written by an older Mint, brought in line at start (each step
 * touches nothing once done; on MongoDB each finds its documents through an
 * index, NeDB looks through the documents it holds in memory):
 * - `parties`, what a user's list is found by, on transactions without it;
 * - no `unpublished: 0`: the count exists only while events are left to
 *   publish, so its sparse index holds the relay's work and nothing else.
 */
import type { Store } from "../../mixins/db.mixin";
import { partiesOf, type TransactionEntity } from "./views";

/** Updates in flight at once: the store groups their writes (one by one, 20,000 took 29 s at start). */
const CONCURRENT_UPDATES = 256;

/** How many transactions each step changed. */
export async function migrateTransactions(store: Store<TransactionEntity>): Promise<{ parties: number; published: number }> {
	let parties = 0;
	// `{parties: null}` also matches a document without the field (MongoDB's semantics, on both stores).
	const missing = await store.find({ query: { parties: null } });
	for (let i = 0; i < missing.length; i += CONCURRENT_UPDATES) {
		const changed = await Promise.all(
			missing.slice(i, i + CONCURRENT_UPDATES).map(tx => store.updateOne({ _id: tx._id, parties: null }, { $set: { parties: partiesOf(tx) } })),
		);
		for (const n of changed) parties += n;
	}
	const published = await store.updateMany({ unpublished: 0 }, { $unset: { unpublished: true } });
	return { parties, published };
}
