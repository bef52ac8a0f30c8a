import { startTestMint, type TestMint } from "../helpers/mint";

let mint: TestMint;
beforeAll(async () => {
	mint = await startTestMint({ KEY_ROTATION_DAYS: "30" });
});
afterAll(() => mint.stop());

const auth = () => mint.broker.getLocalService("auth") as any;
const states = async () => ((await auth().stores.signingKeys.find({})) as { _id: string; state: string }[]).map(k => k.state).sort();

describe("scheduled key rotation (KEY_ROTATION_DAYS)", () => {
	it("leaves a young signing key alone", async () => {
		const kid = auth().signingKey.kid;
		await auth().rotateIfDue();
		expect(auth().signingKey.kid).toBe(kid);
		expect(await states()).toEqual(["current", "next"]);
	});

	it("rotates a signing key older than the period, once, even when two checks run together", async () => {
		const kid = auth().signingKey.kid;
		const next = (await auth().stores.signingKeys.find({ query: { state: "next" } }))[0]._id;
		await auth().stores.signingKeys.updateMany({ _id: kid }, { $set: { activatedAt: Date.now() - 31 * 86_400_000 } });
		await Promise.all([auth().rotateIfDue(), auth().rotateIfDue()]);
		expect(auth().signingKey.kid).toBe(next);
		expect(await states()).toEqual(["current", "next", "retired"]);
		expect(mint.events.filter(e => e.name === "auth.keysRotated").map(e => e.params.currentKid)).toEqual([next]);
	});
});
