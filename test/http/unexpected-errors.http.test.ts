/**
 * An error nothing expected, inside an action, becomes a generic SPEC 500:
 * the client learns nothing internal, the operator gets a log line with the
 * request id and a count in mint_http_unexpected_errors_total.
 */
import { signup, type Session } from "../helpers/http";
import { startTestMint, type TestMint } from "../helpers/mint";

/** Fault injection from outside the product: wallet.mine throws what a broken disk would. */
const BrokenWallet = {
	name: "BrokenWallet",
	localAction(next: (ctx: unknown) => unknown, action: { name: string }) {
		if (action.name !== "wallet.mine") return next;
		return () => {
			throw new Error("EIO: i/o error, read /var/lib/mint/wallet/wallets.db");
		};
	},
};

let mint: TestMint;
let alice: Session;
beforeAll(async () => {
	mint = await startTestMint({}, [BrokenWallet]);
	alice = await signup(mint);
});
afterAll(() => mint.stop());

const unexpectedCount = () => (mint.broker.metrics.getMetric("mint.http.unexpected.errors.total")?.get()?.value as number | undefined) ?? 0;

it("answers a generic 500, logs the error with the request id and counts it", async () => {
	const api = mint.broker.getLocalService("api") as any;
	const logged = jest.spyOn(api.logger, "error");
	const before = unexpectedCount();

	const res = await mint.http.get("/api/v1/wallet/user").set("Cookie", alice.cookie).set("X-Request-Id", "req-broken-disk-1");

	expect([res.status, res.body]).toEqual([500, { error: { message: "Internal server error", status: 500 } }]);
	expect(JSON.stringify(res.body)).not.toContain("EIO");
	expect(unexpectedCount()).toBe(before + 1);
	expect(logged).toHaveBeenCalledWith(
		expect.objectContaining({ requestId: "req-broken-disk-1", err: expect.objectContaining({ message: expect.stringContaining("EIO") }) }),
		"request failed unexpectedly",
	);
	// Expected errors are not counted.
	expect((await mint.http.get("/api/v1/nope")).status).toBe(404);
	expect(unexpectedCount()).toBe(before + 1);
	expect((await mint.http.get("/api/v1/health")).status).toBe(200);
});
