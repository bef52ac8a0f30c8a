/**
 * auth's outbox: the events that must not be lost (they become emails) are
 * written into the user document they are about, in the same write as the
 * change (a signup's insert, a reset request's update), sealed because they
 * carry one-time tokens. Each goes out at once; a publish that fails leaves
 * it in the document for the relay, which sends it again under the same
 * event id (consumers dedupe) and pulls it by compare-and-set.
 */
import crypto from "node:crypto";
import type { EventPayload } from "../../contracts/events";
import { publish } from "../../lib/events";
import { seal, unseal } from "../../lib/sealing";
import type { NodeSecrets } from "../../lib/secrets";
import type { Store } from "../../mixins/db.mixin";
import type { Emitter, Log } from "./support";
import type { UserEntity } from "./users";

export type OutboxEventName = "user.signedUp" | "user.passwordResetRequested";

export interface OutboxRecord {
	eventId: string;
	occurredAt: string;
	name: OutboxEventName;
	sealedPayload: string;
}

/** An outbox event's payload without its envelope (the record holds the envelope). */
export type OutboxPayload<N extends OutboxEventName> = Omit<EventPayload<N>, "eventId" | "occurredAt">;

/** How many users one relay run looks at. */
const RELAY_BATCH = 500;

export class UserOutbox {
	constructor(
		private readonly db: { users: Store<UserEntity> },
		private readonly secrets: Pick<NodeSecrets, "current" | "unsealWith">,
		private readonly log: Log,
	) {}

	/** A new record, to be written with the change it announces. */
	record<N extends OutboxEventName>(name: N, payload: OutboxPayload<N>): OutboxRecord {
		return { eventId: crypto.randomUUID(), occurredAt: new Date().toISOString(), name, sealedPayload: seal(JSON.stringify(payload), this.secrets.current) };
	}

	/** Adds a record to a user who already exists. */
	async append(userId: string, record: OutboxRecord): Promise<void> {
		// Not idempotent ($push, $inc): a retryable write, applied at most once even when the driver retries it.
		await this.db.users.updateOne({ _id: userId }, { $push: { outbox: record }, $inc: { unpublished: 1 } });
	}

	/**
	 * Publishes an outbox event, then removes it from the user (compare-and-set
	 * on its presence). A failure leaves it for the relay; the caller goes on.
	 */
	async publish(emitter: Emitter, userId: string, record: OutboxRecord): Promise<boolean> {
		try {
			await publish(emitter, record.name, JSON.parse(unseal(record.sealedPayload, this.secrets.unsealWith)), {
				eventId: record.eventId,
				occurredAt: record.occurredAt,
			});
		} catch (err) {
			this.log.warn({ err, userId, event: record.name }, "event not published yet; the outbox relay will retry");
			return false;
		}
		const pulled = await this.db.users.updateOne(
			{ _id: userId, "outbox.eventId": record.eventId },
			{ $pull: { outbox: { eventId: record.eventId } }, $inc: { unpublished: -1 } },
		);
		// The last one out takes the count with it (unless another event came meanwhile): see `pending`.
		if (pulled === 1) await this.db.users.updateOne({ _id: userId, unpublished: 0 }, { $unset: { unpublished: true } });
		return true;
	}

	/**
	 * Users holding an event older than `quietBefore` that is not confirmed published. Found by the sparse
	 * `unpublished` index (stores.ts), which holds only users with events left: the count is removed
	 * when it comes back to 0.
	 */
	pending(quietBefore: Date): Promise<UserEntity[]> {
		return this.db.users.find({ query: { unpublished: { $gt: 0 }, "outbox.occurredAt": { $lt: quietBefore.toISOString() } }, limit: RELAY_BATCH });
	}

	/**
	 * Users an older Mint left with events to publish (its `pendingEvents` count, above 0) get them counted
	 * in `unpublished`, for the relay; at start, and a read of every user (the older field has no index:
	 * on SQLite about 0.6 s for 100,000 users). Spent counts (0) stay as they are, unread. How many moved.
	 */
	async adoptOlderCounts(): Promise<number> {
		let moved = 0;
		for (const user of await this.db.users.find({ query: { pendingEvents: { $gt: 0 } } })) {
			moved += await this.db.users.updateOne(
				{ _id: user._id, pendingEvents: user.pendingEvents },
				{ $inc: { unpublished: user.pendingEvents ?? 0 }, $unset: { pendingEvents: true } },
			);
		}
		return moved;
	}

	/** Publishes again a user's events older than `quietBefore` (younger ones are left to their own publisher); how many went out. */
	async relay(emitter: Emitter, user: UserEntity, quietBefore: Date): Promise<number> {
		let published = 0;
		for (const record of user.outbox ?? []) {
			if (record.occurredAt < quietBefore.toISOString() && (await this.publish(emitter, user._id, record))) published++;
		}
		return published;
	}
}
