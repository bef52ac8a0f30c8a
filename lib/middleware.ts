/**
 * Broker middlewares, typed as Moleculer calls them. Moleculer 0.15's own
 * `Middleware` type declares the wrapping hooks (emit, localAction...) as
 * returning what the wrapped function returns, not the wrapper, so a correct
 * middleware does not type-check against it; the one cast lives here.
 */
import type { Context, Middleware, ServiceBroker } from "moleculer";

type Emit = (event: string, payload: unknown, opts?: unknown) => unknown;
type Call = (action: string, params?: unknown, opts?: unknown) => unknown;
type Handler = (ctx: Context) => unknown;

export interface MintMiddleware {
	name?: string;
	created?(broker: ServiceBroker): void;
	starting?(broker: ServiceBroker): Promise<void>;
	stopped?(broker: ServiceBroker): Promise<void>;
	call?(next: Call): Call;
	emit?(next: Emit): Emit;
	broadcast?(next: Emit): Emit;
	localAction?(next: Handler, action: { name: string }): Handler;
	localEvent?(next: Handler, event: { name: string }): Handler;
}

export const defineMiddleware = (middleware: MintMiddleware): Middleware => middleware as unknown as Middleware;
