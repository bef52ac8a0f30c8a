/**
 * Sorted pages and counts from NeDB with less work per matching document.
 *
 * NeDB's cursor reads the candidates an index gives for the filter (or every
 * document), matches each against the whole filter, then sorts every match
 * and cuts the page out; a count matches every candidate. A page of 20 of a
 * user's transactions so matched and sorted all of them (27,001 for the
 * bench world's heavy user: 34 ms in memory alone, 250 ms of CPU a list in a
 * node with a 2 GB heap), and its total matched them all again. Here:
 *
 * - the candidates are NeDB's own (`_getCandidatesAsync`, its choice of
 *   index), and they are matched against the rest of the filter only: the
 *   equality NeDB took them from (a plain value on an indexed top-level
 *   field, the one NeDB picks) holds for each of them already. A count with
 *   nothing else in its filter is the number of candidates;
 * - `sortedPage` keeps only the best `skip + limit` matches as it goes (each
 *   compared with the worst kept first: once that many are kept, most are
 *   turned away with one comparison). When the sort ends on `_id` (unique:
 *   no two documents compare equal) and starts descending, the candidates
 *   are read from the last: an index keeps a key's documents in the order
 *   they were inserted, so the newest come first.
 *
 * The answers are exactly NeDB's: the same comparisons (each sort field
 * through NeDB's compareThings and the datastore's compareStrings), equal
 * documents in the order NeDB finds them (its sort is stable), NeDB's
 * projection and copies of the page only. Relies on NeDB 3's internals
 * (`_getCandidatesAsync`, `executor`, `indexes`, the cursor's `query`,
 * `_sort`, `_skip`, `_limit`, `_project`, `mapFn`): the versions are pinned by
 * package-lock.json, and test/unit/nedb-reads.test.ts checks pages and
 * counts against NeDB's own.
 */
import { compareThings, getDotValue, match } from "@seald-io/nedb/lib/model.js";

/** A NeDB datastore (@seald-io/nedb/lib/datastore.js), as much of it as this uses. */
interface NedbDatastore<T> {
	executor: { pushAsync<R>(task: () => Promise<R>): Promise<R> };
	indexes: Record<string, unknown>;
	_getCandidatesAsync(query: object): Promise<T[]>;
	compareStrings?: (a: string, b: string) => number;
}

/** A NeDB cursor (@seald-io/nedb/lib/cursor.js), as much of it as this uses. */
interface NedbCursor<T> {
	db: NedbDatastore<T>;
	query: Record<string, unknown>;
	_sort?: Record<string, number>;
	_skip?: number;
	_limit?: number;
	_project(docs: T[]): T[];
	/** What the datastore's findAsync does to the page: a deep copy of each document. */
	mapFn?: (docs: T[]) => T[];
}

const isDate = (value: unknown) => Object.prototype.toString.call(value) === "[object Date]";

/**
 * NeDB's candidates for a filter, and whether each of them matches it. NeDB takes its candidates from
 * the last field of the filter that is indexed and holds a plain value (a string, number, boolean, date
 * or null: lib/datastore.js _getRawCandidates); for a string, number or boolean on a top-level field,
 * every candidate equals it, so only the rest of the filter is left to match.
 */
async function candidatesOf<T>(db: NedbDatastore<T>, query: Record<string, unknown>): Promise<{ candidates: T[]; matches: (doc: T) => boolean }> {
	const candidates = await db._getCandidatesAsync(query);
	const used = Object.entries(query)
		.filter(([key, value]) => (["string", "number", "boolean"].includes(typeof value) || isDate(value) || value === null) && Object.hasOwn(db.indexes, key))
		.pop();
	if (!used || !["string", "number", "boolean"].includes(typeof used[1]) || used[0].includes(".")) return { candidates, matches: doc => match(doc, query) };
	const { [used[0]]: _taken, ...rest } = query;
	if (Object.keys(rest).length === 0) return { candidates, matches: () => true };
	return { candidates, matches: doc => match(doc, rest) };
}

/** How many documents match the filter, as NeDB's count (without skip or limit) answers. */
export function countMatching<T>(datastore: unknown, query: Record<string, unknown>): Promise<number> {
	const db = datastore as NedbDatastore<T>;
	return db.executor.pushAsync(async () => {
		const { candidates, matches } = await candidatesOf(db, query);
		let count = 0;
		for (const doc of candidates) if (matches(doc)) count++;
		return count;
	});
}

/** The page a cursor with a sort and a limit answers, as NeDB's own execution would; `undefined` for any other cursor. */
export function sortedPage<T>(cursor: unknown): Promise<T[]> | undefined {
	const c = cursor as NedbCursor<T>;
	// A top-level field is read as NeDB's getDotValue reads it (obj[key]), without splitting its name on every comparison.
	const criteria = Object.entries(c._sort ?? {}).map(([key, direction]) => ({
		key,
		direction,
		of: key.includes(".") ? (doc: T) => getDotValue(doc, key) : (doc: T) => (doc as Record<string, unknown>)[key],
	}));
	if (criteria.length === 0 || !c._limit) return undefined;
	const skip = c._skip ?? 0;
	const keep = skip + c._limit;
	const compare = (a: T, b: T) => {
		for (const { of, direction } of criteria) {
			const order = direction * compareThings(of(a), of(b), c.db.compareStrings);
			if (order !== 0) return order;
		}
		return 0;
	};
	const newestFirst = criteria[criteria.length - 1].key === "_id" && criteria[0].direction < 0;
	return c.db.executor.pushAsync(async () => {
		const { candidates, matches } = await candidatesOf(c.db, c.query);
		const kept: T[] = [];
		const consider = (doc: T) => {
			if (kept.length === keep && compare(doc, kept[keep - 1]) >= 0) return;
			if (!matches(doc)) return;
			// After every kept document that is not after it: equal ones keep the order they were found in.
			let low = 0;
			let high = kept.length;
			while (low < high) {
				const mid = (low + high) >>> 1;
				if (compare(kept[mid], doc) <= 0) low = mid + 1;
				else high = mid;
			}
			kept.splice(low, 0, doc);
			if (kept.length > keep) kept.pop();
		};
		if (newestFirst) for (let i = candidates.length - 1; i >= 0; i--) consider(candidates[i]);
		else for (const doc of candidates) consider(doc);
		const page = c._project(kept.slice(skip));
		return c.mapFn ? c.mapFn(page) : page;
	});
}
