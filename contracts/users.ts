/** Who is calling, and how users look to each other: what auth hands the gateway and other services. */
import type { CacheSettings } from "../lib/cacher";

/** The authenticated caller, as the gateway puts it in ctx.meta.user. */
export interface Caller {
	id: string;
	/** The session (refresh-token family) the access token belongs to. */
	sid: string;
}

export type Role = "user" | "admin";

/** A user's own view of themselves (signup, login, GET /auth/user, PUT /users/me). */
export interface PublicUser {
	id: string;
	firstName: string;
	middleName?: string;
	lastName: string;
	email: string;
	emailVerifiedAt: string | null;
	role: Role;
	createdAt: string;
	updatedAt: string;
}

/** Another user as anyone signed in sees them: never the email. */
export interface PublicProfile {
	id: string;
	firstName: string;
	middleName?: string;
	lastName: string;
	createdAt: string;
}

/** A search result: enough to pick a recipient by email. */
export interface DirectoryEntry {
	id: string;
	firstName: string;
	middleName?: string;
	lastName: string;
	email: string;
}

/**
 * The cache of auth's actions about a user by id (getUser, contactOf, exists): may lag a node by an
 * event where each node has its own cache. Notifications reads contactOf's entries, and
 * transactions exists's, itself (callCached, lib/cacher.ts) before calling.
 */
export const USER_BY_ID_CACHE = { scope: "id", ttl: 600 } as const satisfies CacheSettings;

/** Who to write to (auth.contactOf, for notifications' receipts). */
export interface Contact {
	id: string;
	email: string;
	firstName: string;
	lastName: string;
}

/** A new or continued session: the gateway turns it into cookies. */
export interface IssuedSession {
	/** The refresh-token family: the access token's sid. */
	sessionId: string;
	accessToken: string;
	/** Epoch seconds. */
	accessExpiresAt: number;
	refreshToken: string;
	/** Epoch seconds. */
	refreshExpiresAt: number;
}

/** One revoked session, as auth.revocations lists them for gateways (refused until `expiresAt`, epoch ms). */
export interface RevokedSession {
	sid: string;
	expiresAt: number;
}

/** What auth.signup, auth.login and auth.refresh answer. */
export interface SessionResult {
	user: PublicUser;
	session: IssuedSession;
}
