/**
 * Tests that need a real service (RabbitMQ, Redis, MongoDB...) ask for it
 * here. Missing: the tests are skipped with the reason printed, except under
 * REQUIRE_INFRA=1 (CI), where a missing service fails the run.
 */
import { execFileSync } from "node:child_process";
import Redis from "ioredis";

const PROBE = `const s=require("net").connect(+process.argv[2],process.argv[1]);s.setTimeout(1500);s.on("connect",()=>process.exit(0));s.on("error",()=>process.exit(1));s.on("timeout",()=>process.exit(1));`;

/** A synchronous TCP probe, so a test file can choose describe or describe.skip at load time. */
export function tcpReachable(host: string, port: number): boolean {
	try {
		execFileSync(process.execPath, ["-e", PROBE, host, String(port)], { stdio: "ignore", timeout: 5000 });
		return true;
	} catch {
		return false;
	}
}

/**
 * `describe` when the service is there; otherwise a skipped describe with the
 * reason printed, or (REQUIRE_INFRA=1) a failing test naming what is missing.
 */
export function describeWithInfra(title: string, need: { name: string; available: boolean; required?: boolean }, body: () => void): void {
	if (need.available) {
		describe(title, body);
		return;
	}
	const reason = `${need.name} is not available`;
	if (process.env.REQUIRE_INFRA === "1" && need.required !== false) {
		describe(title, () => {
			it(`needs ${need.name}`, () => {
				throw new Error(`${reason} and REQUIRE_INFRA=1`);
			});
		});
		return;
	}
	// Straight to stderr: Jest drops the console output of a file whose tests are all skipped.
	process.stderr.write(`SKIPPED "${title}": ${reason}\n`);
	describe.skip(`${title} (skipped: ${reason})`, body);
}

/** The RabbitMQ the cluster tests use (AMQP_URL, else the machine's own). */
export const RABBITMQ_URL = process.env.AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672";

export function rabbitmqNeed(): { name: string; available: boolean } {
	const url = new URL(RABBITMQ_URL);
	return { name: `RabbitMQ at ${url.host}`, available: tcpReachable(url.hostname, Number(url.port || 5672)) };
}

/** Leaves nothing of a test behind in the shared RabbitMQ. */
export async function removeFromRabbitmq(what: { queues?: string[]; exchanges?: string[] }): Promise<void> {
	const { default: amqp } = await import("amqplib");
	const connection = await amqp.connect(RABBITMQ_URL);
	const channel = await connection.createChannel();
	for (const queue of what.queues ?? []) await channel.deleteQueue(queue);
	for (const exchange of what.exchanges ?? []) await channel.deleteExchange(exchange);
	await connection.close();
}

/** Deletes every Redis key that contains one of `tokens` (a test's namespace, client address, user ids): what a test left there. */
export async function removeFromRedis(redisUrl: string, tokens: string[]): Promise<void> {
	const redis = new Redis(redisUrl);
	try {
		const keys: string[] = [];
		for (let cursor = "0"; ; ) {
			const [next, batch] = await redis.scan(cursor, "COUNT", 1000);
			keys.push(...batch.filter(key => tokens.some(token => key.includes(token))));
			cursor = next;
			if (cursor === "0") break;
		}
		if (keys.length) await redis.del(...keys);
	} finally {
		redis.disconnect();
	}
}
