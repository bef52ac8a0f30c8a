/** Every event carries a unique eventId (consumers dedupe on it) and when it happened. */
import crypto from "node:crypto";

export interface EventEnvelope {
	eventId: string;
	occurredAt: string;
}

export function newEvent<T extends object>(payload: T, envelope: Partial<EventEnvelope> = {}): EventEnvelope & T {
	return { eventId: envelope.eventId ?? crypto.randomUUID(), occurredAt: envelope.occurredAt ?? new Date().toISOString(), ...payload };
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

/** The envelope part of an event's params schema, for consumers that validate what they receive. */
export const EVENT_ENVELOPE = {
	eventId: { type: "uuid" },
	occurredAt: { type: "string", min: 20, max: 40 },
} as const;
