/** No public secret: without AUTH_SECRET each DATA_DIR gets its own random one, private to the node's user. */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { loadConfig } from "../../lib/config";
import { nodeSecrets } from "../../lib/secrets";

const OLD_PUBLIC_PLACEHOLDER = "dev-only-insecure-secret-change-me";

describe("nodeSecrets", () => {
	const dirs: string[] = [];
	const freshDataDir = () => {
		const root = fs.mkdtempSync(path.join(os.tmpdir(), "mint-secret-"));
		dirs.push(root);
		return path.join(root, "data");
	};
	afterAll(() => {
		for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
	});

	it("generates a random secret into DATA_DIR/auth-secret (0600, DATA_DIR 0700) and keeps it", () => {
		const dataDir = freshDataDir();
		const first = nodeSecrets(loadConfig({ DATA_DIR: dataDir }));
		expect(first.current).toMatch(/^[A-Za-z0-9_-]{64}$/);
		expect(first.current).not.toBe(OLD_PUBLIC_PLACEHOLDER);
		expect(first.generatedFile).toBe(path.join(dataDir, "auth-secret"));
		expect(fs.statSync(path.join(dataDir, "auth-secret")).mode & 0o777).toBe(0o600);
		expect(fs.statSync(dataDir).mode & 0o777).toBe(0o700);
		expect(fs.readFileSync(path.join(dataDir, "auth-secret"), "utf8").trim()).toBe(first.current);
		expect(nodeSecrets(loadConfig({ DATA_DIR: dataDir })).current).toBe(first.current);
	});

	it("gives every DATA_DIR its own", () => {
		expect(nodeSecrets(loadConfig({ DATA_DIR: freshDataDir() })).current).not.toBe(nodeSecrets(loadConfig({ DATA_DIR: freshDataDir() })).current);
	});

	it("tightens a DATA_DIR an older version created 0755", () => {
		const dataDir = freshDataDir();
		fs.mkdirSync(dataDir, { mode: 0o755 });
		fs.chmodSync(dataDir, 0o755);
		nodeSecrets(loadConfig({ DATA_DIR: dataDir }));
		expect(fs.statSync(dataDir).mode & 0o777).toBe(0o700);
	});

	it("uses AUTH_SECRET when set, writing nothing, and unseals with AUTH_SECRET_PREVIOUS too", () => {
		const dataDir = freshDataDir();
		const secret = `${"a".repeat(20)}Zq81mWx0Tt3pLr7vK2`;
		const previous = `${"b".repeat(20)}Yq81mWx0Tt3pLr7vK2`;
		const secrets = nodeSecrets(loadConfig({ DATA_DIR: dataDir, AUTH_SECRET: secret, AUTH_SECRET_PREVIOUS: previous }));
		expect(secrets).toEqual({ current: secret, unsealWith: [secret, previous], generatedFile: undefined });
		expect(fs.existsSync(dataDir)).toBe(false);
	});
});
