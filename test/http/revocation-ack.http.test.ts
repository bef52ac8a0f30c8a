/**
 * A logout answers only once every gateway has acknowledged the revocation
 * (auth calls api.denySessions on each): even when the broadcast event is
 * lost, the very next request with the old access token is refused.
 */
import { defineMiddleware } from "../../lib/middleware";
import { signup } from "../helpers/http";
import { startTestMint, type TestMint } from "../helpers/mint";

// Fault injection: the gateway never hears auth.sessionsRevoked.
const deafToRevocations = defineMiddleware({
	localEvent(next, event) {
		return event.name === "auth.sessionsRevoked" ? async () => undefined : next;
	},
});

let mint: TestMint;
beforeAll(async () => {
	mint = await startTestMint({}, [deafToRevocations]);
});
afterAll(() => mint.stop());

it("refuses the logged-out access token at once, without the broadcast", async () => {
	const alice = await signup(mint);
	const bearer = `Bearer ${alice.access}`;
	expect((await mint.http.get("/api/v1/wallet/user").set("Authorization", bearer)).status).toBe(200);
	expect((await mint.http.post("/api/v1/auth/logout").set("Cookie", alice.cookie)).status).toBe(204);
	expect((await mint.http.get("/api/v1/wallet/user").set("Authorization", bearer)).status).toBe(401);
});

it("a logout-all's revocations are acknowledged too", async () => {
	const bob = await signup(mint);
	const bearer = `Bearer ${bob.access}`;
	expect((await mint.http.post("/api/v1/auth/logout-all").set("Cookie", bob.cookie)).status).toBe(204);
	expect((await mint.http.get("/api/v1/auth/user").set("Authorization", bearer)).body).toBeNull();
});
