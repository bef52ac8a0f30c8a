import { PasswordHasher } from "../../services/auth/passwords";

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
