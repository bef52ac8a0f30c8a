/**
 * The wallet streams without a broker: the SSE wire form, what each event
 * becomes, the caps, the order of one wallet's movements, redeliveries, the
 * end of a session, heartbeats, shutdown, and a reader that does not keep up
 * (with fake responses, and with a real socket that is never read).
 */
import crypto from "node:crypto";
import { EventEmitter } from "node:events";
import http from "node:http";
import net, { type AddressInfo } from "node:net";
import type { EventPayload } from "../../contracts/events";
import type { WalletView } from "../../contracts/money";
import { loadConfig } from "../../lib/config";
import { publish } from "../../lib/events";
import type { Res } from "../../services/api/http";
import { toHttpError } from "../../services/api/http-errors";
import { MAX_UNREAD_BYTES, WalletStreams, eventText, isWalletStreamRequest, partiesOf } from "../../services/api/wallet-stream";

/** A response as the streams use it: what was written, and a socket that takes nothing while `stalled`. */
class FakeRes extends EventEmitter {
	status?: number;
	headers?: Record<string, string>;
	text = "";
	destroyed = false;
	finished = false;
	stalled = false;
	writableLength = 0;

	writeHead(status: number, headers: Record<string, string>) {
		this.status = status;
		this.headers = headers;
		return this;
	}
	write(chunk: string): boolean {
		this.text += chunk;
		if (this.stalled) this.writableLength += chunk.length;
		return !this.stalled;
	}
	end(chunk = "") {
		this.text += chunk;
		this.finished = true;
		setImmediate(() => this.emit("close"));
		return this;
	}
	destroy() {
		this.destroyed = true;
		setImmediate(() => this.emit("close"));
		return this;
	}
	/** The events written so far, as [event, data] (comments and retry lines apart). */
	events(): [string, any][] {
		return this.text
			.split("\n\n")
			.filter(block => block.includes("event: "))
			.map(block => {
				const fields = Object.fromEntries(block.split("\n").map(line => [line.slice(0, line.indexOf(":")), line.slice(line.indexOf(":") + 2)]));
				return [fields.event, JSON.parse(fields.data)];
			});
	}
}

const LIMITS = { perUser: 2, perNode: 3, heartbeatMs: 60_000 };
const HOUR = 3600_000;

const walletOf = (userId: string, balance = 0): WalletView => ({
	id: `wallet-${userId}`,
	userId,
	balance,
	currency: "EUR",
	createdAt: "2030-01-01T00:00:00.000Z",
	updatedAt: "2030-01-01T00:00:00.000Z",
});

function movement(userId: string, balanceMinor: number, extra: Partial<EventPayload<"wallet.credited">> = {}): EventPayload<"wallet.credited"> {
	return {
		eventId: crypto.randomUUID(),
		occurredAt: "2030-01-02T00:00:00.000Z",
		walletId: `wallet-${userId}`,
		userId,
		transactionId: "tx-1",
		direction: "credit",
		amountMinor: 100,
		balanceMinor,
		...extra,
	};
}

function transactionChange(extra: Partial<EventPayload<"transaction.created">>): EventPayload<"transaction.created"> {
	return {
		eventId: crypto.randomUUID(),
		occurredAt: "2030-01-02T00:00:00.000Z",
		transactionId: "tx-2",
		type: "Transfer",
		status: "Pending",
		amountMinor: 1550,
		currency: "EUR",
		fromUserId: "alice",
		toUserId: "bob",
		...extra,
	};
}

function harness(limits: Partial<typeof LIMITS & { maxUnreadBytes: number }> = {}) {
	const logger = { warn: jest.fn() };
	const counts: number[] = [];
	const streams = new WalletStreams({ ...LIMITS, ...limits, currency: "EUR", logger, counted: open => counts.push(open) });
	/** Opens a stream for a user and session; resolves once it started (or was refused). */
	const open = async (userId: string, opts: { sid?: string; expiresInMs?: number; wallet?: () => Promise<WalletView> } = {}) => {
		const res = new FakeRes();
		const session = { caller: { id: userId, sid: opts.sid ?? `${userId}-session` }, accessExpiresAt: Date.now() + (opts.expiresInMs ?? HOUR) };
		const served = streams.serve(res as unknown as Res, session, opts.wallet ?? (async () => walletOf(userId)));
		return { res, served };
	};
	return { streams, logger, counts, open };
}

afterEach(() => jest.useRealTimers());

describe("the wire", () => {
	it("an event is its id, its name and one line of JSON data, then a blank line", () => {
		expect(eventText({ id: "e1", event: "balance", data: { text: "two\nlines" } })).toBe('id: e1\nevent: balance\ndata: {"text":"two\\nlines"}\n\n');
	});

	it("the stream's route: GET, in any case, with an optional trailing slash and any query", () => {
		const req = (method: string, url: string) => ({ method, url }) as never;
		expect(["/api/v1/wallet/stream", "/API/V1/Wallet/Stream/", "/api/v1/wallet/stream?x=1"].map(url => isWalletStreamRequest(req("GET", url)))).toEqual([
			true,
			true,
			true,
		]);
		expect(
			[req("POST", "/api/v1/wallet/stream"), req("GET", "/api/v1/wallet/streams"), req("GET", "/api/v1/wallet/stream//")].map(isWalletStreamRequest),
		).toEqual([false, false, false]);
	});

	it("the parties of a transaction: the top-up's owner, or the transfer's sender and recipient", () => {
		expect(partiesOf(transactionChange({ type: "TopUp", userId: "carol", fromUserId: undefined, toUserId: undefined }))).toEqual(["carol"]);
		expect(partiesOf(transactionChange({}))).toEqual(["alice", "bob"]);
	});

	it("the stream's settings: 5 per user, 10,000 per node, a heartbeat every 15 s; each bounded", () => {
		expect(loadConfig({}).streams).toEqual({ perUser: 5, perNode: 10_000, heartbeatSec: 15 });
		expect(loadConfig({ STREAMS_PER_USER: "2", STREAMS_PER_NODE: "50", STREAM_HEARTBEAT_SEC: "5" }).streams).toEqual({
			perUser: 2,
			perNode: 50,
			heartbeatSec: 5,
		});
		expect(() => loadConfig({ STREAM_HEARTBEAT_SEC: "75" })).toThrow("STREAM_HEARTBEAT_SEC must be between 1 and 60, got 75");
		expect(() => loadConfig({ STREAMS_PER_USER: "0" })).toThrow("STREAMS_PER_USER must be between 1 and 1000");
		expect(() => loadConfig({ STREAMS_PER_NODE: "many" })).toThrow('STREAMS_PER_NODE must be an integer, got "many"');
	});
});

describe("what a stream gets", () => {
	it("its wallet first, then its own movements and transactions in major units, nothing of other users", async () => {
		const { streams, open } = harness();
		const alice = await open("alice");
		const bob = await open("bob");
		const carol = await open("carol");
		await Promise.all([alice.served, bob.served, carol.served]);
		expect([alice.res.status, alice.res.headers?.["Content-Type"]]).toEqual([200, "text/event-stream; charset=utf-8"]);

		streams.transactionChanged(transactionChange({ status: "Processing" }));
		streams.balanceChanged(movement("alice", 845, { direction: "debit", amountMinor: 1550 }));
		streams.balanceChanged(movement("bob", 1550, { amountMinor: 1550 }));
		streams.transactionChanged(transactionChange({ status: "Failed", reason: "Insufficient funds" }));

		expect(alice.res.events()).toEqual([
			["balance", walletOf("alice")],
			[
				"transaction",
				{
					id: "tx-2",
					type: "Transfer",
					status: "Processing",
					amount: 15.5,
					currency: "EUR",
					fromUserId: "alice",
					toUserId: "bob",
					updatedAt: "2030-01-02T00:00:00.000Z",
				},
			],
			[
				"balance",
				{
					id: "wallet-alice",
					userId: "alice",
					balance: 8.45,
					currency: "EUR",
					updatedAt: "2030-01-02T00:00:00.000Z",
					transactionId: "tx-1",
					direction: "debit",
					amount: 15.5,
				},
			],
			["transaction", expect.objectContaining({ status: "Failed", reason: "Insufficient funds" })],
		]);
		expect(bob.res.events().map(([event, data]) => [event, data.balance ?? data.status])).toEqual([
			["balance", 0],
			["transaction", "Processing"],
			["balance", 15.5],
			["transaction", "Failed"],
		]);
		expect(carol.res.events()).toEqual([["balance", walletOf("carol")]]);
	});

	it("an event delivered again (an outbox relay publishes under the same id) is sent once", async () => {
		const { streams, open } = harness();
		const alice = await open("alice");
		await alice.served;
		const change = transactionChange({ status: "Completed" });
		streams.transactionChanged(change);
		streams.transactionChanged({ ...change });
		expect(alice.res.events().map(([event]) => event)).toEqual(["balance", "transaction"]);
	});

	it("a wallet's movements that arrive out of order: an older version than one sent is not sent", async () => {
		const { streams, open } = harness();
		const alice = await open("alice");
		await alice.served;
		streams.balanceChanged(movement("alice", 300, { version: 3 }));
		streams.balanceChanged(movement("alice", 200, { version: 2 }));
		streams.balanceChanged(movement("alice", 400, { version: 4 }));
		// Without a version (a producer that does not send it), every movement is sent.
		streams.balanceChanged(movement("alice", 100));
		expect(alice.res.events().map(([, data]) => data.balance)).toEqual([0, 3, 4, 1]);
	});

	it("what arrives while the wallet is being read is sent right after it", async () => {
		const { streams, open } = harness();
		let answer!: (wallet: WalletView) => void;
		const alice = await open("alice", { wallet: () => new Promise(resolve => (answer = resolve)) });
		streams.balanceChanged(movement("alice", 500));
		expect(alice.res.text).toBe("");
		answer(walletOf("alice", 4));
		await alice.served;
		expect(alice.res.events().map(([, data]) => data.balance)).toEqual([4, 5]);
	});

	it("a heartbeat comment every interval to every started stream", async () => {
		jest.useFakeTimers();
		const { open } = harness({ heartbeatMs: 15_000 });
		const alice = await open("alice");
		await alice.served;
		jest.advanceTimersByTime(14_999);
		expect(alice.res.text).not.toContain(": heartbeat");
		jest.advanceTimersByTime(1);
		expect(alice.res.text.endsWith(": heartbeat\n\n")).toBe(true);
		jest.advanceTimersByTime(30_000);
		expect(alice.res.text.split(": heartbeat\n\n").length - 1).toBe(3);
	});
});

describe("bounds", () => {
	it("refuses over the user's cap and over the node's (429, Retry-After 10), counting streams still opening; the count is reported as it changes", async () => {
		const { streams, open, counts } = harness();
		const pending = () => new Promise<WalletView>(() => undefined);
		const alice = [await open("alice", { wallet: pending }), await open("alice", { wallet: pending })];
		const third = await open("alice");
		await expect(third.served).rejects.toMatchObject({ code: 429 });
		expect(toHttpError(await third.served.catch(err => err))).toEqual({
			status: 429,
			headers: { "Retry-After": "10" },
			body: { error: { status: 429, message: "At most 2 wallet streams may be open at once; close one first" } },
		});
		await open("bob", { wallet: pending });
		const full = await open("carol");
		await expect(full.served).rejects.toMatchObject({ code: 429, message: "Too many wallet streams on this server, try again later" });
		expect(streams.size).toBe(3);
		// A stream that closes frees its place.
		alice[0].res.destroy();
		await new Promise(resolve => setImmediate(resolve));
		expect(streams.size).toBe(2);
		await expect((await open("carol")).served).resolves.toBeUndefined();
		expect(counts).toEqual([1, 2, 3, 2, 3]);
	});

	it("a client that left before its stream was admitted (while it was being authenticated) takes no place", async () => {
		const { streams } = harness();
		const res = new FakeRes();
		res.destroyed = true;
		const readWallet = jest.fn(async () => walletOf("alice"));
		await streams.serve(res as unknown as Res, { caller: { id: "alice", sid: "s" }, accessExpiresAt: Date.now() + HOUR }, readWallet);
		expect([streams.size, readWallet.mock.calls.length, res.status]).toEqual([0, 0, undefined]);
	});

	it("a wallet that cannot be read: the error goes to the client, the place is freed", async () => {
		const { streams, open } = harness();
		const failing = await open("alice", { wallet: () => Promise.reject(Object.assign(new Error("down"), { code: 503 })) });
		await expect(failing.served).rejects.toThrow("down");
		expect([streams.size, failing.res.status]).toEqual([0, undefined]);
	});

	it("a reader that leaves more than MAX_UNREAD_BYTES unsent is dropped (and logged); one that keeps up is not", async () => {
		const { streams, open, logger } = harness();
		const [slow, fast] = [await open("alice"), await open("alice")];
		await Promise.all([slow.served, fast.served]);
		slow.res.stalled = true;
		let sent = 0;
		while (!slow.res.destroyed && sent < 10_000) {
			streams.balanceChanged(movement("alice", ++sent));
		}
		expect(slow.res.writableLength).toBeGreaterThan(MAX_UNREAD_BYTES);
		expect(slow.res.writableLength).toBeLessThan(MAX_UNREAD_BYTES + 1024);
		expect([fast.res.destroyed, fast.res.events().length]).toEqual([false, sent + 1]);
		expect(logger.warn).toHaveBeenCalledWith(expect.objectContaining({ userId: "alice" }), "wallet stream dropped: its reader does not keep up");
		await new Promise(resolve => setImmediate(resolve));
		expect(streams.size).toBe(1);
	});

	it("events piling up while the wallet is read are bounded alike", async () => {
		const { streams, open } = harness({ maxUnreadBytes: 2000 });
		const alice = await open("alice", { wallet: () => new Promise(() => undefined) });
		for (let i = 1; i <= 20; i++) streams.balanceChanged(movement("alice", i));
		expect(alice.res.destroyed).toBe(true);
	});

	it("with a real socket that is never read: the stream is dropped once the socket buffers are full, and nothing piles up", async () => {
		const { streams } = harness();
		const server = http.createServer((_req, res) => {
			void streams.serve(res, { caller: { id: "alice", sid: "s" }, accessExpiresAt: Date.now() + HOUR }, async () => walletOf("alice"));
		});
		await new Promise<void>(resolve => server.listen(0, "127.0.0.1", resolve));
		const client = net.connect((server.address() as AddressInfo).port, "127.0.0.1");
		client.pause();
		client.write("GET /api/v1/wallet/stream HTTP/1.1\r\nHost: x\r\n\r\n");
		try {
			while (streams.size === 0) await new Promise(resolve => setTimeout(resolve, 5));
			let sent = 0;
			// In batches, as events come: the kernel's buffers fill first, then the stream's.
			while (streams.size > 0 && sent < 200_000) {
				for (let i = 0; i < 500; i++) streams.balanceChanged(movement("alice", ++sent));
				await new Promise(resolve => setImmediate(resolve));
			}
			expect(streams.size).toBe(0);
			// The socket buffers took more than the stream's own limit before it was reached.
			expect(sent * 200).toBeGreaterThan(2 * MAX_UNREAD_BYTES);
		} finally {
			client.destroy();
			server.close();
		}
	});
});

describe("ends", () => {
	it("a revoked session's streams get an end event and end; others go on; one still opening is answered 401", async () => {
		const { streams, open } = harness({ perUser: 5, perNode: 10 });
		let answer!: (wallet: WalletView) => void;
		const [a, b, other] = [await open("alice", { sid: "s1" }), await open("alice", { sid: "s1" }), await open("bob", { sid: "s2" })];
		await Promise.all([a.served, b.served, other.served]);
		streams.endSessions(["s1", "unknown"]);
		for (const { res } of [a, b]) expect([res.finished, res.events().at(-1)]).toEqual([true, ["end", { reason: "session-revoked" }]]);
		expect(other.res.finished).toBe(false);

		const opening = await open("carol", { sid: "s3", wallet: () => new Promise(resolve => (answer = resolve)) });
		streams.endSessions(["s3"]);
		answer(walletOf("carol"));
		await expect(opening.served).rejects.toMatchObject({ code: 401 });
		expect(opening.res.text).toBe("");
	});

	it("when its access token expires, a stream ends (session-expired): the client reconnects with a fresh one", async () => {
		const { streams, open } = harness();
		const alice = await open("alice", { expiresInMs: 80 });
		await alice.served;
		await new Promise(resolve => setTimeout(resolve, 150));
		expect([alice.res.finished, alice.res.events().at(-1)]).toEqual([true, ["end", { reason: "session-expired" }]]);
		await new Promise(resolve => setImmediate(resolve));
		expect(streams.size).toBe(0);
	});

	it("shutdown: each stream gets a retry of 1-5 s and an end event, new ones 503; one that will not close is cut after 2 s", async () => {
		const { streams, open } = harness({ perUser: 10, perNode: 10 });
		const all = await Promise.all(Array.from({ length: 6 }, () => open("alice")));
		await Promise.all(all.map(s => s.served));
		// A response whose socket never reports closed after end() (a client that stopped reading).
		const stuck = all[5].res;
		stuck.end = function (this: FakeRes, chunk = "") {
			this.text += chunk;
			this.finished = true;
			return this;
		};
		const started = Date.now();
		await streams.closeAll();
		expect(Date.now() - started).toBeGreaterThanOrEqual(1900);
		const retries = all.map(({ res }) => Number(/retry: (\d+)\n\n/.exec(res.text)?.[1]));
		expect(retries.every(ms => ms >= 1000 && ms <= 5000)).toBe(true);
		expect(all.map(({ res }) => res.events().at(-1))).toEqual(Array(6).fill(["end", { reason: "shutdown" }]));
		expect(stuck.destroyed).toBe(true);
		expect(streams.size).toBe(0);
		await expect((await open("bob")).served).rejects.toMatchObject({ code: 503 });
	});
});

describe("the contract the streams read", () => {
	it("wallet movements may carry the wallet's version (optional, a positive integer)", async () => {
		const sent: unknown[] = [];
		const emitter = { emit: (_name: string, payload: unknown) => void sent.push(payload) };
		const { eventId: _e, occurredAt: _o, ...body } = movement("alice", 100);
		await publish(emitter, "wallet.credited", { ...body, version: 7 });
		await publish(emitter, "wallet.credited", body);
		await expect(publish(emitter, "wallet.credited", { ...body, version: 0 })).rejects.toThrow(/version/);
		expect(sent).toHaveLength(2);
	});
});
