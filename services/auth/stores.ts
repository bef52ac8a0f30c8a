/**
 * auth's collections: users (the main one) and the stores beside it. The
 * modules get them as one `AuthStores` object whose fields are read on use,
 * since the DB mixin opens the extra stores only when the service starts.
 */
import type { CollectionSpec, DbVars, Store } from "../../mixins/db.mixin";
import type { StoredKey } from "./keys";
import type { OneTimeTokenEntity } from "./one-time-tokens";
import type { FamilyEntity, RevocationEntity, SessionEntity } from "./sessions";
import type { UserEntity } from "./users";

/**
 * `unpublished` is present only while a user has outbox events left to publish (user-outbox.ts): its
 * sparse index holds the relay's work and nothing else, so the relay's look every 5 s does not read every
 * user (100,000 users: 0.6 s of the event loop each time, on SQLite) and no index key is shared by them all.
 * (A new field rather than an index on the older `pendingEvents`, which every user of an older Mint keeps
 * at 0: on NeDB, taking 100,000 documents off one shared key one by one took 10 minutes.)
 */
export const USERS: CollectionSpec = {
	name: "users",
	indexes: [
		{ fields: { email: 1 }, unique: true },
		{ fields: { unpublished: 1 }, sparse: true },
		// The admin's list, oldest first: SQLite reads a page of it in this index's order.
		{ fields: { createdAt: 1 } },
	],
};

/**
 * The expiry of each kind of row is indexed too: the hourly purge (purgeExpired) and the start's list of
 * live revocations read a range of it, not every row (a session per login and per refresh: a full scan
 * of them, once an hour, would stall a SQLite node as long as there are rows).
 */
export const EXTRA_COLLECTIONS: CollectionSpec[] = [
	{ name: "sessions", indexes: [{ fields: { familyId: 1 } }, { fields: { userId: 1 } }, { fields: { expiresAt: 1 } }] },
	{ name: "families", indexes: [{ fields: { userId: 1 } }, { fields: { absoluteExpiresAt: 1 } }] },
	{ name: "oneTimeTokens", indexes: [{ fields: { userId: 1 } }, { fields: { expiresAt: 1 } }] },
	// One key per slot (keys.ts KeySlot): nodes bootstrapping or rotating at once create one current and one next key between them.
	{ name: "signingKeys", indexes: [{ fields: { slot: 1 }, unique: true, sparse: true }] },
	{ name: "revocations", indexes: [{ fields: { expiresAt: 1 } }] },
];

/** The extra collections by name, as DbMixin puts them on `this.stores`. */
export type ExtraEntities = {
	sessions: SessionEntity;
	families: FamilyEntity;
	oneTimeTokens: OneTimeTokenEntity;
	signingKeys: StoredKey;
	revocations: RevocationEntity;
};

export type AuthDbVars = DbVars<UserEntity, ExtraEntities>;

export type AuthStores = { users: Store<UserEntity> } & AuthDbVars["stores"];

/** Every store of the service, each looked up when used (the extra ones exist only once the service has started). */
export function authStores(service: AuthDbVars): AuthStores {
	return {
		get users() {
			return service.adapter;
		},
		get sessions() {
			return service.stores.sessions;
		},
		get families() {
			return service.stores.families;
		},
		get oneTimeTokens() {
			return service.stores.oneTimeTokens;
		},
		get signingKeys() {
			return service.stores.signingKeys;
		},
		get revocations() {
			return service.stores.revocations;
		},
	};
}

/** Expired one-time tokens, refresh tokens, families past their absolute end and revocations no token can need any more go. */
export async function purgeExpired(db: AuthStores, now = Date.now()): Promise<Record<"oneTimeTokens" | "sessions" | "families" | "revocations", number>> {
	return {
		oneTimeTokens: await db.oneTimeTokens.removeMany({ expiresAt: { $lt: now } }),
		sessions: await db.sessions.removeMany({ expiresAt: { $lt: now } }),
		families: await db.families.removeMany({ absoluteExpiresAt: { $lt: now } }),
		revocations: await db.revocations.removeMany({ expiresAt: { $lt: now } }),
	};
}
