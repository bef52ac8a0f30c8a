import { eventIdFor } from "../../lib/events";
import { replayHistory, transactionIdFor } from "../../services/transactions.service";

const at = "2026-01-01T00:00:00.000Z";

describe("replayHistory", () => {
	it("replays the recorded moves to the final state, with the failure reason", () => {
		expect(replayHistory([{ status: "Pending", at }])).toEqual({ status: "Pending" });
		expect(replayHistory([{ status: "Pending", at }, { status: "Processing", at }, { status: "Completed", at }])).toEqual({ status: "Completed" });
		expect(replayHistory([{ status: "Pending", at }, { status: "Processing", at }, { status: "Failed", at, reason: "Insufficient funds" }])).toEqual({
			status: "Failed",
			reason: "Insufficient funds",
		});
	});

	it.each([
		[["Processing"], "A history starts with Pending"],
		[["Pending", "Completed"], "Illegal move Pending -> Completed"],
		[["Pending", "Processing", "Completed", "Failed"], "Illegal move Completed -> Failed"],
		[["Pending", "Processing", "Processing"], "Illegal move Processing -> Processing"],
		[["Pending", "Processing", "Failed", "Completed"], "Illegal move Failed -> Completed"],
	])("refuses %j", (statuses, message) => {
		expect(() => replayHistory(statuses.map(status => ({ status: status as any, at })))).toThrow(message);
	});
});

describe("stable ids", () => {
	it("gives a user's Idempotency-Key one transaction id, and another user's the other", () => {
		expect(transactionIdFor("u1", "key")).toBe(transactionIdFor("u1", "key"));
		expect(transactionIdFor("u1", "key")).not.toBe(transactionIdFor("u2", "key"));
		expect(transactionIdFor("u1", "key")).not.toBe(transactionIdFor("u1", "key2"));
		expect(transactionIdFor("u1", "key")).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
	});

	it("does not let parts run into each other", () => {
		expect(eventIdFor("ab", "c")).not.toBe(eventIdFor("a", "bc"));
	});
});
