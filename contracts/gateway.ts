/** What the gateway tells the services it calls, in ctx.meta, and the cache entries it reads itself. */
import type { CacheSettings } from "../lib/cacher";
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

/**
 * wallet.mine's cache: the caller's wallet view, never stale once a movement
 * has answered (strict). The action declares it, and the gateway answers a
 * hit itself from the same entries (services/api/cached-reads.ts).
 */
export const WALLET_MINE_CACHE = { scope: "#user.id", ttl: 300, strict: true } as const satisfies CacheSettings;
