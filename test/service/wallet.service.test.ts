/**
 * The wallet service through the broker: the user.signedUp consumer is
 * idempotent and refuses malformed events; wallet.mine answers in the
 * configured currency. A wallet-only Mint with CURRENCY=EUR, so the currency
 * can only have come from the config.
 */
import crypto from "node:crypto";
import type { WalletView } from "../../contracts/money";
import type { DbVars } from "../../mixins/db.mixin";
import type { WalletDoc } from "../../services/wallet/ledger";
import { startTestMint, type TestMint } from "../helpers/mint";

let mint: TestMint;
/** The wallet service's main collection, read directly. */
let wallet: DbVars<WalletDoc>;
beforeAll(async () => {
	mint = await startTestMint({ SERVICES: "wallet", CURRENCY: "EUR" });
	wallet = mint.broker.getLocalService("wallet") as unknown as DbVars<WalletDoc>;
});
afterAll(() => mint?.stop());

const signedUp = (userId: unknown, eventId: string = crypto.randomUUID()) => ({ eventId, occurredAt: new Date().toISOString(), userId });
/** Delivers an event to local handlers and waits for them; throwError surfaces a handler's (or validator's) error. */
const deliver = (payload: unknown, throwError = false) => mint.broker.broadcastLocal("user.signedUp", payload, { throwError });
const walletsOf = (userId: string) => wallet.adapter.find({ query: { userId } });
const createdEvents = (userId?: string) => mint.events.filter(e => e.name === "wallet.created" && (userId === undefined || e.params.userId === userId));
const mine = (userId: string): Promise<WalletView> => mint.broker.call("wallet.mine", {}, { meta: { user: { id: userId, sid: crypto.randomUUID() } } });

describe("user.signedUp consumer", () => {
	it("creates the wallet: balance 0 in the configured currency, announced by one wallet.created event", async () => {
		const userId = crypto.randomUUID();
		await deliver(signedUp(userId), true);
		const wallets = await walletsOf(userId);
		expect(wallets).toHaveLength(1);
		expect(wallets[0]).toMatchObject({ userId, balanceMinor: 0, currency: "EUR" });
		const events = createdEvents(userId);
		expect(events).toHaveLength(1);
		expect(events[0].params).toMatchObject({ walletId: wallets[0]._id, userId, currency: "EUR" });
	});

	it("a duplicated event (same eventId, delivered twice) creates one wallet and one wallet.created event", async () => {
		const userId = crypto.randomUUID();
		const event = signedUp(userId);
		await deliver(event, true);
		await deliver(event, true);
		expect(await walletsOf(userId)).toHaveLength(1);
		expect(createdEvents(userId)).toHaveLength(1);
	});

	it("5 concurrent deliveries of the same event create one wallet and one wallet.created event", async () => {
		const userId = crypto.randomUUID();
		const event = signedUp(userId);
		const results = await Promise.allSettled(Array.from({ length: 5 }, () => deliver(event, true)));
		expect(results.filter(r => r.status === "rejected")).toEqual([]);
		const wallets = await walletsOf(userId);
		expect(wallets).toHaveLength(1);
		const events = createdEvents(userId);
		expect(events).toHaveLength(1);
		expect(events[0].params.walletId).toBe(wallets[0]._id);
	});

	it.each([
		["userId not a uuid", { ...signedUp("not-a-uuid") }],
		["userId a query operator", { ...signedUp({ $ne: null }) }],
		["userId missing", { eventId: crypto.randomUUID(), occurredAt: new Date().toISOString() }],
		["eventId not a uuid", { ...signedUp(crypto.randomUUID(), "evt-1") }],
	])("refuses a malformed event (%s) before the handler runs: nothing is created", async (_label, payload) => {
		const walletsBefore = await wallet.adapter.count({});
		const eventsBefore = createdEvents().length;
		const err = await deliver(payload, true).then(
			() => null,
			e => e,
		);
		expect(err).toMatchObject({ name: "ValidationError", type: "VALIDATION_ERROR", code: 422 });
		expect(await wallet.adapter.count({})).toBe(walletsBefore);
		expect(createdEvents()).toHaveLength(eventsBefore);
	});

	it("keeps working after a malformed event: the next valid event still creates its wallet", async () => {
		const walletsBefore = await wallet.adapter.count({});
		// As a transporter delivers it: the error is logged, nothing is thrown at the sender.
		await expect(deliver(signedUp("not-a-uuid"))).resolves.toBeUndefined();
		expect(await wallet.adapter.count({ query: { userId: "not-a-uuid" } })).toBe(0);
		expect(await wallet.adapter.count({})).toBe(walletsBefore);

		const userId = crypto.randomUUID();
		await deliver(signedUp(userId), true);
		expect(await walletsOf(userId)).toHaveLength(1);
		expect(createdEvents(userId)).toHaveLength(1);
		expect(await mint.broker.call("wallet.health")).toEqual({ status: "ok", service: "wallet" });
	});
});

describe("wallet.mine", () => {
	it("returns the caller's wallet with balance 0 as a number, in the configured currency (EUR)", async () => {
		expect(mint.config.currency).toBe("EUR");
		const userId = crypto.randomUUID();
		const view = await mine(userId);
		expect(view).toEqual({ id: expect.any(String), userId, balance: 0, currency: "EUR", createdAt: expect.any(String), updatedAt: expect.any(String) });
		expect(typeof view.balance).toBe("number");
		// Created on demand (the signup event had not arrived), announced once, and the same wallet next time.
		expect(createdEvents(userId)).toHaveLength(1);
		expect((await mine(userId)).id).toBe(view.id);
		expect(await walletsOf(userId)).toHaveLength(1);
	});

	it("returns the wallet the signup event created, not a second one", async () => {
		const userId = crypto.randomUUID();
		await deliver(signedUp(userId), true);
		const [created] = createdEvents(userId);
		expect((await mine(userId)).id).toBe(created.params.walletId);
		expect(await walletsOf(userId)).toHaveLength(1);
	});

	it("converts the stored minor units to a major-unit number: 1250 -> 12.5", async () => {
		const userId = crypto.randomUUID();
		const { id } = await mine(userId);
		expect(await wallet.adapter.updateMany({ _id: id }, { $set: { balanceMinor: 1250 } })).toBe(1);
		const view = await mine(userId);
		expect(view.balance).toBe(12.5);
		expect(typeof view.balance).toBe("number");
		expect(view.currency).toBe("EUR");
	});
});
