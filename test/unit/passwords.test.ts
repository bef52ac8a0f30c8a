import { MemoryFailureThrottle, PasswordHasher, type FailureThrottle } from "../../services/auth/passwords";

describe("MemoryFailureThrottle", () => {
	const WINDOW_SEC = 60;
	const MAX = 3;

	function throttle() {
		let clock = 1_000_000;
		return { t: new MemoryFailureThrottle(WINDOW_SEC, () => clock), advance: (ms: number) => (clock += ms) };
	}
	const failTimes = async (t: FailureThrottle, key: string, n: number) => {
		for (let i = 0; i < n; i++) await t.fail(key);
	};

	it("does not block below the maximum number of failures", async () => {
		const { t } = throttle();
		await failTimes(t, "alice", MAX - 1);
		expect(await t.check("alice", MAX)).toEqual({ blocked: false, retryAfterSec: 0 });
	});

	it("blocks at the maximum with retryAfterSec equal to the rest of the window", async () => {
		const { t, advance } = throttle();
		await failTimes(t, "alice", MAX);
		expect(await t.check("alice", MAX)).toEqual({ blocked: true, retryAfterSec: 60 });
		advance(20_000);
		expect(await t.check("alice", MAX)).toEqual({ blocked: true, retryAfterSec: 40 });
		advance(500);
		expect(await t.check("alice", MAX)).toEqual({ blocked: true, retryAfterSec: 40 }); // 39.5 s rounds up
	});

	it("the window starts at the first failure, not the last", async () => {
		const { t, advance } = throttle();
		await t.fail("alice");
		advance(30_000);
		await failTimes(t, "alice", MAX - 1);
		expect(await t.check("alice", MAX)).toEqual({ blocked: true, retryAfterSec: 30 });
	});

	it("unblocks once the window has passed and starts counting afresh", async () => {
		const { t, advance } = throttle();
		await failTimes(t, "alice", MAX);
		advance(WINDOW_SEC * 1000 - 1);
		expect((await t.check("alice", MAX)).blocked).toBe(true);
		advance(1);
		expect(await t.check("alice", MAX)).toEqual({ blocked: false, retryAfterSec: 0 });
		await failTimes(t, "alice", MAX - 1);
		expect((await t.check("alice", MAX)).blocked).toBe(false);
	});

	it("clear() resets the count for that key only", async () => {
		const { t } = throttle();
		await failTimes(t, "alice", MAX);
		await failTimes(t, "bob", MAX);
		await t.clear("alice");
		expect(await t.check("alice", MAX)).toEqual({ blocked: false, retryAfterSec: 0 });
		expect((await t.check("bob", MAX)).blocked).toBe(true);
		await failTimes(t, "alice", MAX - 1);
		expect((await t.check("alice", MAX)).blocked).toBe(false);
	});

	it("keeps separate counts per key and honours the max passed to check", async () => {
		const { t } = throttle();
		await failTimes(t, "ip:1.2.3.4", 2);
		expect((await t.check("ip:1.2.3.4", 2)).blocked).toBe(true);
		expect((await t.check("ip:1.2.3.4", 3)).blocked).toBe(false);
		expect((await t.check("ip:5.6.7.8", 1)).blocked).toBe(false);
	});
});

describe("PasswordHasher", () => {
	const hasher = new PasswordHasher({ memoryCost: 19_456, timeCost: 2, parallelism: 1 });
	let hash: string;

	beforeAll(async () => {
		hash = await hasher.hash("correct horse battery staple");
	});

	it("produces an argon2id hash with m=19456, t=2, p=1 and a salt", async () => {
		// PHC string: $argon2id$v=19$<params in any order>$<salt>$<hash>
		const [empty, algorithm, version, params, salt, digest] = hash.split("$");
		expect([empty, algorithm, version]).toEqual(["", "argon2id", "v=19"]);
		expect(Object.fromEntries(params.split(",").map(kv => kv.split("=")))).toEqual({ m: "19456", t: "2", p: "1" });
		expect(Buffer.from(salt, "base64")).toHaveLength(16);
		expect(Buffer.from(digest, "base64")).toHaveLength(32);
		expect(await hasher.hash("correct horse battery staple")).not.toBe(hash);
	});

	it("verify is true for the right password and false for a wrong one", async () => {
		expect(await hasher.verify(hash, "correct horse battery staple")).toBe(true);
		expect(await hasher.verify(hash, "correct horse battery stapler")).toBe(false);
		expect(await hasher.verify(hash, "")).toBe(false);
	});

	it("verify is false, not an exception, for a malformed hash", async () => {
		expect(await hasher.verify("not-a-hash", "whatever")).toBe(false);
	});

	it("verifyNobody returns false, even for the dummy password it hashes internally", async () => {
		expect(await hasher.verifyNobody("anything")).toBe(false);
		expect(await hasher.verifyNobody("not-a-real-password-for-timing")).toBe(false);
	});
});
