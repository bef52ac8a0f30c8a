/**
 * The deployment secret (AUTH_SECRET) seals signing keys, outbox payloads and
 * mail variables at rest, and derives refresh-token successors. There is no
 * public default: without AUTH_SECRET a node generates a random one into
 * DATA_DIR/auth-secret (mode 0600, DATA_DIR 0700) and keeps it across
 * restarts. Production refuses to start without AUTH_SECRET (lib/config.ts).
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { Config } from "./config";

export interface NodeSecrets {
	/** Seals and derives. */
	current: string;
	/** Also tried when unsealing: the current one first, then AUTH_SECRET_PREVIOUS. */
	unsealWith: string[];
	/** Where a generated secret lives; undefined when AUTH_SECRET is set. */
	generatedFile?: string;
}

/** DATA_DIR, private to the node's user: created 0700, and tightened if it was not. */
export function ensurePrivateDataDir(dataDir: string): void {
	fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
	fs.chmodSync(dataDir, 0o700);
}

const generated = new Map<string, string>();

function generatedSecret(dataDir: string): string {
	const file = path.join(dataDir, "auth-secret");
	const known = generated.get(file);
	if (known) return known;
	ensurePrivateDataDir(dataDir);
	let secret: string;
	try {
		secret = fs.readFileSync(file, "utf8").trim();
	} catch (err) {
		if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
		secret = crypto.randomBytes(48).toString("base64url");
		try {
			// wx: two nodes (or services) starting at once on one DATA_DIR keep the first one's.
			fs.writeFileSync(file, `${secret}\n`, { mode: 0o600, flag: "wx" });
		} catch (raced) {
			if ((raced as NodeJS.ErrnoException).code !== "EEXIST") throw raced;
			secret = fs.readFileSync(file, "utf8").trim();
		}
	}
	if (secret.length < 32) throw new Error(`${file} holds a secret shorter than 32 characters`);
	generated.set(file, secret);
	return secret;
}

export function nodeSecrets(config: Config): NodeSecrets {
	const given = config.auth.secret;
	const current = given ?? generatedSecret(config.dataDir);
	return {
		current,
		unsealWith: [current, ...config.auth.previousSecrets],
		generatedFile: given === undefined ? path.join(config.dataDir, "auth-secret") : undefined,
	};
}
