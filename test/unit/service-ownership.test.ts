/**
 * Which services a node must own alone before it starts (lib/service-ownership.ts),
 * decided from the config without RabbitMQ: nothing embedded, nothing with
 * MONGO_URI, one lock per stateful service, one per notifications store.
 */
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { ServiceBroker } from "moleculer";
import { ConfigError } from "../../lib/config";
import { ServiceOwnershipError, ServiceOwnershipMiddleware, ownershipClaims, ownershipLocks, ownershipOf, storeIdOf } from "../../lib/service-ownership";
import { brokerOptions } from "../../moleculer.config";
import { testConfig } from "../helpers/mint";

const AMQP = "amqp://guest:guest@127.0.0.1:5672";
const MONGO = "mongodb://127.0.0.1:27017";

describe("which services a node must own alone", () => {
	const dirs: string[] = [];
	const config = (env: Record<string, string>) => {
		const made = testConfig(env);
		dirs.push(made.dataDir);
		return made;
	};
	afterAll(() => {
		for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
	});

	it("locks nothing in the embedded single process (no transporter)", () => {
		expect(ownershipClaims(config({}))).toEqual([]);
	});

	it("locks nothing with MONGO_URI: every instance shares one database", () => {
		expect(ownershipClaims(config({ TRANSPORTER: AMQP, MONGO_URI: MONGO }))).toEqual([]);
	});

	it("on file stores in the cluster: auth, wallet and transactions per namespace, notifications per store, never the gateway", () => {
		expect(ownershipClaims(config({ TRANSPORTER: AMQP }))).toEqual([
			{ service: "auth", scope: "service" },
			{ service: "wallet", scope: "service" },
			{ service: "transactions", scope: "service" },
			{ service: "notifications", scope: "store" },
		]);
		expect(ownershipClaims(config({ TRANSPORTER: AMQP, SERVICES: "api" }))).toEqual([]);
		expect(ownershipClaims(config({ TRANSPORTER: AMQP, SERVICES: "notifications,api,wallet" })).map(c => c.service)).toEqual(["wallet", "notifications"]);
	});

	it("names the locks after the namespace, and a notifications store after its own lasting id", () => {
		const node = config({ TRANSPORTER: AMQP, NAMESPACE: "prod", SERVICES: "wallet,notifications" });
		const locks = ownershipLocks(node);
		const store = path.join(node.dataDir, "notifications");
		const id = fs.readFileSync(path.join(store, "store-id"), "utf8").trim();
		expect(locks).toEqual([
			{ service: "wallet", scope: "service", queue: "prod.owner.wallet" },
			{ service: "notifications", scope: "store", queue: `prod.owner.notifications.${id}`, store },
		]);
		expect(fs.statSync(path.join(store, "store-id")).mode & 0o777).toBe(0o600);
		// The same store keeps its id; another DATA_DIR has another.
		expect(storeIdOf(store)).toBe(id);
		expect(ownershipLocks(config({ TRANSPORTER: AMQP, NAMESPACE: "prod", SERVICES: "notifications" }))[0].queue).not.toBe(locks[1].queue);
	});

	it("makes no store id where no lock is needed", () => {
		const embedded = config({ SERVICES: "notifications" });
		expect(ownershipLocks(embedded)).toEqual([]);
		expect(fs.existsSync(path.join(embedded.dataDir, "notifications", "store-id"))).toBe(false);
	});

	it("refuses like a configuration error, naming the service and what to do", () => {
		const refusal = new ServiceOwnershipError("mint", [
			{ service: "wallet", scope: "service", queue: "mint.owner.wallet" },
			{ service: "notifications", scope: "store", queue: "mint.owner.notifications.x", store: "/data/notifications" },
		]);
		expect(refusal).toBeInstanceOf(ConfigError);
		expect(refusal.message.split("\n")).toEqual([
			'Cannot start wallet: another node in namespace "mint" already hosts it on the embedded file store, and its data cannot be shared or split between nodes. ' +
				"Set MONGO_URI so that every node hosting wallet shares one database, or run wallet on one node only (SERVICES).",
			'Cannot start notifications: another node in namespace "mint" already uses its records in /data/notifications. ' +
				"Give each notifications node its own DATA_DIR, or set MONGO_URI so that they share one database.",
		]);
	});

	it("runs first among the broker's middlewares, so a refused node starts nothing", () => {
		const middlewares = brokerOptions(config({ TRANSPORTER: AMQP })).middlewares as { name?: string }[];
		expect(middlewares[0].name).toBe("ServiceOwnership");
	});

	it("with MONGO_URI, starts without ever connecting to the transporter for a lock", async () => {
		// A stand-in "RabbitMQ" that counts who connects to it.
		let connections = 0;
		const fake = net.createServer(socket => {
			connections++;
			socket.destroy();
		});
		await new Promise<void>(resolve => fake.listen(0, "127.0.0.1", () => resolve()));
		const transporter = `amqp://guest:guest@127.0.0.1:${(fake.address() as net.AddressInfo).port}`;
		try {
			for (const env of [{ MONGO_URI: MONGO }, {}] as Record<string, string>[]) {
				const node = config({ TRANSPORTER: transporter, SERVICES: "auth,wallet,transactions", ...env });
				// The middleware alone, on a broker without a transporter of its own.
				const broker = new ServiceBroker({ logger: false, middlewares: [ServiceOwnershipMiddleware(node)] });
				const started = broker.start().then(() => "started");
				const outcome = await Promise.race([started, new Promise(r => setTimeout(() => r("waiting"), 700))]);
				if (env.MONGO_URI) {
					expect(outcome).toBe("started");
					expect(ownershipOf(broker)).toBeUndefined();
					expect(connections).toBe(0);
					await broker.stop();
				} else {
					// Without it, the node insists on its lock (and waits for RabbitMQ, as the transporter does).
					expect(outcome).toBe("waiting");
					expect(connections).toBeGreaterThan(0);
					expect(ownershipOf(broker)?.held).toBe(false);
					// Stopped while it waits: it gives up, and the start fails.
					await broker.stop();
					await expect(started).rejects.toThrow("Stopped before taking the ownership locks");
				}
			}
		} finally {
			await new Promise(resolve => fake.close(resolve));
		}
	});
});
