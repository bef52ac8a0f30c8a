/**
 * One handler path for a service's durable events. Embedded, they arrive as
 * Moleculer events. In the cluster (a node with a durable bus,
 * lib/durable-events.ts) they come from the group's RabbitMQ queue only, so
 * none is missed while the node is down; and they run the very same event
 * handlers, with a real Context, through the broker's local-event middlewares
 * (the Validator checks the handler's own `params`, once compiled; metrics,
 * bulkhead, error handling), as a Moleculer event would.
 *
 * A handler's failure, or a payload that breaks the handler's contract,
 * rejects: the durable queue retries the message and finally dead-letters it.
 *
 *   mixins: [DurableConsumer("notifications", { maxAttempts, retryBaseMs }), ...]
 */
import { Errors, type ActionSchema, type Context } from "moleculer";
import { DURABLE_SUBSCRIPTIONS } from "../contracts/events";
import { defineMixin } from "../lib/define-service";
import { durableEventsOf } from "../lib/durable-events";
import type { TraceHeaders } from "../lib/request-context";

export type DurableGroup = keyof typeof DURABLE_SUBSCRIPTIONS;

/** What Moleculer keeps of an event subscription between parsing a schema and registering the service. */
interface EventSpec {
	name: string;
	handler(ctx: Context): Promise<unknown>;
}

/** Moleculer's parsed service, before its registration with the broker: not in Moleculer's typings. */
interface UnregisteredService {
	_serviceSpecification: { events: Record<string, EventSpec> };
}

/** A problem the broker's Validator reports: the field and the rule, and (never logged here) the value. */
interface ParamProblem {
	field?: string;
	type?: string;
	event?: string;
}

/**
 * The Validator's refusal of this event's payload, as an error naming the fields and rules it broke,
 * never their values (a value may be a one-time token, and the queue keeps and logs the error).
 */
function contractBreach(event: string, err: unknown): Error | undefined {
	if (!(err instanceof Errors.ValidationError)) return undefined;
	const problems: ParamProblem[] = Array.isArray(err.data) ? err.data : [];
	// A validation error from an action the handler called is the handler's failure, not the payload's.
	if (problems.length === 0 || problems.some(p => p.event !== event)) return undefined;
	return new Error(`Event ${event} breaks its contract: ${problems.map(p => `${p.field} (${p.type})`).join(", ")}`);
}

/** The publishing request's span, as the parent Moleculer reads when it creates the event's Context. */
const remoteParent = (trace: TraceHeaders) => ({ id: trace.parentSpanId, requestID: trace.requestId, tracing: trace.sampled, level: 1, meta: {} });

export function DurableConsumer(group: DurableGroup, retry: { maxAttempts: number; retryBaseMs: number }) {
	const events: readonly string[] = DURABLE_SUBSCRIPTIONS[group];
	return defineMixin()({
		created() {
			const missing = events.filter(name => !this.schema.events?.[name]);
			if (missing.length > 0) throw new Error(`Service ${this.name} has no handler for its durable events ${missing.join(", ")}`);
			if (!durableEventsOf(this.broker)) return;
			const registered = (this as unknown as UnregisteredService)._serviceSpecification.events;
			for (const name of events) {
				const event = registered[name];
				// Not registered with the broker: no Moleculer event reaches these handlers over the transporter...
				delete registered[name];
				// ...only the queue's messages, wrapped as the registry wraps a local event (Moleculer types wrapHandler for actions).
				event.handler = this.broker.middlewares.wrapHandler("localEvent", event.handler, event as ActionSchema) as EventSpec["handler"];
			}
		},

		async started() {
			const bus = durableEventsOf(this.broker);
			if (!bus) return;
			await bus.subscribe({
				group,
				events,
				...retry,
				handle: async (event: string, payload: unknown, trace?: TraceHeaders) => {
					if (!events.includes(event)) throw new Error(`Event ${event} breaks its contract: no contract for this event`);
					try {
						// Moleculer builds the event's Context (eventName, eventType "emit", this group) and calls the wrapped handler;
						// the publishing request's trace, when there was one, becomes its parent, so its span joins that trace.
						await this.emitLocalEventHandler(event, payload, trace ? { requestID: trace.requestId, parentCtx: remoteParent(trace) } : undefined);
					} catch (err) {
						throw contractBreach(event, err) ?? err;
					}
				},
			});
		},
	});
}
