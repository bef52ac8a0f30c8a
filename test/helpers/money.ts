/** Money scenario helpers: top up, transfer, and the ledger invariants that every money test ends with. */
import type { Session } from "./http";
import type { TestMint } from "./mint";

export function topUp(mint: TestMint, session: Session, amount: unknown, idempotencyKey?: string) {
	const req = mint.http.post("/api/v1/transactions/topup").set("Cookie", session.cookie);
	if (idempotencyKey !== undefined) req.set("Idempotency-Key", idempotencyKey);
	return req.send({ amount });
}

export function transfer(mint: TestMint, session: Session, amount: unknown, toUserId: unknown, idempotencyKey?: string) {
	const req = mint.http.post("/api/v1/transactions/transfer").set("Cookie", session.cookie);
	if (idempotencyKey !== undefined) req.set("Idempotency-Key", idempotencyKey);
	return req.send({ amount, toUserId });
}

export async function balanceOf(mint: TestMint, session: Session): Promise<number> {
	const res = await mint.http.get("/api/v1/wallet/user").set("Cookie", session.cookie);
	if (res.status !== 200) throw new Error(`wallet: ${res.status}`);
	return res.body.balance;
}

/** Fails the test with the violations listed when the ledger invariants do not hold. */
export async function expectInvariants(mint: TestMint): Promise<{ balancesMinor: number; completedTopUpsMinor: number }> {
	const report = await mint.broker.call<{ ok: boolean; violations: string[]; totals: any }>("wallet.checkInvariants");
	expect(report.violations).toEqual([]);
	expect(report.ok).toBe(true);
	return report.totals;
}
