/**
 * The one way to publish Mint's events, and their checks. The contracts
 * themselves live in contracts/events.ts.
 *
 * Producers publish through `publish()`, which checks the payload
 * against the event's whole contract before it leaves; consumers declare the
 * part they rely on (`consumerContract`) as their handler's `params`, so
 * Moleculer checks it on arrival.
 * Contracts use no sanitizing rules: in one process every local handler
 * shares one payload object, and a rule that rewrote it would change it for all.
 */
import crypto from "node:crypto";
import Validator, { type ValidationSchema } from "fastest-validator";
import { BROADCAST_EVENTS, DURABLE_EVENTS, EVENT_CONTRACTS, type EventEnvelope, type EventName } from "../contracts/events";

const BROADCAST = new Set<string>(BROADCAST_EVENTS);
for (const name of BROADCAST_EVENTS) {
	if (DURABLE_EVENTS.includes(name)) throw new Error(`Event ${name} cannot be both durable (emitted to the durable bus) and broadcast`);
}

/**
 * Where events are published: a broker or a context (both broadcast). An
 * emitter without broadcast (a test's recorder) gets every event by emit.
 */
export interface Publisher {
	emit(name: string, payload: unknown): unknown;
	broadcast?(name: string, payload: unknown): unknown;
}

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
	const compiled = Object.entries(EVENT_CONTRACTS).map(([name, schema]) => [name, validator.compile({ ...schema } as ValidationSchema) as Check]);
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

/**
 * The one publishing path: envelope, contract check, then emit, or broadcast
 * for the events every node must hear (BROADCAST_EVENTS). A payload that
 * breaks its contract is a bug and throws. Moleculer runs (and awaits) this
 * node's own handlers of a broadcast, and those an emit picks here, before it
 * resolves: when publish() returns, the publisher's node has acted on its
 * event (e.g. cleaned its cache); other nodes hear it a transport hop later.
 */
export async function publish(emitter: Publisher, name: EventName, payload: object, envelope: Partial<EventEnvelope> = {}): Promise<EventEnvelope> {
	const event = newEvent(payload, envelope);
	const problems = checkEvent(name, event);
	if (problems !== true) throw new Error(`Event ${name} breaks its contract: ${problems.join("; ")}`);
	if (BROADCAST.has(name) && emitter.broadcast) await emitter.broadcast(name, event);
	else await emitter.emit(name, event);
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
