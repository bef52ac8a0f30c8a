/**
 * The transactions' outbox. A state change and its event are written
 * together: the history record and the `unpublished` count in one update
 * (state-machine.ts). The event then goes out at once; once its driver has
 * taken the transaction to a final state with every event out, one update
 * removes the count (not one update per event). If publishing fails, or the
 * node dies first, the relay (OutboxRelay, driven by the service) publishes
 * the whole history again later, under the same event ids, and removes the
 * count by compare-and-set. The count exists only while something is left
 * to publish: its sparse index is how the relay finds its work without
 * reading every transaction.
 */
import type { Logger } from "moleculer";
import type { EventEnvelope, EventPayload } from "../../contracts/events";
import type { TransactionMetrics } from "../../lib/business-metrics";
import { publish } from "../../lib/events";
import type { Store } from "../../mixins/db.mixin";
import { isFinal, transactionEventId, transactionEventName } from "./state-machine";
import type { HistoryRecord, TransactionEntity } from "./views";

/** What publishes events: the broker. */
export interface EventEmitter {
	emit(name: string, payload: unknown): unknown;
}

/** A transaction event's payload without its envelope. */
export type TransactionEventBody = Omit<EventPayload<"transaction.created">, keyof EventEnvelope>;

/** The event announcing one recorded state change: its payload, and its stable id and time. */
export function transactionEvent(tx: TransactionEntity, record: HistoryRecord) {
	const body: TransactionEventBody = {
		transactionId: tx._id,
		type: tx.type,
		status: record.status,
		amountMinor: tx.amountMinor,
		currency: tx.currency,
		...(tx.userId ? { userId: tx.userId } : {}),
		...(tx.fromUserId ? { fromUserId: tx.fromUserId, toUserId: tx.toUserId } : {}),
		...(record.reason ? { reason: record.reason } : {}),
	};
	return {
		name: transactionEventName(record.status),
		body,
		envelope: { eventId: transactionEventId(tx._id, record.status), occurredAt: record.at },
	};
}

/** What one driver of a transaction recorded, and whether every one of those events went out. */
export class Announced {
	recorded = 0;
	allOut = true;
}

/** At most this many transactions per relay run. */
const RELAY_BATCH = 500;

export class TransactionOutbox {
	constructor(
		private readonly store: Store<TransactionEntity>,
		private readonly emitter: EventEmitter,
		private readonly logger: Pick<Logger, "warn">,
		/** Counts every recorded state change, and the relay's backlog (lib/business-metrics.ts). */
		private readonly metrics?: Pick<TransactionMetrics, "recorded" | "outboxPending">,
	) {}

	/** Publishes one recorded state change (again, for a replay: consumers dedupe on its stable id). */
	async announce(tx: TransactionEntity, record: HistoryRecord): Promise<void> {
		const event = transactionEvent(tx, record);
		await publish(this.emitter, event.name, event.body, event.envelope);
	}

	/**
	 * Counts a state change just recorded (by the one writer that recorded it)
	 * and publishes it: whether it went out. What one driver announced is
	 * tallied in `announced`; the outbox count comes down once, when the
	 * driver has reached a final state (clear()).
	 */
	async announceRecorded(tx: TransactionEntity, record: HistoryRecord, announced: Announced): Promise<boolean> {
		this.metrics?.recorded(tx, record.status);
		announced.recorded++;
		try {
			await this.announce(tx, record);
			return true;
		} catch (err) {
			// The state change stands; the relay publishes its event later.
			announced.allOut = false;
			this.logger.warn({ err, transactionId: tx._id, status: record.status }, "event not published yet; the outbox relay will retry");
			return false;
		}
	}

	/**
	 * Takes a finished transaction off the outbox when the driver that recorded
	 * every change it counts published each one: the count equals what this
	 * driver recorded only then (compare-and-set); otherwise the relay sends
	 * the whole history again later.
	 */
	async clear(tx: TransactionEntity, announced: Announced): Promise<void> {
		if (!isFinal(tx.status) || !announced.allOut || announced.recorded === 0) return;
		await this.store.updateOne({ _id: tx._id, unpublished: announced.recorded }, { $unset: { unpublished: true } });
	}

	/** Transactions with events not confirmed published, unchanged since before `quietBefore` (how many: the backlog gauge). */
	async pending(quietBefore: Date): Promise<TransactionEntity[]> {
		const query = { unpublished: { $gt: 0 }, updatedAt: { $lt: quietBefore.toISOString() } };
		const found = await this.store.find({ query, limit: RELAY_BATCH });
		if (this.metrics) this.metrics.outboxPending(found.length < RELAY_BATCH ? found.length : await this.store.count({ query }));
		return found;
	}

	/**
	 * Publishes a transaction's whole history again, oldest first, then clears
	 * its outbox count if nothing was recorded meanwhile: how many events went
	 * out, 0 when it must wait for the next run.
	 */
	async relay(tx: TransactionEntity): Promise<number> {
		try {
			for (const record of tx.history) await this.announce(tx, record);
		} catch (err) {
			this.logger.warn({ err, transactionId: tx._id }, "outbox relay could not publish; will try again");
			return 0;
		}
		await this.store.updateOne({ _id: tx._id, unpublished: tx.unpublished }, { $unset: { unpublished: true } });
		return tx.history.length;
	}
}
