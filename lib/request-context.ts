/**
 * The request a piece of work belongs to, without passing it around: the
 * gateway's X-Request-Id becomes Moleculer's ctx.requestID (which crosses
 * nodes), this middleware makes it the current request for everything an
 * action or event handler does, and the logger adds it to every line.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import type { Context } from "moleculer";
import { defineMiddleware } from "./middleware";

const current = new AsyncLocalStorage<{ requestId: string }>();

/** Fields for every log line written while a request is being served. */
export function requestLogFields(): { requestId?: string } {
	const store = current.getStore();
	return store ? { requestId: store.requestId } : {};
}

const withRequest = (next: (ctx: Context) => unknown) => (ctx: Context) =>
	ctx.requestID ? current.run({ requestId: String(ctx.requestID) }, () => next(ctx)) : next(ctx);

export const RequestContextMiddleware = defineMiddleware({
	name: "RequestContext",
	localAction: withRequest,
	localEvent: withRequest,
});
