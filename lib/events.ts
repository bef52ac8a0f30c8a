/** Every event carries a unique eventId (consumers dedupe on it) and when it happened. */
import crypto from "node:crypto";

export interface EventEnvelope {
	eventId: string;
	occurredAt: string;
}

export function newEvent<T extends object>(payload: T): EventEnvelope & T {
	return { eventId: crypto.randomUUID(), occurredAt: new Date().toISOString(), ...payload };
}

/** The envelope part of an event's params schema, for consumers that validate what they receive. */
export const EVENT_ENVELOPE = {
	eventId: { type: "uuid" },
	occurredAt: { type: "string", min: 20, max: 40 },
} as const;
