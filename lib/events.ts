/**
 * Mint's events: their contracts and the one way to publish them.
 *
 * Every event carries a unique `eventId` (consumers dedupe on it) and when it
 * happened. Producers publish through `publish()`, which checks the payload
 * against the event's whole contract before it leaves; consumers declare the
 * part they rely on (`consumerContract`) as their handler's `params`, so
 * Moleculer checks it on arrival.
 * Contracts use no sanitizing rules: in one process every local handler
 * shares one payload object, and a rule that rewrote it would change it for all.
 */
import crypto from "node:crypto";
import Validator from "fastest-validator";

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

const TRANSACTION_EVENT = {
	...ENVELOPE,
	transactionId: ID,
	type: { type: "enum", values: ["TopUp", "Transfer"] },
	status: { type: "enum", values: ["Pending", "Processing", "Completed", "Failed"] },
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
	direction: { type: "enum", values: ["credit", "debit", "refund"] },
	amountMinor: { ...MINOR, positive: true },
	balanceMinor: MINOR,
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
 * A consumer's view of a contract: the envelope and the fields it relies on
 * (a tolerant reader: a producer may add fields without breaking consumers).
 */
export function consumerContract<N extends EventName>(name: N, ...fields: (keyof (typeof EVENT_CONTRACTS)[N])[]): Record<string, unknown> {
	const contract = EVENT_CONTRACTS[name] as Record<string, unknown>;
	return Object.fromEntries(["eventId", "occurredAt", ...(fields as string[])].map(field => [field, contract[field]]));
}

const checks = (() => {
	const validator = new Validator();
	type Check = (value: unknown) => true | { message?: string }[];
	const compiled = Object.entries(EVENT_CONTRACTS).map(([name, schema]) => [name, validator.compile({ ...schema } as any) as unknown as Check]);
	return Object.fromEntries(compiled) as Record<EventName, Check>;
})();

/** true, or the problems that keep a payload from meeting its event's contract. */
export function checkEvent(name: EventName, payload: unknown): true | string[] {
	const result = checks[name](payload);
	if (result === true) return true;
	return (result as { message?: string }[]).map(p => String(p.message));
}

export function newEvent<T extends object>(payload: T, envelope: Partial<EventEnvelope> = {}): EventEnvelope & T {
	return { eventId: envelope.eventId ?? crypto.randomUUID(), occurredAt: envelope.occurredAt ?? new Date().toISOString(), ...payload };
}

/** The one publishing path: envelope, contract check, emit. A payload that breaks its contract is a bug and throws. */
export async function publish(
	emitter: { emit(name: string, payload: unknown): unknown },
	name: EventName,
	payload: object,
	envelope: Partial<EventEnvelope> = {},
): Promise<EventEnvelope> {
	const event = newEvent(payload, envelope);
	const problems = checkEvent(name, event);
	if (problems !== true) throw new Error(`Event ${name} breaks its contract: ${problems.join("; ")}`);
	await emitter.emit(name, event);
	return event;
}

/**
 * A stable event id for a fact that happens once (e.g. "transaction X became
 * Completed"): re-emitting it, by a retry or a replay, gives consumers the same
 * eventId to dedupe on. Shaped as a UUID (version 8: custom).
 */
export function eventIdFor(...parts: string[]): string {
	const hex = crypto.createHash("sha256").update(parts.join("\n")).digest("hex");
	return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-8${hex.slice(13, 16)}-${((parseInt(hex[16], 16) & 3) | 8).toString(16)}${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
}
