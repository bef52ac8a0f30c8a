/**
 * The request a piece of work belongs to, without passing it around: the
 * gateway's X-Request-Id (or a W3C traceparent's trace-id) becomes Moleculer's
 * ctx.requestID, which crosses nodes and which Moleculer's tracer uses as the
 * trace id of every span. This middleware makes it the current request for
 * everything an action or event handler does:
 * - the logger adds the request id, trace id and span id to every line;
 * - a broker.call, emit or broadcast made without a parent context (a
 *   background step, an outbox, a helper holding the broker) joins the
 *   request's trace as a child of the running span, as a ctx.call would.
 *
 * Zipkin (and Jaeger, Tempo) want a trace id of 16 or 32 lower-hex digits:
 * `traceIdOf` is the one mapping from a request id to it, used by the exporter
 * and the log lines alike, so a log line's traceId finds its trace.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import crypto from "node:crypto";
import { type Context, type Span, TracerExporters } from "moleculer";
import { defineMiddleware } from "./middleware";

interface CurrentRequest {
	requestId: string;
	/** The running action's or event's span: what a call made from here hangs under. */
	span: { id: string; traceID: string; sampled: boolean };
}

const current = new AsyncLocalStorage<CurrentRequest>();

const HEX_TRACE_ID = /^(?:[0-9a-f]{16}|[0-9a-f]{32})$/i;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * The trace id a request id is exported and logged as: a hex id (a
 * traceparent's trace-id, a caller's hex X-Request-Id) as it is, a UUID (the
 * gateway's own ids) without its dashes, any other caller-chosen id hashed to
 * 32 hex digits (its span tags still carry it as `requestID`).
 */
export function traceIdOf(requestId: string): string {
	if (HEX_TRACE_ID.test(requestId)) return requestId.toLowerCase();
	if (UUID.test(requestId)) return requestId.replaceAll("-", "").toLowerCase();
	return crypto.createHash("sha256").update(requestId).digest("hex").slice(0, 32);
}

/** A span id as Zipkin shows it: Moleculer's UUID context ids cut to 16 hex digits, as its exporter does. */
export const spanIdOf = (id: string): string => id.replaceAll("-", "").slice(0, 16);

/** The request being served and its running span, if any: what work handed to another process carries along (durable events). */
export function currentTrace(): TraceHeaders | undefined {
	const store = current.getStore();
	return store ? { requestId: store.requestId, parentSpanId: store.span.id, sampled: store.span.sampled } : undefined;
}

/** A request's trace as it travels outside Moleculer's own packets (RabbitMQ message headers). */
export interface TraceHeaders {
	requestId: string;
	parentSpanId: string;
	sampled: boolean;
}

/** Fields for every log line written while a request is being served. */
export function requestLogFields(): { requestId?: string; traceId?: string; spanId?: string } {
	const store = current.getStore();
	return store ? { requestId: store.requestId, traceId: traceIdOf(store.requestId), spanId: spanIdOf(store.span.id) } : {};
}

const withRequest = (next: (ctx: Context) => unknown) => (ctx: Context) => {
	if (!ctx.requestID) return next(ctx);
	const requestId = String(ctx.requestID);
	// Moleculer's tracing middleware wraps this one: ctx.span is the handler's own span.
	const span = { id: ctx.span?.id ?? ctx.id, traceID: requestId, sampled: ctx.tracing ?? true };
	return current.run({ requestId, span }, () => next(ctx));
};

type CallOptions = { ctx?: unknown; parentCtx?: unknown; parentSpan?: unknown; requestID?: unknown; groups?: unknown };

/** Calling options that put a call or event made without a parent context into the current request's trace. */
function joinCurrentRequest(opts: unknown): unknown {
	const store = current.getStore();
	if (!store) return opts;
	const options: CallOptions = typeof opts === "string" || Array.isArray(opts) ? { groups: opts } : ((opts ?? {}) as CallOptions);
	if (options.ctx || options.parentCtx || options.parentSpan || options.requestID) return opts;
	return { ...options, parentSpan: store.span };
}

export const RequestContextMiddleware = defineMiddleware({
	name: "RequestContext",
	localAction: withRequest,
	localEvent: withRequest,
	call: next => (action, params, opts) => next(action, params, joinCurrentRequest(opts)),
	emit: next => (event, payload, opts) => next(event, payload, joinCurrentRequest(opts)),
	broadcast: next => (event, payload, opts) => next(event, payload, joinCurrentRequest(opts)),
});

/**
 * Moleculer's Zipkin exporter with three changes: the trace id is
 * `traceIdOf` the request id (Moleculer cuts every id to 16 digits, which
 * would split a 32-digit traceparent trace-id); a span's name and URL tag lose
 * their query string (the gateway's log lines drop it too); and a flush is
 * bounded in time and awaited when the broker stops, so a stopping node sends
 * its last spans.
 */
export class ZipkinExporter extends TracerExporters.Zipkin {
	makePayload(span: Span): Record<string, unknown> {
		const payload = super.makePayload(span);
		payload.traceId = traceIdOf(String(span.traceID));
		payload.name = withoutQuery(payload.name);
		const tags = payload.tags as Record<string, unknown>;
		if (typeof tags["params.req.url"] === "string") tags["params.req.url"] = withoutQuery(tags["params.req.url"]);
		return payload;
	}

	flush(): Promise<void> {
		if (this.queue.length === 0) return Promise.resolve();
		const spans = this.generateTracingData();
		this.queue.length = 0;
		return fetch(`${this.opts.baseURL}/api/v2/spans`, {
			method: "POST",
			body: JSON.stringify(spans),
			headers: this.opts.headers,
			signal: AbortSignal.timeout(10_000),
		})
			.then(res => {
				if (res.status >= 400) this.logger.warn(`Zipkin refused ${spans.length} spans: ${res.status} ${res.statusText}`);
			})
			.catch((err: Error) => this.logger.warn(`Zipkin unreachable, ${spans.length} spans dropped: ${err.message}`));
	}

	stop(): Promise<void> {
		super.stop();
		return this.flush();
	}
}

const withoutQuery = (value: unknown) => (typeof value === "string" ? value.replace(/\?.*$/, "") : value);
