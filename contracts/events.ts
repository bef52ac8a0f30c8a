/**
 * Mint's events: each one's contract (a fastest-validator schema, checked by
 * the producer on every publish and by consumers on arrival, lib/events.ts),
 * the payload types derived from those contracts, and the durable topology.
 * Every event carries a unique `eventId` (consumers dedupe on it) and when it
 * happened.
 */
import { MOVEMENT_DIRECTIONS, TRANSACTION_STATUSES, TRANSACTION_TYPES } from "./money";

export interface EventEnvelope {
	eventId: string;
	occurredAt: string;
}

const ENVELOPE = {
	// Any UUID shape: random ids are version 4, stable ones (eventIdFor) version 8.
	eventId: { type: "string", pattern: /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/ },
	occurredAt: { type: "string", min: 20, max: 40 },
} as const;

const ID = { type: "string", min: 1, max: 100 } as const;
const MINOR = { type: "number", integer: true, min: 0 } as const;

/** What a user.updated announces. */
export const USER_CHANGES = ["signedUp", "profile", "emailVerified", "password"] as const;

const TRANSACTION_EVENT = {
	...ENVELOPE,
	transactionId: ID,
	type: { type: "enum", values: TRANSACTION_TYPES },
	status: { type: "enum", values: TRANSACTION_STATUSES },
	amountMinor: { ...MINOR, positive: true },
	currency: { type: "string", length: 3 },
	userId: { ...ID, optional: true },
	fromUserId: { ...ID, optional: true },
	toUserId: { ...ID, optional: true },
	reason: { type: "string", max: 200, optional: true },
} as const;

const WALLET_MOVEMENT = {
	...ENVELOPE,
	walletId: ID,
	userId: ID,
	transactionId: ID,
	direction: { type: "enum", values: MOVEMENT_DIRECTIONS },
	amountMinor: { ...MINOR, positive: true },
	balanceMinor: MINOR,
	/** The wallet's version after this movement (its ledger entry's seq): orders one wallet's movements, which may arrive out of order. */
	version: { ...MINOR, positive: true, optional: true },
} as const;

export const EVENT_CONTRACTS = {
	"user.signedUp": {
		...ENVELOPE,
		userId: { type: "uuid" },
		email: { type: "email" },
		firstName: { type: "string", min: 1, max: 100 },
		lastName: { type: "string", min: 1, max: 100 },
		verificationToken: { type: "string", min: 20, max: 200 },
		verificationExpiresAt: { type: "string", min: 20, max: 40 },
	},
	"user.passwordResetRequested": {
		...ENVELOPE,
		userId: { type: "uuid" },
		email: { type: "email" },
		firstName: { type: "string", min: 1, max: 100 },
		resetToken: { type: "string", min: 20, max: 200 },
		resetExpiresAt: { type: "string", min: 20, max: 40 },
	},
	"user.emailVerified": { ...ENVELOPE, userId: { type: "uuid" }, email: { type: "email" } },
	/** Anything others see of a user changed (what caches of users hold). */
	"user.updated": { ...ENVELOPE, userId: { type: "uuid" }, change: { type: "enum", values: USER_CHANGES } },
	"auth.sessionsRevoked": { ...ENVELOPE, sids: { type: "array", items: "string", min: 1 }, expiresAt: { type: "number", integer: true, positive: true } },
	"auth.keysRotated": { ...ENVELOPE, retiredKid: { type: "string", nullable: true }, currentKid: { type: "string", min: 1 } },
	"wallet.created": { ...ENVELOPE, walletId: ID, userId: ID, currency: { type: "string", length: 3 } },
	"wallet.credited": WALLET_MOVEMENT,
	"wallet.debited": WALLET_MOVEMENT,
	"transaction.created": TRANSACTION_EVENT,
	"transaction.processing": TRANSACTION_EVENT,
	"transaction.completed": TRANSACTION_EVENT,
	"transaction.failed": TRANSACTION_EVENT,
} as const;

export type EventName = keyof typeof EVENT_CONTRACTS;

/**
 * The durable topology, declared once: in the cluster each consumer group
 * that must not miss events reads its own RabbitMQ queue `<namespace>.<group>`,
 * bound to these events. Publishers declare these queues too (lib/durable-events.ts),
 * so an event published before its consumer ever ran waits for it.
 */
export const DURABLE_SUBSCRIPTIONS = {
	notifications: ["user.signedUp", "user.passwordResetRequested", "transaction.completed", "transaction.failed"],
} as const satisfies Record<string, readonly EventName[]>;

/**
 * The events a consumer must not miss (they become emails): exactly those a
 * durable subscription reads. Their producers keep them in an outbox until
 * published, and in the cluster they also go to the durable queues. The
 * others are fire-and-forget Moleculer events.
 */
export const DURABLE_EVENTS: readonly EventName[] = [...new Set(Object.values(DURABLE_SUBSCRIPTIONS).flat())];

/**
 * The events every node that holds what they change must hear, at once:
 * published with broadcast (lib/events.ts), not balanced to one node of each
 * service. Gateways each keep revoked sessions and a JWKS; every node of a
 * service keeps its cache (mixins/cache-cleaner.mixin.ts). Durable events
 * cannot be among them: the durable bus goes with emit (lib/durable-events.ts).
 */
export const BROADCAST_EVENTS: readonly EventName[] = [
	"auth.sessionsRevoked",
	"auth.keysRotated",
	"user.updated",
	"wallet.created",
	"wallet.credited",
	"wallet.debited",
];

/** The TypeScript type a contract describes (the fastest-validator rules Mint uses). */
type FieldType<R> = R extends { type: "enum"; values: readonly (infer V)[] }
	? V
	: R extends { type: "string" | "uuid" | "email" }
		? string
		: R extends { type: "number" }
			? number
			: R extends { type: "boolean" }
				? boolean
				: R extends { type: "array"; items: "string" }
					? string[]
					: unknown;
type Field<R> = R extends { nullable: true } ? FieldType<R> | null : FieldType<R>;
type OptionalKeys<S> = { [K in keyof S]: S[K] extends { optional: true } ? K : never }[keyof S];
type Simplify<T> = { [K in keyof T]: T[K] };
export type Infer<S> = Simplify<{ -readonly [K in Exclude<keyof S, OptionalKeys<S>>]: Field<S[K]> } & { -readonly [K in OptionalKeys<S>]?: Field<S[K]> }>;

/** An event's payload, envelope included. */
export type EventPayload<N extends EventName> = Infer<(typeof EVENT_CONTRACTS)[N]>;
