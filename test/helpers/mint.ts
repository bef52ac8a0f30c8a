/**
 * Builds a whole embedded Mint for a test: its own temp DATA_DIR, a random
 * port, 2048-bit keys (the allowed minimum, for speed), and an event
 * recorder so tests can read what was emitted (e.g. the verification token
 * the signup email would carry).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { ServiceBroker } from "moleculer";
import type request from "supertest";
import { loadConfig, type Config } from "../../lib/config";
import { startMint } from "../../server";
import { browserAgent } from "./http";

export interface RecordedEvent {
	name: string;
	params: any;
}

export interface TestMint {
	broker: ServiceBroker;
	config: Config;
	http: ReturnType<typeof request>;
	server: any;
	events: RecordedEvent[];
	dataDir: string;
	stop(opts?: { keepData?: boolean }): Promise<void>;
}

/** Tests sign up and search far more from one address than a person does; the limits' own tests set them low. */
const GENEROUS_LIMITS = {
	SIGNUPS_PER_IP_HOUR: "100000",
	SIGNUPS_PER_EMAIL_HOUR: "100000",
	RESET_EMAILS_PER_ADDRESS_HOUR: "100000",
	RESET_EMAILS_PER_IP_HOUR: "100000",
	SEARCHES_PER_USER_MINUTE: "100000",
};

export function testConfig(env: Record<string, string> = {}): Config {
	const dataDir = env.DATA_DIR ?? fs.mkdtempSync(path.join(os.tmpdir(), "mint-test-"));
	return loadConfig({
		NODE_ENV: "test",
		PORT: "0",
		JWT_KEY_BITS: "2048",
		LOG_LEVEL: process.env.LOG_LEVEL ?? "warn",
		// The embedded engine the suite runs on (EMBEDDED_STORE=sqlite npm test runs it on SQLite).
		EMBEDDED_STORE: process.env.EMBEDDED_STORE ?? "nedb",
		...GENEROUS_LIMITS,
		...env,
		DATA_DIR: dataDir,
	});
}

const RECORDED = [
	"user.signedUp",
	"user.passwordResetRequested",
	"user.emailVerified",
	"wallet.created",
	"wallet.credited",
	"wallet.debited",
	"auth.sessionsRevoked",
	"auth.keysRotated",
	"transaction.created",
	"transaction.processing",
	"transaction.completed",
	"transaction.failed",
];

export async function startTestMint(env: Record<string, string> = {}, middlewares: any[] = []): Promise<TestMint> {
	const config = testConfig(env);
	const events: RecordedEvent[] = [];
	const broker = await startMint(
		config,
		[
			{
				name: "test-event-recorder",
				events: Object.fromEntries(RECORDED.map(name => [name, (ctx: any) => void events.push({ name, params: ctx.params })])),
			},
		],
		middlewares,
	);
	const api = broker.getLocalService("api") as any;
	const server = api?.server;
	return {
		broker,
		config,
		server,
		http: browserAgent(server),
		events,
		dataDir: config.dataDir,
		async stop(opts = {}) {
			await broker.stop();
			if (!opts.keepData) fs.rmSync(config.dataDir, { recursive: true, force: true });
		},
	};
}

/** Runs of an action on this node, whoever called it (Moleculer's request counter; the gateway's own cached answers count as api.rest). */
export function actionRuns(broker: ServiceBroker, action: string): number {
	const metric = broker.metrics.getMetric("moleculer.request.total") as unknown as { values: Map<string, { labels: { action: string }; value: number }> };
	return [...metric.values.values()].filter(item => item.labels.action === action).reduce((sum, item) => sum + item.value, 0);
}

export async function waitFor<T>(probe: () => T | undefined | Promise<T | undefined>, timeoutMs = 3000): Promise<T> {
	const deadline = Date.now() + timeoutMs;
	for (;;) {
		const value = await probe();
		if (value !== undefined && value !== null && value !== false) return value as T;
		if (Date.now() > deadline) throw new Error("waitFor: timed out");
		await new Promise(r => setTimeout(r, 20));
	}
}
