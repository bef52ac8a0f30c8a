/**
 * GET /api/v1/wallet/stream on an embedded Mint: what a stream sends (the
 * wallet, then each movement and each transaction's status changes, in
 * order, to the parties only), how it ends (logout, logout-all, shutdown),
 * and its bounds (per user, per node, clients that come and go).
 */
import net, { type AddressInfo } from "node:net";
import { cookieHeader, login, newPerson, signup, type Person, type Session } from "../helpers/http";
import { startTestMint, waitFor, type TestMint } from "../helpers/mint";
import { topUp, transfer } from "../helpers/money";
import { openStream, type SseStream } from "../helpers/sse";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const STREAMS_PER_NODE = 12;
/** A web client served from another origin (ALLOWED_ORIGINS). */
const APP_ORIGIN = "https://app.example.com";

let mint: TestMint;
let port: number;
let stopped = false;
/** Every stream a test opened: closed after it. */
const opened: SseStream[] = [];

beforeAll(async () => {
	mint = await startTestMint({ STREAMS_PER_NODE: String(STREAMS_PER_NODE), STREAM_HEARTBEAT_SEC: "1", ALLOWED_ORIGINS: APP_ORIGIN });
	port = (mint.server.address() as AddressInfo).port;
});
afterEach(async () => {
	for (const stream of opened.splice(0)) stream.close();
	if (!stopped) await waitFor(() => openOnNode() === 0);
});
afterAll(async () => {
	if (!stopped) await mint.stop();
});

const openOnNode = (): number => (mint.broker.getLocalService("api") as unknown as { walletStreams: { size: number } }).walletStreams.size;

async function streamOf(headers: Record<string, string>): Promise<SseStream> {
	const stream = await openStream(port, { headers });
	opened.push(stream);
	return stream;
}
const cookieStream = (session: Session) => streamOf({ Cookie: session.cookie });

/** A stream that has sent its first event (the wallet). */
async function liveStream(session: Session): Promise<SseStream> {
	const stream = await cookieStream(session);
	expect(stream.status).toBe(200);
	await stream.until(s => s.events.length >= 1);
	return stream;
}

/** The events after the first, as [event, what matters of it]. */
const changes = (stream: SseStream) =>
	stream
		.named()
		.slice(1)
		.map(([event, data]) =>
			event === "balance" ? [event, data.balance, data.direction] : event === "transaction" ? [event, data.type, data.status] : [event, data],
		);

describe("opening a stream", () => {
	it("starts with the wallet as GET /wallet/user shows it, with the stream's headers, the request id and the security headers", async () => {
		const alice = await signup(mint);
		const wallet = (await mint.http.get("/api/v1/wallet/user").set("Cookie", alice.cookie)).body;
		const stream = await streamOf({ Cookie: alice.cookie, "X-Request-Id": "stream-test-1" });
		expect([stream.status, stream.headers["content-type"], stream.headers["cache-control"], stream.headers["x-request-id"]]).toEqual([
			200,
			"text/event-stream; charset=utf-8",
			"no-store",
			"stream-test-1",
		]);
		expect([stream.headers["x-content-type-options"], stream.headers["x-frame-options"], stream.headers["x-accel-buffering"]]).toEqual([
			"nosniff",
			"DENY",
			"no",
		]);
		const [first] = await stream.until(s => s.events.length >= 1 && s.events);
		expect(first).toEqual({ id: expect.stringMatching(UUID), event: "balance", data: wallet, at: expect.any(Number) });
	});

	it("authenticates like every route: Bearer, cookie, or the refresh cookie alone (a silent refresh, with its new cookies)", async () => {
		const alice = await signup(mint);
		const bearer = await streamOf({ Authorization: `Bearer ${alice.access}` });
		const refreshed = await streamOf({ Cookie: cookieHeader({ refresh: alice.refresh }) });
		for (const stream of [bearer, refreshed]) {
			expect(stream.status).toBe(200);
			expect((await stream.until(s => s.events[0])).data.userId).toBe(alice.user.id);
		}
		const cookies = (refreshed.headers["set-cookie"] ?? []).map(c => c.split("=")[0]);
		expect(cookies.sort()).toEqual(["access.token", "refresh.token"]);
	});

	it("a page on an ALLOWED_ORIGINS origin may open it with credentials (EventSource withCredentials: CORS headers); other origins get none", async () => {
		const alice = await signup(mint);
		const allowed = await streamOf({ Cookie: alice.cookie, Origin: APP_ORIGIN });
		expect([allowed.status, allowed.headers["access-control-allow-origin"], allowed.headers["access-control-allow-credentials"]]).toEqual([
			200,
			APP_ORIGIN,
			"true",
		]);
		const other = await streamOf({ Cookie: alice.cookie, Origin: "https://evil.example" });
		expect([other.status, other.headers["access-control-allow-origin"]]).toEqual([200, undefined]);
		const preflight = await mint.http
			.options("/api/v1/wallet/stream")
			.set("Origin", APP_ORIGIN)
			.set("Access-Control-Request-Method", "GET")
			.set("Access-Control-Request-Headers", "Authorization");
		expect([preflight.status, preflight.headers["access-control-allow-origin"], preflight.headers["access-control-allow-headers"]]).toEqual([
			204,
			APP_ORIGIN,
			expect.stringContaining("Authorization"),
		]);
	});

	it("refuses without a session (401), before the node has started or while it stops (503), in the SPEC format; other paths and methods are not the stream", async () => {
		const anonymous = await streamOf({});
		expect([anonymous.status, anonymous.body, anonymous.headers["x-request-id"]]).toEqual([
			401,
			{ error: { message: "Not authenticated", status: 401 } },
			expect.any(String),
		]);
		const stale = await streamOf({ Authorization: "Bearer not.a.token" });
		expect([stale.status, stale.body]).toEqual([401, { error: { message: "Not authenticated", status: 401 } }]);

		const alice = await signup(mint);
		const broker = mint.broker as unknown as { started: boolean; stopping: boolean };
		broker.started = false;
		try {
			const starting = await cookieStream(alice);
			expect([starting.status, starting.headers["retry-after"], starting.body]).toEqual([
				503,
				"2",
				{ error: { message: "Mint is starting, try again shortly", status: 503 } },
			]);
		} finally {
			broker.started = true;
		}
		broker.stopping = true;
		try {
			const stopping = await cookieStream(alice);
			expect([stopping.status, stopping.headers["retry-after"], stopping.body]).toEqual([
				503,
				"5",
				{ error: { message: "Mint is shutting down, try again shortly", status: 503 } },
			]);
		} finally {
			broker.stopping = false;
		}
		// The same path in another case and with a trailing slash is the stream; POST is not (404, as for any unknown route).
		const otherCase = await openStream(port, { path: "/API/V1/Wallet/Stream/?x=1", headers: { Cookie: alice.cookie } });
		opened.push(otherCase);
		expect(otherCase.status).toBe(200);
		const post = await mint.http.post("/api/v1/wallet/stream").set("Cookie", alice.cookie).send({});
		expect([post.status, post.body]).toEqual([404, { error: { message: "Not found", status: 404 } }]);
	});
});

describe("what a stream sends", () => {
	it("a top-up and a transfer show on both parties' streams, in order, with the right balances; a third user's stream sees nothing", async () => {
		const [alice, bob, carol] = [await signup(mint), await signup(mint), await signup(mint)];
		const [aliceStream, bobStream, carolStream] = [await liveStream(alice), await liveStream(bob), await liveStream(carol)];

		const topped = await topUp(mint, alice, 40);
		expect(topped.status).toBe(201);
		const sent = await transfer(mint, alice, 15.5, bob.user.id);
		expect(sent.status).toBe(201);
		const completed = (id: string) => (s: SseStream) => s.events.some(e => e.event === "transaction" && e.data.id === id && e.data.status === "Completed");
		await aliceStream.until(completed(sent.body.id));
		await bobStream.until(completed(sent.body.id));

		expect(changes(aliceStream)).toEqual([
			["transaction", "TopUp", "Pending"],
			["transaction", "TopUp", "Processing"],
			["balance", 40, "credit"],
			["transaction", "TopUp", "Completed"],
			["transaction", "Transfer", "Pending"],
			["transaction", "Transfer", "Processing"],
			["balance", 24.5, "debit"],
			["transaction", "Transfer", "Completed"],
		]);
		expect(changes(bobStream)).toEqual([
			["transaction", "Transfer", "Pending"],
			["transaction", "Transfer", "Processing"],
			["balance", 15.5, "credit"],
			["transaction", "Transfer", "Completed"],
		]);

		// The events in full: the wallet's new balance with its movement, the transaction as GET /transactions/:id shows it.
		const bobBalance = bobStream.events.find(e => e.event === "balance" && e.data.transactionId === sent.body.id);
		expect(bobBalance?.data).toEqual({
			id: bobStream.events[0].data.id,
			userId: bob.user.id,
			balance: 15.5,
			currency: "USD",
			updatedAt: expect.any(String),
			transactionId: sent.body.id,
			direction: "credit",
			amount: 15.5,
		});
		const { createdAt: _createdAt, ...transaction } = sent.body;
		expect(bobStream.events.at(-1)?.data).toEqual(transaction);
		// Every event has an id; an event both parties get has the same id on both streams.
		const ids = aliceStream.events.map(e => e.id);
		expect(ids.every(id => UUID.test(String(id)))).toBe(true);
		expect(new Set(ids).size).toBe(ids.length);
		expect(bobStream.events.at(-1)?.id).toBe(aliceStream.events.at(-1)?.id);

		// Carol's stream: her own wallet, and heartbeats, nothing of Alice's or Bob's.
		await carolStream.until(s => s.comments.length >= 1, 3000);
		expect(carolStream.named()).toEqual([["balance", expect.objectContaining({ userId: carol.user.id, balance: 0 })]]);
		expect(carolStream.comments[0]).toBe("heartbeat");
	});

	it("a reconnect, with Last-Event-ID, starts with the current wallet and replays nothing", async () => {
		const alice = await signup(mint);
		const first = await liveStream(alice);
		await topUp(mint, alice, 12.5);
		const last = await first.until(s => s.events.find(e => e.event === "transaction" && e.data.status === "Completed"));
		first.close();

		const again = await streamOf({ Cookie: alice.cookie, "Last-Event-ID": String(last.id) });
		await again.until(s => s.events.length >= 1);
		await new Promise(r => setTimeout(r, 300));
		expect(again.named()).toEqual([["balance", expect.objectContaining({ balance: 12.5 })]]);
	});
});

describe("how a stream ends", () => {
	/** Alice signed up (session 1) and logged in again (session 2). */
	async function twoSessions(): Promise<{ person: Person; first: Session; second: Session }> {
		const person = newPerson();
		const first = await signup(mint, person);
		return { person, first, second: await login(mint, person) };
	}

	it("a logout ends that session's streams (an end event, then the end of the answer) and only them", async () => {
		const { first, second } = await twoSessions();
		const [a, b, other] = [await liveStream(first), await liveStream(first), await liveStream(second)];
		expect((await mint.http.post("/api/v1/auth/logout").set("Cookie", first.cookie)).status).toBe(204);
		for (const stream of [a, b]) {
			expect(await stream.ended).toBe(true);
			expect(stream.named().at(-1)).toEqual(["end", { reason: "session-revoked" }]);
		}
		// The other session's stream goes on, and the ended one cannot come back.
		await topUp(mint, second, 3);
		await other.until(s => s.events.some(e => e.event === "balance" && e.data.balance === 3));
		expect((await cookieStream(first)).status).toBe(401);
	});

	it("logout-all ends every session's streams", async () => {
		const { first, second } = await twoSessions();
		const streams = [await liveStream(first), await liveStream(second)];
		expect((await mint.http.post("/api/v1/auth/logout-all").set("Cookie", second.cookie)).status).toBe(204);
		for (const stream of streams) {
			expect(await stream.ended).toBe(true);
			expect(stream.named().at(-1)).toEqual(["end", { reason: "session-revoked" }]);
		}
	});
});

describe("bounds", () => {
	it(`at most 5 streams per user and ${STREAMS_PER_NODE} per node: 429 with Retry-After in the SPEC format; a closed stream frees its place`, async () => {
		const [alice, bob, carol] = [await signup(mint), await signup(mint), await signup(mint)];
		const alices = await Promise.all(Array.from({ length: 5 }, () => liveStream(alice)));
		const sixth = await cookieStream(alice);
		expect([sixth.status, sixth.headers["retry-after"], sixth.body]).toEqual([
			429,
			"10",
			{ error: { message: "At most 5 wallet streams may be open at once; close one first", status: 429 } },
		]);
		alices[0].close();
		await waitFor(() => openOnNode() === 4);
		expect((await liveStream(alice)).status).toBe(200);

		await Promise.all([...Array.from({ length: 5 }, () => liveStream(bob)), liveStream(carol), liveStream(carol)]);
		expect(openOnNode()).toBe(STREAMS_PER_NODE);
		const gauge = mint.broker.metrics.getMetric("mint.wallet.streams.open")?.snapshot() as { value: number }[];
		expect(gauge.map(item => item.value)).toEqual([STREAMS_PER_NODE]);
		const full = await cookieStream(carol);
		expect([full.status, full.headers["retry-after"], full.body]).toEqual([
			429,
			"10",
			{ error: { message: "Too many wallet streams on this server, try again later", status: 429 } },
		]);
	});

	it("clients that leave at any moment (during authentication, before the answer, mid-stream) free their places, and the node serves on", async () => {
		const alice = await signup(mint);
		/** A request on a raw socket, cut `afterMs` after it was sent. */
		const cutAfter = (headers: string, afterMs: number) =>
			new Promise<void>(resolve => {
				const socket = net.connect(port, "127.0.0.1", () => {
					socket.write(`GET /api/v1/wallet/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n${headers}\r\n`);
					setTimeout(() => socket.destroy(), afterMs);
				});
				socket.on("close", () => resolve());
				socket.on("error", () => undefined);
			});
		// 250 connections: cut during a silent refresh (the refresh cookie alone) or the wallet's read, after the head, after the first event.
		for (let round = 0; round < 50; round++) {
			const attempts = [0, 1, 2, 3, 4].map(async stage => {
				if (stage <= 1) return cutAfter(`Cookie: ${cookieHeader({ refresh: alice.refresh })}\r\n`, stage * 3);
				if (stage === 2) return cutAfter(`Cookie: ${alice.cookie}\r\n`, 1);
				const opened = await openStream(port, { headers: { Cookie: alice.cookie } });
				if (stage === 4 && opened.status === 200) await opened.until(s => s.events.length >= 1).catch(() => undefined);
				opened.close();
			});
			await Promise.all(attempts);
		}
		await waitFor(() => openOnNode() === 0, 5000);
		const stream = await liveStream(alice);
		expect(stream.named()).toEqual([["balance", expect.objectContaining({ userId: alice.user.id })]]);
		expect((await mint.http.get("/api/v1/health")).status).toBe(200);
	});
});

describe("shutdown", () => {
	it("every stream is told when to come back (retry: 1-5 s) and ended, and the node stops", async () => {
		const [alice, bob] = [await signup(mint), await signup(mint)];
		const streams = [await liveStream(alice), await liveStream(alice), await liveStream(bob)];
		const started = performance.now();
		stopped = true;
		await mint.stop();
		expect(performance.now() - started).toBeLessThan(10_000);
		for (const stream of streams) {
			expect(await stream.ended).toBe(true);
			const retry = stream.events.find(e => e.retry !== undefined)?.retry;
			expect(retry).toBeGreaterThanOrEqual(1000);
			expect(retry).toBeLessThanOrEqual(5000);
			expect(stream.named().at(-1)).toEqual(["end", { reason: "shutdown" }]);
		}
	});
});
