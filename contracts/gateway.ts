/** What the gateway tells the services it calls, in ctx.meta. */
import type { Caller } from "./users";

export interface CallMeta {
	/** The client's IP, behind trusted proxies (limits per IP). */
	clientIp?: string;
	/** The Idempotency-Key header of a money submission. */
	idempotencyKey?: string;
	/** The authenticated caller; absent or null for an anonymous request. */
	user?: Caller | null;
}

/** The meta of an action the gateway only calls for a signed-in user (`auth: "required"`). */
export type SignedInMeta = CallMeta & { user: Caller };
