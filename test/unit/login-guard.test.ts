/** Login attempts counted before the check, per (account, IP) with growing delays, per IP; never a stranger's lock on the owner. */
import { LoginGuard } from "../../services/auth/login-guard";

const guard = (opts: Partial<ConstructorParameters<typeof LoginGuard>[0]> = {}) =>
	new LoginGuard({ maxPerPair: 3, maxPerIp: 100, windowSec: 60, firstDelaySec: 30, ...opts });

/** Status of each admit: "ok" or the Retry-After of the 429. */
async function attempts(g: LoginGuard, n: number, email = "ada@example.com", ip = "203.0.113.1"): Promise<(string | number)[]> {
	const out: (string | number)[] = [];
	for (let i = 0; i < n; i++) {
		out.push(
			await g.admit(email, ip).then(
				() => "ok",
				(err: { code: number; data: { retryAfter: number } }) => (err.code === 429 ? err.data.retryAfter : `error ${err.code}`),
			),
		);
	}
	return out;
}

describe("LoginGuard", () => {
	it("admits the pair's allowance, then answers 429 with the pair's delay", async () => {
		expect(await attempts(guard(), 5)).toEqual(["ok", "ok", "ok", 30, 30]);
	});

	it("counts parallel attempts atomically: 20 at once, only the allowance gets through", async () => {
		const g = guard();
		const results = await Promise.allSettled(Array.from({ length: 20 }, () => g.admit("ada@example.com", "203.0.113.1")));
		expect(results.filter(r => r.status === "fulfilled")).toHaveLength(3);
		expect(results.filter(r => r.status === "rejected" && (r.reason as { code: number }).code === 429)).toHaveLength(17);
	});

	it("never locks the owner out from another address", async () => {
		const g = guard();
		await attempts(g, 10, "ada@example.com", "198.51.100.66");
		expect(await attempts(g, 1, "ada@example.com", "203.0.113.1")).toEqual(["ok"]);
	});

	it("doubles the delay each time the pair is blocked again", async () => {
		const g = guard({ firstDelaySec: 1, windowSec: 60 });
		expect(await attempts(g, 4)).toEqual(["ok", "ok", "ok", 1]);
		await new Promise(r => setTimeout(r, 1100));
		expect(await attempts(g, 4)).toEqual(["ok", "ok", "ok", 2]);
	});

	it("a success forgets the pair and gives the IP its point back", async () => {
		const g = guard({ maxPerIp: 4 });
		await attempts(g, 2);
		await g.succeeded("ada@example.com", "203.0.113.1");
		// Without the reward the IP would be at 5 of 4; without forgetting, the pair at 5 of 3.
		expect(await attempts(g, 3)).toEqual(["ok", "ok", "ok"]);
	});

	it("limits one IP across accounts", async () => {
		const g = guard({ maxPerIp: 4 });
		const out = [];
		for (const email of ["a@x.io", "b@x.io", "c@x.io", "d@x.io", "e@x.io"]) out.push(...(await attempts(g, 1, email)));
		expect(out.slice(0, 4)).toEqual(["ok", "ok", "ok", "ok"]);
		expect(out[4]).toBeGreaterThan(55);
	});
});
