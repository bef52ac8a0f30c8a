/**
 * Group commit for NeDB's append-only data files.
 *
 * NeDB persists every write with `fs.appendFile` (open, write, close: three
 * trips to the thread pool) inside its per-file executor, so each operation
 * on a collection, reads included, waits for the previous write's file to be
 * closed. AppendLog keeps the file open and takes the appends over: a
 * change's lines join a buffer, and once per turn of the event loop (a
 * setImmediate) one write carries everything buffered in that turn. NeDB's
 * executor moves on as soon as the change is in memory; the adapter answers
 * its caller only once the file has the change (`written()`), so whoever
 * acts on an answer acts on what survives a killed process: NeDB's own
 * promise (neither fsyncs, so a power cut may still lose the last writes).
 *
 * The write is synchronous, on the main thread, as the SQLite engine's are:
 * a 700-byte append into the page cache costs 3-5 us of the thread's CPU
 * here, and the same write through the thread pool (fs/promises) 26-32 us of
 * it (handing the request over and taking its answer back), plus a wait.
 *
 * Another operation may read a change still on its way to the file (as
 * MongoDB's default read concern "local" may read an unjournaled write); what
 * it then writes to the same file lands after it.
 *
 * A failed write (a full disk) fails every write waiting, and stays at the
 * head of the buffer: it is tried again, after a newline that cuts off
 * whatever part of it the file got (NeDB skips such a line at load), so the
 * file never misses a change that memory has. Compaction (NeDB rewrites the
 * file from memory and renames it over the old one) writes the whole memory,
 * and then has nothing left to append: it reopens the new file with an empty
 * buffer.
 */
import fs from "node:fs";
import type { FileHandle } from "node:fs/promises";
import fsp from "node:fs/promises";

/** The part of NeDB's Persistence this replaces (its typings leave it out). */
interface NedbPersistence {
	filename: string;
	inMemoryOnly: boolean;
	afterSerialization(line: string): string;
	persistNewStateAsync(docs: object[]): Promise<void>;
	persistCachedDatabaseAsync(): Promise<void>;
}

/** NeDB's document serializer (lib/model.js), the one its own appends use. */
const model: { serialize(doc: object): string } = require("@seald-io/nedb/lib/model");

/** After a failed write, the next try waits this long if nothing else asks for one. */
const RETRY_MS = 200;

interface Waiter {
	seq: number;
	resolve: () => void;
	reject: (err: unknown) => void;
}

export class AppendLog {
	private handle: FileHandle | null = null;
	/** Changes appended so far (each a sequence number), and how many of them the file has. */
	private appended = 0;
	private durable = 0;
	private buffered: string[] = [];
	private waiters: Waiter[] = [];
	/** The write of this turn of the event loop, scheduled. */
	private flushing: NodeJS.Immediate | null = null;
	/** A write failed part-way: the next one starts on a new line. */
	private cutOff = false;
	private retry: NodeJS.Timeout | null = null;
	/** File writes so far, and the changes they carried: how much the grouping saves. */
	writes = 0;
	changes = 0;
	/** The file's size when it was opened (after a compaction: its live documents), and the bytes appended since. */
	baseBytes = 0;
	appendedBytes = 0;

	private constructor(
		private readonly persistence: NedbPersistence,
		private readonly fileMode: number,
	) {}

	/** Takes over a loaded NeDB datastore's appends (after loadDatabaseAsync, before any write). */
	static async attach(datastore: unknown, fileMode = 0o600): Promise<AppendLog> {
		const persistence = (datastore as { persistence: NedbPersistence }).persistence;
		if (persistence.inMemoryOnly) throw new Error("AppendLog needs a file-backed datastore");
		const log = new AppendLog(persistence, fileMode);
		await log.open();
		const compact = persistence.persistCachedDatabaseAsync.bind(persistence);
		persistence.persistNewStateAsync = async docs => log.append(docs);
		persistence.persistCachedDatabaseAsync = () => log.compacting(compact);
		return log;
	}

	private async open(): Promise<void> {
		this.handle = await fsp.open(this.persistence.filename, "a", this.fileMode);
		this.baseBytes = (await this.handle.stat()).size;
		this.appendedBytes = 0;
	}

	/** Buffers the documents' new state, in the order NeDB applied the changes; the next write carries it. */
	private append(docs: object[]): void {
		if (docs.length === 0) return;
		let text = "";
		for (const doc of docs) text += `${this.persistence.afterSerialization(model.serialize(doc))}\n`;
		this.buffered.push(text);
		this.appended++;
		this.schedule();
	}

	/** Resolves once the file has every change appended so far; rejects if a write failed meanwhile. */
	written(): Promise<void> {
		const seq = this.appended;
		if (this.durable >= seq) return Promise.resolve();
		return new Promise((resolve, reject) => this.waiters.push({ seq, resolve, reject }));
	}

	/** One write a turn of the event loop: it carries everything buffered meanwhile. */
	private schedule(): void {
		if (this.flushing || this.buffered.length === 0 || !this.handle) return;
		this.flushing = setImmediate(() => {
			this.flushing = null;
			this.flush();
		});
	}

	private flush(): void {
		if (this.buffered.length === 0 || !this.handle) return;
		const upTo = this.appended;
		const count = this.buffered.length;
		const bytes = Buffer.from((this.cutOff ? "\n" : "") + this.buffered.join(""), "utf8");
		try {
			// A regular file takes a write whole unless it fails (a full disk); a short one goes on where it stopped.
			for (let done = 0; done < bytes.length; ) done += fs.writeSync(this.handle.fd, bytes, done);
		} catch (err) {
			// The batch stays at the head of the buffer; whoever waits is told now.
			this.cutOff = true;
			for (const waiter of this.waiters.splice(0)) waiter.reject(err);
			this.retry ??= setTimeout(() => {
				this.retry = null;
				this.schedule();
			}, RETRY_MS).unref();
			return;
		}
		this.writes++;
		this.changes += count;
		this.appendedBytes += bytes.length;
		this.cutOff = false;
		this.buffered.splice(0, count);
		this.advance(upTo);
	}

	private advance(seq: number): void {
		this.durable = Math.max(this.durable, seq);
		const done = this.waiters.filter(waiter => waiter.seq <= this.durable);
		this.waiters = this.waiters.filter(waiter => waiter.seq > this.durable);
		for (const waiter of done) waiter.resolve();
	}

	/**
	 * NeDB's compaction writes all of memory: once it is renamed in place, nothing buffered is left to append.
	 * If it fails, the old file is still whole (NeDB writes aside, then renames): it is reopened and the buffer goes on.
	 */
	private async compacting(compact: () => Promise<void>): Promise<void> {
		await this.closeHandle();
		try {
			await compact();
			this.buffered = [];
			this.cutOff = false;
			this.advance(this.appended);
		} finally {
			await this.open();
			this.schedule();
		}
	}

	private async closeHandle(): Promise<void> {
		if (this.retry) clearTimeout(this.retry);
		this.retry = null;
		if (this.flushing) clearImmediate(this.flushing);
		this.flushing = null;
		const handle = this.handle;
		this.handle = null;
		await handle?.close();
	}

	/** Writes what is buffered and closes the file (shutdown); rejects if the file could not take it. */
	async close(): Promise<void> {
		try {
			await this.written();
		} finally {
			await this.closeHandle();
		}
	}
}
