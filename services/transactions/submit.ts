/**
 * From a request to a transaction: the amount from the wire, idempotency
 * (like Stripe's), the request-time checks, the insert, and the creator's
 * drive within the synchronous wait.
 *
 * Idempotency: the same user and Idempotency-Key always name the same
 * transaction id, so the insert itself dedupes, even when two requests race.
 * A key seen before answers with its transaction (replayed) if the request
 * is the same, 422 if not; money moves once either way.
 */
import crypto from "node:crypto";
import type { Logger } from "moleculer";
import type { SubmitResult } from "../../contracts/money";
import { businessRule, notFound, validationError } from "../../lib/errors";
import { eventIdFor } from "../../lib/events";
import { parseMajorAmount } from "../../lib/money";
import { isDuplicateKeyError, type Store } from "../../mixins/db.mixin";
import { Announced, type TransactionOutbox } from "./outbox";
import { INSUFFICIENT_FUNDS, type TransactionProcessor } from "./processing";
import { isFinal } from "./state-machine";
import { partiesOf, toTransactionView, type TransactionDraft, type TransactionEntity } from "./views";

const IDEMPOTENCY_KEY = /^[\x20-\x7e]{1,255}$/;

/** The amount from the wire, as minor units, or a 400 naming the field. */
export function amountMinorOf(value: unknown, maxMinor: number): number {
	const parsed = parseMajorAmount(value, maxMinor);
	if (!parsed.ok) throw validationError([{ path: "amount", message: `The amount ${parsed.reason}` }]);
	return parsed.minor;
}

export function topUpDraft(amount: unknown, userId: string, maxMinor: number): TransactionDraft {
	return { type: "TopUp", amountMinor: amountMinorOf(amount, maxMinor), userId, requestedBy: userId };
}

export function transferDraft(amount: unknown, fromUserId: string, toUserId: string, maxMinor: number): TransactionDraft {
	const amountMinor = amountMinorOf(amount, maxMinor);
	if (toUserId === fromUserId) throw validationError([{ path: "toUserId", message: "You cannot send money to yourself" }]);
	return { type: "Transfer", amountMinor, fromUserId, toUserId, requestedBy: fromUserId };
}

/** The Idempotency-Key header, if sent, is 1-255 printable characters. */
export function checkIdempotencyKey(idempotencyKey: string | undefined): void {
	if (idempotencyKey !== undefined && !IDEMPOTENCY_KEY.test(idempotencyKey)) {
		throw validationError([{ path: "Idempotency-Key", message: "The Idempotency-Key header must be 1-255 printable characters" }]);
	}
}

/** The same user and Idempotency-Key always name the same transaction: the insert itself dedupes. */
export const transactionIdFor = (userId: string, idempotencyKey: string): string => eventIdFor("transaction", userId, idempotencyKey);

/** What makes two requests under one Idempotency-Key "the same request". */
export const requestHashOf = (draft: TransactionDraft): string =>
	crypto
		.createHash("sha256")
		.update(JSON.stringify({ type: draft.type, amountMinor: draft.amountMinor, toUserId: draft.toUserId ?? null }))
		.digest("hex");

/** A repeated request under a key already used: its original transaction, or 422 if the request differs. */
export function replayOf(tx: TransactionEntity, requestHash: string): SubmitResult {
	if (tx.requestHash !== requestHash) throw businessRule("This Idempotency-Key was already used with a different request");
	return { transaction: toTransactionView(tx), replayed: true, final: isFinal(tx.status) };
}

/**
 * A new transaction, Pending, its creation recorded and counted in the outbox; no undefined fields stored.
 * The key and the request's hash only with an Idempotency-Key (nothing else replays a transaction);
 * who asked is the key's scope, already in its id, and the top-up's user or the sender anyway.
 */
export function newTransaction(
	id: string,
	draft: TransactionDraft,
	fields: { currency: string; idempotencyKey?: string; requestHash: string; leaseUntil: number; now: string },
): TransactionEntity {
	const { currency, idempotencyKey, requestHash, leaseUntil, now } = fields;
	const { requestedBy: _asker, ...asked } = draft;
	const tx: TransactionEntity = {
		_id: id,
		...asked,
		parties: partiesOf(draft),
		status: "Pending",
		currency,
		...(idempotencyKey !== undefined ? { idempotencyKey, requestHash } : {}),
		leaseUntil,
		unpublished: 1,
		history: [{ status: "Pending", at: now }],
		createdAt: now,
		updatedAt: now,
	};
	for (const key of Object.keys(tx) as (keyof TransactionEntity)[]) if (tx[key] === undefined) delete tx[key];
	return tx;
}

/** The request-time checks of a transfer, made on the caller's request. */
export interface TransferChecks {
	recipientExists(userId: string): Promise<boolean>;
	balanceOf(userId: string): Promise<number>;
}

export interface SubmitDeps {
	store: Store<TransactionEntity>;
	outbox: TransactionOutbox;
	processor: TransactionProcessor;
	logger: Pick<Logger, "error">;
	currency: string;
	/** The answer waits this long for the final state (201), else answers the current one (202). */
	syncWaitMs: number;
}

const sleep = (ms: number) => new Promise<void>(resolve => setTimeout(resolve, ms).unref());

export class TransactionSubmitter {
	constructor(private readonly deps: SubmitDeps) {}

	async submit(draft: TransactionDraft, idempotencyKey: string | undefined, checks: TransferChecks): Promise<SubmitResult> {
		const { store, outbox, processor } = this.deps;
		checkIdempotencyKey(idempotencyKey);
		const requestHash = requestHashOf(draft);
		const id = idempotencyKey === undefined ? crypto.randomUUID() : transactionIdFor(draft.requestedBy, idempotencyKey);

		// A key seen before answers with its transaction, before any request-time check.
		const seen = idempotencyKey === undefined ? null : await store.findOne({ _id: id });
		if (seen) return replayOf(seen, requestHash);

		if (draft.type === "Transfer") {
			if (!draft.toUserId || !(await checks.recipientExists(draft.toUserId))) throw notFound("Recipient not found");
			if (!draft.fromUserId || (await checks.balanceOf(draft.fromUserId)) < draft.amountMinor) throw businessRule(INSUFFICIENT_FUNDS);
		}

		const tx = newTransaction(id, draft, {
			currency: this.deps.currency,
			idempotencyKey,
			requestHash,
			leaseUntil: processor.leaseFromNow(),
			now: new Date().toISOString(),
		});
		try {
			await store.insert(tx);
		} catch (err) {
			// The same key raced us: answer with the winner's transaction.
			const winner = isDuplicateKeyError(err) ? await store.findOne({ _id: id }) : null;
			if (!winner) throw err;
			return replayOf(winner, requestHash);
		}
		const announced = new Announced();
		await outbox.announceRecorded(tx, tx.history[0], announced);

		// The creator holds the lease: drive it now, answer with the final state if it ends in time.
		const driving = processor.drive(id, tx, announced).catch((err: unknown) => {
			this.deps.logger.error({ err, transactionId: id }, "transaction processing failed; the sweeper will re-drive it");
			return null;
		});
		const driven = await Promise.race([driving, sleep(this.deps.syncWaitMs).then(() => null)]);
		// What the driver recorded last is what the store holds; otherwise (still going, or failed) read it.
		const current = driven && isFinal(driven.status) ? driven : await store.findOne({ _id: id });
		if (!current) throw notFound("Transaction not found");
		return { transaction: toTransactionView(current), replayed: false, final: isFinal(current.status) };
	}
}
