/**
 * A server-sent events client for tests: GET a stream, read its events as
 * they come (each parsed: id, event, JSON data, retry), its comments
 * (heartbeats), and whether and when the server ended it.
 */
import http, { type IncomingHttpHeaders } from "node:http";

export interface SseEvent {
	id?: string;
	event?: string;
	data?: any;
	retry?: number;
	/** When the client had read it (performance.now()). */
	at: number;
}

export interface SseStream {
	status: number;
	headers: IncomingHttpHeaders;
	/** A refusal's JSON body (not 200). */
	body?: any;
	/** Every event so far, in order. */
	events: SseEvent[];
	/** Named events so far (no retry-only blocks), as [event, data]. */
	named(): [string | undefined, any][];
	/** Comment lines so far (heartbeats), without the colon. */
	comments: string[];
	/** Whether the server ended the answer (true) or the connection broke (false); pending while it is open. */
	ended: Promise<boolean>;
	/** Resolves with `probe`'s first non-empty answer, re-asked after each chunk; rejects after the timeout or once the stream is over. */
	until<T>(probe: (stream: SseStream) => T | undefined | false, timeoutMs?: number): Promise<T>;
	close(): void;
}

export interface OpenStreamOptions {
	path?: string;
	headers?: Record<string, string>;
	/** A local address of the client's own (127.x.y.z). */
	from?: string;
}

/** Opens the stream and resolves once the answer's head arrived (a refusal: once its body has). */
export function openStream(port: number, opts: OpenStreamOptions = {}): Promise<SseStream> {
	return new Promise((resolve, reject) => {
		const req = http.get(
			{ host: "127.0.0.1", port, path: opts.path ?? "/api/v1/wallet/stream", headers: opts.headers, localAddress: opts.from, agent: false },
			res => {
				res.setEncoding("utf8");
				const waiters = new Set<() => void>();
				let buffer = "";
				let over = false;
				let markEnded!: (ended: boolean) => void;
				const stream: SseStream = {
					status: res.statusCode ?? 0,
					headers: res.headers,
					events: [],
					comments: [],
					named: () => stream.events.filter(e => e.event !== undefined).map(e => [e.event, e.data]),
					ended: new Promise<boolean>(r => (markEnded = r)),
					until<T>(probe: (s: SseStream) => T | undefined | false, timeoutMs = 5000): Promise<T> {
						return new Promise<T>((done, fail) => {
							const check = () => {
								const value = probe(stream);
								if (value !== undefined && value !== false && value !== null) {
									finish();
									done(value as T);
								} else if (over) {
									finish();
									fail(new Error(`the stream ended first; it sent ${JSON.stringify(stream.named())}`));
								}
							};
							const timer = setTimeout(() => {
								finish();
								fail(new Error(`timed out after ${timeoutMs} ms; the stream sent ${JSON.stringify(stream.named())}`));
							}, timeoutMs);
							const finish = () => {
								clearTimeout(timer);
								waiters.delete(check);
							};
							waiters.add(check);
							check();
						});
					},
					close: () => req.destroy(),
				};
				const wake = () => {
					for (const waiter of [...waiters]) waiter();
				};
				if (res.statusCode !== 200) {
					let text = "";
					res.on("data", (chunk: string) => (text += chunk));
					res.on("end", () => {
						stream.body = text ? JSON.parse(text) : undefined;
						resolve(stream);
					});
					return;
				}
				res.on("data", (chunk: string) => {
					buffer += chunk;
					for (let split = buffer.indexOf("\n\n"); split >= 0; split = buffer.indexOf("\n\n")) {
						const block = buffer.slice(0, split);
						buffer = buffer.slice(split + 2);
						const event: SseEvent = { at: performance.now() };
						let isEvent = false;
						for (const line of block.split("\n")) {
							if (line.startsWith(":")) {
								stream.comments.push(line.slice(1).trim());
								continue;
							}
							isEvent = true;
							const colon = line.indexOf(":");
							const [field, value] = colon < 0 ? [line, ""] : [line.slice(0, colon), line.slice(colon + 1).replace(/^ /, "")];
							if (field === "id") event.id = value;
							else if (field === "event") event.event = value;
							else if (field === "data") event.data = JSON.parse(value);
							else if (field === "retry") event.retry = Number(value);
						}
						if (isEvent) stream.events.push(event);
					}
					wake();
				});
				const finished = (ended: boolean) => {
					if (over) return;
					over = true;
					markEnded(ended);
					wake();
				};
				res.on("end", () => finished(true));
				res.on("close", () => finished(res.complete));
				res.on("error", () => finished(false));
				resolve(stream);
			},
		);
		req.on("error", reject);
	});
}
