/**
 * TRUSTED_PROXIES takes CIDR ranges (a compose network is 172.16.0.0/12):
 * behind a proxy in the range, the forwarded host passes the Origin check;
 * outside it, the forwarded headers are not believed.
 */
import { signup } from "../helpers/http";
import { startTestMint, type TestMint } from "../helpers/mint";

const behindProxy = (mint: TestMint, cookie: string) =>
	mint.http
		.post("/api/v1/transactions/topup")
		.set("Cookie", cookie)
		.set("Origin", "https://wallet.example.com")
		.set("X-Forwarded-Host", "wallet.example.com")
		.set("X-Forwarded-Proto", "https")
		.set("X-Forwarded-For", "198.51.100.7")
		.send({ amount: 1 });

describe.each([
	["127.0.0.0/8", 201],
	["::1/128, 127.0.0.0/8", 201],
	["10.0.0.0/8", 403],
])("TRUSTED_PROXIES=%s, the proxy at 127.0.0.1", (ranges, status) => {
	let mint: TestMint;
	beforeAll(async () => {
		mint = await startTestMint({ TRUSTED_PROXIES: ranges });
	});
	afterAll(() => mint.stop());

	it(`answers a cookie POST forwarded from the proxy's public origin with ${status}`, async () => {
		const alice = await signup(mint);
		const res = await behindProxy(mint, alice.cookie);
		expect(res.status).toBe(status);
		if (status === 403) expect(res.body).toEqual({ error: { message: "Origin not allowed", status: 403 } });
	});
});
