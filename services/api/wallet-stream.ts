/**
 * GET /api/v1/wallet/stream: a signed-in user's wallet as server-sent
 * events, on whichever gateway node holds the connection.
 *
 * A stream is a connection, not a call, so it is served beside
 * moleculer-web's router (api.service.ts's httpHandler): moleculer-web runs
 * each request it routes inside one `api.rest` action call, and Moleculer's
 * bulkhead lets 64 of those run at once on a node, so 64 open streams would
 * queue every other request. The stream still gets what every request gets:
 * the request id, the security headers, the starting gate, CORS for
 * ALLOWED_ORIGINS, the same authentication (Bearer, cookie, silent refresh)
 * and, until it starts, errors in the SPEC format.
 *
 * What it sends, each event with an `id:` (the event's own id: the same on
 * every stream that gets it):
 *   balance      first the wallet as GET /wallet/user shows it; then, after each
 *                movement, the new balance with the transaction, direction and amount
 *   transaction  each status change of a transaction the user is a party to
 *   end          why the server ends the stream: session-revoked, session-expired, shutdown
 * and a `: heartbeat` comment every STREAM_HEARTBEAT_SEC. Nothing is
 * replayed: a reconnect, with or without Last-Event-ID, starts with the
 * current wallet.
 *
 * The changes come from the wallet's and the transactions' events, which
 * every gateway node hears (api.service.ts): an event that arrives again is
 * sent once, and a wallet movement older than one already sent (its
 * `version`) is not sent. Bounded: STREAMS_PER_USER per user and
 * STREAMS_PER_NODE on this node (429 beyond); a reader that leaves more than
 * MAX_UNREAD_BYTES unsent is dropped; a stream ends with its session
 * (revocation, access-token expiry) and on shutdown, after a `retry:` spread
 * over a few seconds so that clients do not all come back at once.
 */
import crypto from "node:crypto";
import type { CallingOptions, Logger } from "moleculer";
import type { EventPayload } from "../../contracts/events";
import type { Direction, TransactionView, WalletView } from "../../contracts/money";
import type { Caller } from "../../contracts/users";
import { tooManyRequests, unauthorized, unavailable } from "../../lib/errors";
import { toMajor } from "../../lib/money";
import type { Req, Res } from "./http";
import { WALLET_STREAM_PATH } from "./routes";
import type { AuthenticatedSession } from "./session-auth";

/** Bytes a stream may hold for a reader that does not keep up (beyond what the sockets hold): past it, the reader is dropped. */
export const MAX_UNREAD_BYTES = 32 * 1024;
/** The Retry-After of a 429: a stream frees its place only when one closes. */
export const STREAM_RETRY_AFTER_SEC = 10;
/** On shutdown clients are told to come back after 1 to 5 s (`retry:`), spread so that they do not all come back at once. */
const SHUTDOWN_RETRY_MS = { min: 1000, spread: 4000 };
/** How long a shutdown waits for the last bytes of its streams to leave before it cuts them. */
const SHUTDOWN_GRACE_MS = 2000;
/** Event ids remembered to drop a redelivery (an outbox relay publishes a history again under the same ids). */
const REMEMBERED_EVENT_IDS = 10_000;

const HEARTBEAT = ": heartbeat\n\n";
const STREAM_HEADERS = {
	"Content-Type": "text/event-stream; charset=utf-8",
	// nginx, and other proxies that honour it, pass each event on at once.
	"X-Accel-Buffering": "no",
};

/** Wallet streams open (or opening) on this node: against STREAMS_PER_NODE. */
export const OPEN_STREAMS_METRIC = {
	type: "gauge",
	name: "mint.wallet.streams.open",
	description: "Wallet streams (GET /api/v1/wallet/stream) open on this gateway node",
} as const;

/** Is this request for the stream (any case, an optional trailing slash, as moleculer-web matches its aliases)? */
export function isWalletStreamRequest(req: Req): boolean {
	if (req.method !== "GET") return false;
	const path = (req.url ?? "").split("?")[0].toLowerCase();
	return path === WALLET_STREAM_PATH || path === `${WALLET_STREAM_PATH}/`;
}

export type EndReason = "session-revoked" | "session-expired" | "shutdown";

/** One server-sent event: its id, its name and its JSON data. */
export interface StreamEvent {
	id: string;
	event: "balance" | "transaction" | "end";
	data: object;
}

/** A `balance` event after a movement: the wallet's new balance, and the movement that made it. */
export interface BalanceChange {
	id: string;
	userId: string;
	balance: number;
	currency: string;
	/** When the movement happened. */
	updatedAt: string;
	transactionId: string;
	direction: Direction;
	amount: number;
}

/** A `transaction` event: the transaction as GET /transactions/:id shows it, without createdAt; updatedAt is when it took this status. */
export type TransactionChange = Omit<TransactionView, "createdAt">;

type WalletMovement = EventPayload<"wallet.credited">;
type TransactionEvent = EventPayload<"transaction.created">;

/** The SSE wire form: JSON data never holds a line break, so one `data:` line. */
export const eventText = ({ id, event, data }: StreamEvent): string => `id: ${id}\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`;

export const walletEvent = (wallet: WalletView): StreamEvent => ({ id: crypto.randomUUID(), event: "balance", data: wallet });

export function balanceChangeEvent(movement: WalletMovement, currency: string): StreamEvent {
	const data: BalanceChange = {
		id: movement.walletId,
		userId: movement.userId,
		balance: toMajor(movement.balanceMinor),
		currency,
		updatedAt: movement.occurredAt,
		transactionId: movement.transactionId,
		direction: movement.direction,
		amount: toMajor(movement.amountMinor),
	};
	return { id: movement.eventId, event: "balance", data };
}

export function transactionChangeEvent(change: TransactionEvent): StreamEvent {
	const data: TransactionChange = {
		id: change.transactionId,
		type: change.type,
		status: change.status,
		amount: toMajor(change.amountMinor),
		currency: change.currency,
		...(change.userId ? { userId: change.userId } : {}),
		...(change.fromUserId ? { fromUserId: change.fromUserId } : {}),
		...(change.toUserId ? { toUserId: change.toUserId } : {}),
		...(change.reason ? { reason: change.reason } : {}),
		updatedAt: change.occurredAt,
	};
	return { id: change.eventId, event: "transaction", data };
}

/** Everyone a transaction concerns: the top-up's owner, or the transfer's sender and recipient. */
export const partiesOf = (change: TransactionEvent): string[] =>
	[...new Set([change.userId, change.fromUserId, change.toUserId])].filter((id): id is string => typeof id === "string");

export interface WalletStreamsOptions {
	perUser: number;
	perNode: number;
	heartbeatMs: number;
	maxUnreadBytes?: number;
	/** The deployment's currency (wallet movements do not carry it). */
	currency: string;
	logger: Pick<Logger, "warn">;
	/** Told how many streams are open (or opening) whenever that changes: the gauge operators watch. */
	counted?: (open: number) => void;
}

/** One open (or opening) stream. */
class WalletStream {
	/** Until the wallet has been read: what arrived meanwhile, sent after it. */
	private early: string[] | undefined = [];
	private earlyBytes = 0;
	/** The last wallet version sent (movements carry it): an older one arriving late is not sent. */
	private version = 0;
	private endedBy?: EndReason | "client";
	private expiry?: NodeJS.Timeout;
	private markClosed!: () => void;
	/** Resolves when the connection has closed. */
	readonly whenClosed = new Promise<void>(resolve => (this.markClosed = resolve));

	constructor(
		readonly caller: Caller,
		private readonly res: Res,
		private readonly maxUnreadBytes: number,
		private readonly onDropped: (stream: WalletStream) => void,
	) {}

	get ended(): boolean {
		return this.endedBy !== undefined;
	}

	/** Ends the stream when its access token expires (the client reconnects with a fresh one). */
	expireAt(atMs: number): void {
		this.expiry = setTimeout(() => this.end("session-expired"), Math.max(0, atMs - Date.now()));
		this.expiry.unref();
	}

	/** The stream begins: the headers, the wallet, then what arrived while it was read. Refused if its session ended meanwhile. */
	start(wallet: WalletView): void {
		if (this.endedBy === "session-revoked" || this.endedBy === "session-expired") throw unauthorized();
		if (this.endedBy === "shutdown") throw unavailable("Mint is shutting down, try again shortly");
		if (this.endedBy === "client") return;
		const early = this.early ?? [];
		this.early = undefined;
		this.res.writeHead(200, STREAM_HEADERS);
		this.write(eventText(walletEvent(wallet)) + early.join(""));
	}

	/** Sends an event (a wallet's movement with its version: only if newer than the last one sent). */
	send(event: StreamEvent, version?: number): void {
		if (this.ended) return;
		if (version !== undefined) {
			if (version <= this.version) return;
			this.version = version;
		}
		const text = eventText(event);
		if (!this.early) {
			this.write(text);
			return;
		}
		this.early.push(text);
		this.earlyBytes += text.length;
		if (this.earlyBytes > this.maxUnreadBytes) this.drop();
	}

	heartbeat(): void {
		if (!this.ended && !this.early) this.write(HEARTBEAT);
	}

	/** The server ends the stream: an `end` event saying why (and on shutdown when to come back), then the end of the answer. */
	end(reason: EndReason, retryMs?: number): void {
		if (this.ended) return;
		this.endedBy = reason;
		clearTimeout(this.expiry);
		// Not started yet: start() answers with an error instead.
		if (this.early) return;
		const retry = retryMs === undefined ? "" : `retry: ${retryMs}\n\n`;
		this.res.end(retry + eventText({ id: crypto.randomUUID(), event: "end", data: { reason } }));
	}

	/** The connection closed (the client left, or the answer ended). */
	closed(): void {
		this.endedBy ??= "client";
		clearTimeout(this.expiry);
		this.markClosed();
	}

	/** Closes the connection now, whatever it still had to send. */
	cut(): void {
		this.endedBy ??= "client";
		this.res.destroy();
	}

	private write(text: string): void {
		if (this.res.destroyed) return;
		this.res.write(text);
		// What the socket did not take yet: a reader who keeps up leaves next to nothing here.
		if (this.res.writableLength > this.maxUnreadBytes) this.drop();
	}

	private drop(): void {
		this.onDropped(this);
		this.cut();
	}
}

/**
 * This node's streams: who holds them, their caps, heartbeats and the
 * events they get. A broker-free part of the gateway (unit-tested with fake responses).
 */
export class WalletStreams {
	private readonly all = new Set<WalletStream>();
	private readonly byUser = new Map<string, Set<WalletStream>>();
	private readonly bySession = new Map<string, Set<WalletStream>>();
	private readonly delivered = new Set<string>();
	private heartbeats?: NodeJS.Timeout;
	private closing = false;

	private readonly maxUnreadBytes: number;

	constructor(private readonly opts: WalletStreamsOptions) {
		this.maxUnreadBytes = opts.maxUnreadBytes ?? MAX_UNREAD_BYTES;
	}

	get size(): number {
		return this.all.size;
	}

	/**
	 * Serves one stream: takes its place (429 over a cap, 503 while the node
	 * stops), reads the wallet, then starts it; it stays registered until its
	 * connection closes. Throws what the client must be answered instead.
	 */
	async serve(res: Res, session: AuthenticatedSession, readWallet: () => Promise<WalletView>): Promise<void> {
		// The client left while it was being authenticated: its connection's close has passed, nothing to hold.
		if (res.destroyed) return;
		const stream = this.admit(res, session);
		let wallet: WalletView;
		try {
			wallet = await readWallet();
		} catch (err) {
			this.remove(stream);
			throw err;
		}
		stream.start(wallet);
	}

	/** A wallet moved (wallet.credited / wallet.debited): its owner's streams get the new balance. */
	balanceChanged(movement: WalletMovement): void {
		if (!this.firstDelivery(movement.eventId)) return;
		const event = balanceChangeEvent(movement, this.opts.currency);
		for (const stream of this.byUser.get(movement.userId) ?? []) stream.send(event, movement.version);
	}

	/** A transaction changed status (transaction.*): every party's streams get it. */
	transactionChanged(change: TransactionEvent): void {
		if (!this.firstDelivery(change.eventId)) return;
		const event = transactionChangeEvent(change);
		for (const userId of partiesOf(change)) for (const stream of this.byUser.get(userId) ?? []) stream.send(event);
	}

	/** Sessions revoked (logout, logout-all, a password reset, a reused refresh token): their streams end. */
	endSessions(sids: string[]): void {
		for (const sid of sids) for (const stream of [...(this.bySession.get(sid) ?? [])]) stream.end("session-revoked");
	}

	/** Shutdown: no new stream; every open one is told when to come back and ended; resolves once they are gone (cut after a grace period). */
	async closeAll(): Promise<void> {
		this.closing = true;
		const open = [...this.all];
		for (const stream of open) stream.end("shutdown", SHUTDOWN_RETRY_MS.min + crypto.randomInt(SHUTDOWN_RETRY_MS.spread));
		const cutTheRest = setTimeout(() => {
			for (const stream of this.all) stream.cut();
		}, SHUTDOWN_GRACE_MS);
		await Promise.all(open.map(stream => stream.whenClosed));
		clearTimeout(cutTheRest);
		this.stopHeartbeats();
	}

	/** Takes a place for the stream, or refuses: 503 while the node stops, 429 over the user's or the node's cap. */
	private admit(res: Res, session: AuthenticatedSession): WalletStream {
		const { caller } = session;
		if (this.closing) throw unavailable("Mint is shutting down, try again shortly");
		if ((this.byUser.get(caller.id)?.size ?? 0) >= this.opts.perUser) {
			throw tooManyRequests(STREAM_RETRY_AFTER_SEC, `At most ${this.opts.perUser} wallet streams may be open at once; close one first`);
		}
		if (this.all.size >= this.opts.perNode) throw tooManyRequests(STREAM_RETRY_AFTER_SEC, "Too many wallet streams on this server, try again later");

		const stream = new WalletStream(caller, res, this.maxUnreadBytes, dropped => this.dropped(dropped));
		this.all.add(stream);
		this.opts.counted?.(this.all.size);
		addTo(this.byUser, caller.id, stream);
		addTo(this.bySession, caller.sid, stream);
		stream.expireAt(session.accessExpiresAt);
		res.once("close", () => this.remove(stream));
		this.startHeartbeats();
		return stream;
	}

	private remove(stream: WalletStream): void {
		stream.closed();
		if (!this.all.delete(stream)) return;
		this.opts.counted?.(this.all.size);
		removeFrom(this.byUser, stream.caller.id, stream);
		removeFrom(this.bySession, stream.caller.sid, stream);
		if (this.all.size === 0) this.stopHeartbeats();
	}

	private dropped(stream: WalletStream): void {
		this.opts.logger.warn({ userId: stream.caller.id, maxUnreadBytes: this.maxUnreadBytes }, "wallet stream dropped: its reader does not keep up");
	}

	/** An event is delivered once, however often it arrives (a relay publishes again under the same id). */
	private firstDelivery(eventId: string): boolean {
		if (this.delivered.has(eventId)) return false;
		this.delivered.add(eventId);
		if (this.delivered.size > REMEMBERED_EVENT_IDS) this.delivered.delete(this.delivered.values().next().value as string);
		return true;
	}

	private startHeartbeats(): void {
		if (this.heartbeats) return;
		this.heartbeats = setInterval(() => {
			for (const stream of this.all) stream.heartbeat();
		}, this.opts.heartbeatMs);
		this.heartbeats.unref();
	}

	private stopHeartbeats(): void {
		clearInterval(this.heartbeats);
		this.heartbeats = undefined;
	}
}

function addTo<K, V>(index: Map<K, Set<V>>, key: K, value: V): void {
	const set = index.get(key);
	if (set) set.add(value);
	else index.set(key, new Set([value]));
}

function removeFrom<K, V>(index: Map<K, Set<V>>, key: K, value: V): void {
	const set = index.get(key);
	if (!set) return;
	set.delete(value);
	if (set.size === 0) index.delete(key);
}

/** The call options of the request being served (its request id, the caller's trace), for the calls a stream makes. */
export type StreamCallOptions = Pick<CallingOptions, "requestID" | "parentSpan">;
