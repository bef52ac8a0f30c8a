/**
 * A large world for `npm run bench` (BENCH_WORLD=<transactions>), written
 * straight into the embedded store's files before its node starts, in the
 * documents' own shapes: users, their wallets, the ledger's entries and the
 * transactions that moved the money, consistent with one another (every
 * balance is its entries' sum, every entry matches a completed transaction,
 * money is conserved). No delivery records: the mailbox starts empty.
 *
 * Into NeDB's files (`<service>/<collection>.db`, one document a line), or
 * into the folder `npm run data -- import` reads (`.ndjson` files and their
 * manifest), from which the bench imports it into SQLite: the same lines,
 * without NeDB loading a million documents to export them.
 *
 * `transactions` of them in all: one top-up per user (users = a tenth of the
 * transactions), the rest transfers of a few cents; one user, the heavy one,
 * is a party to a tenth of them. The heavy user logs in with HEAVY_EMAIL and
 * HEAVY_PASSWORD, so the bench's rows can read and move its money.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import argon2 from "argon2";
import { MANIFEST_FILE, type Manifest } from "../scripts/data";

export const HEAVY_EMAIL = "bench-heavy@example.com";
export const HEAVY_PASSWORD = "bench password";
/** Every user's top-up, in minor units: enough for every transfer it makes. */
const TOP_UP_MINOR = 10_000_000;

export interface World {
	users: number;
	transactions: number;
	/** The heavy user's transactions (top-up included). */
	heavyTransactions: number;
	/** Bytes written, and how long generating took. */
	bytes: number;
	ms: number;
}

/** Lines of JSON to a file, buffered. */
class Lines {
	private readonly fd: number;
	private chunk: string[] = [];
	private size = 0;
	bytes = 0;
	count = 0;

	constructor(file: string) {
		fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
		this.fd = fs.openSync(file, "w", 0o600);
	}

	add(doc: object): void {
		const line = `${JSON.stringify(doc)}\n`;
		this.chunk.push(line);
		this.size += line.length;
		this.count++;
		if (this.size > 1 << 20) this.flush();
	}

	private flush(): void {
		const text = this.chunk.join("");
		fs.writeSync(this.fd, text);
		this.bytes += Buffer.byteLength(text);
		this.chunk = [];
		this.size = 0;
	}

	close(): number {
		this.flush();
		fs.closeSync(this.fd);
		return this.bytes;
	}
}

/** A deterministic stream of numbers (the same world for the same size). */
function xorshift(seed: number): () => number {
	let x = seed >>> 0 || 1;
	return () => {
		x ^= x << 13;
		x ^= x >>> 17;
		x ^= x << 5;
		return (x >>> 0) / 4_294_967_296;
	};
}

/** Where the world goes: NeDB's data files, or an export folder for `npm run data -- import`. */
export type WorldFormat = "nedb" | "export";

export async function generateWorld(dir: string, transactions: number, format: WorldFormat = "nedb"): Promise<World> {
	const started = Date.now();
	const users = Math.max(2, Math.floor(transactions / 10));
	const random = xorshift(transactions);
	const heavyHash = await argon2.hash(HEAVY_PASSWORD, { type: argon2.argon2id });
	// Nobody logs in as the others: one hash of a random password for all of them.
	const otherHash = await argon2.hash(crypto.randomBytes(16).toString("hex"), { type: argon2.argon2id });
	const base = Date.parse("2026-01-01T00:00:00.000Z");
	let clock = 0;
	const at = () => new Date(base + clock++).toISOString();

	const extension = format === "nedb" ? ".db" : ".ndjson";
	const collections = { users: "auth", wallets: "wallet", entries: "wallet", transactions: "transactions" } as const;
	const lines = (collection: keyof typeof collections) => new Lines(path.join(dir, collections[collection], `${collection}${extension}`));
	const files = { users: lines("users"), wallets: lines("wallets"), entries: lines("entries"), transactions: lines("transactions") };
	const userIds: string[] = [];
	const walletIds: string[] = [];
	const balance = new Float64Array(users);
	const version = new Uint32Array(users);
	// Each user signed up a millisecond after the one before (as people do: not all at once).
	const created: string[] = [];
	for (let u = 0; u < users; u++) {
		const id = crypto.randomUUID();
		userIds.push(id);
		created.push(at());
		walletIds.push(crypto.randomUUID());
		const heavy = u === 0;
		files.users.add({
			_id: id,
			firstName: heavy ? "Heavy" : "World",
			lastName: `User${u}`,
			email: heavy ? HEAVY_EMAIL : `world-${u}@example.com`,
			passwordHash: heavy ? heavyHash : otherHash,
			role: "user",
			emailVerifiedAt: created[u],
			createdAt: created[u],
			updatedAt: created[u],
		});
	}

	const move = (u: number, txId: string, direction: "credit" | "debit", deltaMinor: number, when: string) => {
		balance[u] += deltaMinor;
		version[u] += 1;
		files.entries.add({
			_id: `${walletIds[u]}:${version[u]}`,
			walletId: walletIds[u],
			seq: version[u],
			movement: `${txId}:${direction}`,
			deltaMinor,
			balanceAfterMinor: balance[u],
			at: when,
		});
	};
	// As made without an Idempotency-Key: neither the key nor the request's hash stored.
	const completed = (fields: object, amountMinor: number) => {
		const id = crypto.randomUUID();
		const [pending, processing, done] = [at(), at(), at()];
		return {
			id,
			done,
			doc: {
				_id: id,
				...fields,
				amountMinor,
				status: "Completed",
				currency: "USD",
				history: [
					{ status: "Pending", at: pending },
					{ status: "Processing", at: processing },
					{ status: "Completed", at: done },
				],
				createdAt: pending,
				updatedAt: done,
			},
		};
	};

	let heavyTransactions = 0;
	for (let u = 0; u < users; u++) {
		const tx = completed({ type: "TopUp", userId: userIds[u], parties: [userIds[u]] }, TOP_UP_MINOR);
		move(u, tx.id, "credit", TOP_UP_MINOR, tx.done);
		files.transactions.add(tx.doc);
		if (u === 0) heavyTransactions++;
	}
	const other = () => 1 + Math.floor(random() * (users - 1));
	for (let i = 0; i < transactions - users; i++) {
		// One transfer in ten has the heavy user as a party, sending and receiving in turn.
		let from = other();
		let to = other();
		if (i % 10 === 0) [from, to] = i % 20 === 0 ? [0, to] : [from, 0];
		if (from === to) to = to === users - 1 ? 1 : to + 1;
		const amountMinor = 1 + Math.floor(random() * 100);
		if (balance[from] < amountMinor) continue;
		const tx = completed({ type: "Transfer", fromUserId: userIds[from], toUserId: userIds[to], parties: [userIds[from], userIds[to]] }, amountMinor);
		move(from, tx.id, "debit", -amountMinor, tx.done);
		move(to, tx.id, "credit", amountMinor, tx.done);
		files.transactions.add(tx.doc);
		if (from === 0 || to === 0) heavyTransactions++;
	}
	const end = at();
	for (let u = 0; u < users; u++) {
		files.wallets.add({
			_id: walletIds[u],
			userId: userIds[u],
			balanceMinor: balance[u],
			version: version[u],
			currency: "USD",
			createdAt: created[u],
			updatedAt: end,
		});
	}
	const bytes = Object.values(files).reduce((sum, file) => sum + file.close(), 0);
	if (format === "export") {
		const manifest: Manifest = { version: 1, exportedAt: end, collections: {} };
		for (const [collection, service] of Object.entries(collections)) {
			manifest.collections[service] ??= {};
			manifest.collections[service][collection] = files[collection as keyof typeof collections].count;
		}
		fs.writeFileSync(path.join(dir, MANIFEST_FILE), `${JSON.stringify(manifest, null, 2)}\n`, { mode: 0o600 });
	}
	return { users, transactions, heavyTransactions, bytes, ms: Date.now() - started };
}
