/** Contract tests, producer side: every event Mint emits in a full scenario meets its contract. */
import os from "node:os";
import { DURABLE_SUBSCRIPTIONS, EVENT_CONTRACTS, type EventName } from "../../contracts/events";
import { checkEvent, publish } from "../../lib/events";
import createNotificationsService from "../../services/notifications.service";
import { newPerson, signup } from "../helpers/http";
import { startTestMint, testConfig, waitFor, type TestMint } from "../helpers/mint";
import { topUp, transfer } from "../helpers/money";

let mint: TestMint;
beforeAll(async () => {
	mint = await startTestMint();
});
afterAll(() => mint.stop());

it("every event of signup, verification, reset, logout, key rotation and money meets its contract", async () => {
	const alice = await signup(mint, newPerson());
	const bob = await signup(mint, newPerson());
	const token = (await waitFor(() => mint.events.find(e => e.name === "user.signedUp" && e.params.userId === alice.user.id))).params.verificationToken;
	expect((await mint.http.post("/api/v1/auth/verify-email").send({ token })).status).toBe(200);
	await mint.http.post("/api/v1/auth/password/forgot").send({ email: bob.person.email });
	expect((await topUp(mint, alice, 10)).status).toBe(201);
	expect((await transfer(mint, alice, 4, bob.user.id)).status).toBe(201);
	await mint.broker.call("transactions.transfer", { amount: 1 }, { meta: { user: { id: bob.user.id, sid: "s" } } }).catch(() => undefined);
	await mint.broker.call("auth.rotateKeys");
	expect((await mint.http.post("/api/v1/auth/logout").set("Cookie", bob.cookie)).status).toBe(204);

	const expected: EventName[] = [
		"user.signedUp",
		"user.emailVerified",
		"user.passwordResetRequested",
		"wallet.created",
		"wallet.credited",
		"wallet.debited",
		"transaction.created",
		"transaction.processing",
		"transaction.completed",
		"auth.keysRotated",
		"auth.sessionsRevoked",
	];
	const seen = await waitFor(() => {
		const names = new Set(mint.events.map(e => e.name));
		return expected.every(n => names.has(n)) ? names : undefined;
	});
	expect([...seen].sort()).toEqual(expect.arrayContaining(expected));
	for (const event of mint.events) {
		expect([event.name, checkEvent(event.name as EventName, event.params)]).toEqual([event.name, true]);
	}
	expect(new Set(mint.events.map(e => e.params.eventId)).size).toBe(mint.events.length);
});

describe("publish", () => {
	it("refuses to emit a payload that breaks its contract", async () => {
		const emitted: unknown[] = [];
		const emitter = { emit: (_name: string, payload: unknown) => void emitted.push(payload) };
		await expect(publish(emitter, "wallet.created", { walletId: "w", userId: "u", currency: "DOLLARS" })).rejects.toThrow(/wallet.created breaks its contract/);
		await expect(
			publish(emitter, "transaction.completed", { transactionId: "t", type: "TopUp", status: "Completed", amountMinor: 1.5, currency: "USD" }),
		).rejects.toThrow(/amountMinor/);
		expect(emitted).toEqual([]);
		const event = await publish(emitter, "wallet.created", { walletId: "w", userId: "u", currency: "USD" });
		expect(emitted).toEqual([event]);
		expect(Object.keys(EVENT_CONTRACTS)).toContain("wallet.created");
	});
});

describe("durable subscriptions", () => {
	it("the notifications service handles exactly the events its durable queue is bound to", () => {
		// The service declares its handlers as Moleculer events (in the cluster its durable queue feeds the same handlers): their keys are what it handles.
		const schema = createNotificationsService(testConfig({ DATA_DIR: os.tmpdir() }));
		expect(Object.keys(schema.events ?? {}).sort()).toEqual([...DURABLE_SUBSCRIPTIONS.notifications].sort());
	});
});
