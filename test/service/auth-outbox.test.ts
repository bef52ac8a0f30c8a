/** auth's outbox: a signup or reset whose event could not be published still gets its email event later. */
import { defineMiddleware } from "../../lib/middleware";
import { newPerson, signup } from "../helpers/http";
import { startTestMint, waitFor, type TestMint } from "../helpers/mint";

let mint: TestMint;
const refused: string[] = [];
// The event bus refuses each of these events once (e.g. RabbitMQ unavailable for a moment).
const flakyBus = defineMiddleware({
	emit(next) {
		return (event, payload: any, opts) => {
			if (["user.signedUp", "user.passwordResetRequested"].includes(event) && !refused.includes(payload.eventId)) {
				refused.push(payload.eventId);
				throw new Error("event bus unavailable");
			}
			return next(event, payload, opts);
		};
	},
});

beforeAll(async () => {
	mint = await startTestMint({}, [flakyBus]);
});
afterAll(() => mint.stop());

const auth = () => mint.broker.getLocalService("auth") as any;

it("signs up even when the welcome event cannot go out, and the relay sends it later with the same id", async () => {
	const session = await signup(mint, newPerson());
	expect(refused).toHaveLength(1);
	const stored = await auth().adapter.findOne({ _id: session.user.id });
	expect(stored.unpublished).toBe(1);
	expect(stored.outbox.map((r: any) => [r.name, r.eventId])).toEqual([["user.signedUp", refused[0]]]);
	// Sealed: the verification token is not readable in the stored outbox.
	expect(stored.outbox[0].sealedPayload).not.toContain("verificationToken");

	stored.outbox[0].occurredAt = new Date(Date.now() - 60_000).toISOString(); // as if it had waited
	await auth().adapter.updateMany({ _id: session.user.id }, { $set: { outbox: stored.outbox } });
	expect(await auth().relayOutbox()).toBe(1);
	const event = await waitFor(() => mint.events.find(e => e.name === "user.signedUp" && e.params.userId === session.user.id));
	expect(event.params.eventId).toBe(refused[0]);
	const verified = await mint.http.post("/api/v1/auth/verify-email").send({ token: event.params.verificationToken });
	expect(verified.status).toBe(200);
	const after = await auth().adapter.findOne({ _id: session.user.id });
	expect(after.outbox).toEqual([]);
	expect("unpublished" in after).toBe(false);
	expect(await auth().relayOutbox()).toBe(0);
});

it("leaves a fresh event to its own publisher (the relay waits before it re-sends)", async () => {
	const session = await signup(mint, newPerson());
	expect(await auth().relayOutbox()).toBe(0);
	expect((await auth().adapter.findOne({ _id: session.user.id })).unpublished).toBe(1);
});

it("keeps a reset request's event for the relay too", async () => {
	const session = await signup(mint, newPerson());
	const forgot = await mint.http.post("/api/v1/auth/password/forgot").send({ email: session.person.email });
	expect(forgot.status).toBe(202);
	// The reset is issued just after the answer (the answer takes the same time whether or not the account exists).
	const stored = await waitFor(async () => {
		const user = await auth().adapter.findOne({ _id: session.user.id });
		return user.outbox.some((r: any) => r.name === "user.passwordResetRequested") ? user : undefined;
	});
	const reset = stored.outbox.find((r: any) => r.name === "user.passwordResetRequested");
	await auth().adapter.updateMany(
		{ _id: session.user.id },
		{ $set: { outbox: stored.outbox.map((r: any) => ({ ...r, occurredAt: new Date(Date.now() - 60_000).toISOString() })) } },
	);
	expect(await auth().relayOutbox()).toBe(2); // the welcome from the first refusal and the reset
	const event = await waitFor(() => mint.events.find(e => e.name === "user.passwordResetRequested" && e.params.userId === session.user.id));
	expect(event.params.eventId).toBe(reset.eventId);
});
