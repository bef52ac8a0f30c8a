/**
 * A node serves only once every local service has started: until then the
 * gateway answers 503 with Retry-After and /ready says "starting"; a node
 * without a gateway answers /health and /ready from its probe server.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ServiceBroker, type ServiceSchema } from "moleculer";
import request from "supertest";
import { loadConfig, type Config } from "../../lib/config";
import { probePortOf } from "../../lib/probe-server";
import { brokerOptions } from "../../moleculer.config";
import { createServices } from "../../services";
import { newPerson, signupBody } from "../helpers/http";
import { testConfig, waitFor } from "../helpers/mint";

/**
 * A node as `npm start` builds it, plus a local service whose start the test
 * holds back (as auth's key generation holds back a fresh node).
 */
function startHeldBack(config: Config) {
	let release!: () => void;
	const released = new Promise<void>(resolve => (release = resolve));
	const slow: ServiceSchema = { name: "slow-starter", started: () => released };
	const broker = new ServiceBroker(brokerOptions(config));
	for (const schema of [...createServices(config), slow]) broker.createService(schema);
	const started = broker.start();
	return { broker, started, release };
}

describe("a node that is still starting", () => {
	let broker: ServiceBroker | undefined;
	afterEach(async () => {
		await broker?.stop();
		broker = undefined;
	});

	it("gateway: 503 with Retry-After to everything but liveness and readiness, /ready names the node, then serves", async () => {
		const node = startHeldBack(testConfig());
		broker = node.broker;
		const server = await waitFor(() => {
			const api = node.broker.getLocalService("api") as any;
			return api?.server?.listening ? api.server : undefined;
		}, 10_000);
		const http = request(server);

		const signup = await http.post("/api/v1/auth/signup").send(signupBody(newPerson()));
		expect([signup.status, signup.body, signup.headers["retry-after"]]).toEqual([
			503,
			{ error: { message: "Mint is starting, try again shortly", status: 503 } },
			"2",
		]);
		const ready = await http.get("/api/v1/ready");
		expect([ready.status, ready.body.status, ready.body.checks.node, ready.headers["retry-after"]]).toEqual([503, "unavailable", "starting", "5"]);
		expect(ready.body.error).toEqual({ message: expect.stringMatching(/^Not ready: node/), status: 503 });
		expect((await http.get("/api/v1/health")).status).toBe(200);

		node.release();
		await node.started;
		expect((await http.post("/api/v1/auth/signup").send(signupBody(newPerson()))).status).toBe(201);
		const readyNow = await http.get("/ready");
		expect([readyNow.status, readyNow.body.checks.node]).toEqual([200, "ok"]);
	}, 30_000);

	it("a node without the gateway: its probe server answers /ready 503 while starting, then 200, and nothing else", async () => {
		const node = startHeldBack(testConfig({ SERVICES: "notifications" }));
		broker = node.broker;
		const port = await waitFor(() => probePortOf(node.broker), 10_000);
		const probe = (path: string) => fetch(`http://127.0.0.1:${port}${path}`);

		const starting = await probe("/ready");
		expect([starting.status, starting.headers.get("retry-after")]).toEqual([503, "5"]);
		expect(((await starting.json()) as { checks: { node: string } }).checks.node).toBe("starting");

		node.release();
		await node.started;
		const ready = await probe("/ready");
		expect([ready.status, await ready.json()]).toEqual([200, { status: "ready", checks: { node: "ok", notifications: "ok" } }]);
		const health = await probe("/health");
		expect([health.status, ((await health.json()) as { nodeID: string }).nodeID]).toEqual([200, node.broker.nodeID]);
		const other = await probe("/api/v1/auth/signup");
		expect([other.status, await other.json()]).toEqual([404, { error: { message: "Not found", status: 404 } }]);

		await node.broker.stop();
		broker = undefined;
		await expect(probe("/health")).rejects.toThrow();
	}, 30_000);
});

describe("nodes without the gateway on one host", () => {
	it("serve no probe unless PORT is set, so two of them started by hand do not contend for 3000", async () => {
		const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "mint-noport-"));
		const config = loadConfig({ NODE_ENV: "test", SERVICES: "wallet", DATA_DIR: dataDir, LOG_LEVEL: "warn" });
		const brokers = [new ServiceBroker({ ...brokerOptions(config), nodeID: "a" }), new ServiceBroker({ ...brokerOptions(config), nodeID: "b" })];
		try {
			for (const broker of brokers) {
				for (const schema of createServices(config)) broker.createService(schema);
				await broker.start();
				expect(probePortOf(broker)).toBeUndefined();
			}
		} finally {
			for (const broker of brokers) await broker.stop();
			fs.rmSync(dataDir, { recursive: true, force: true });
		}
	});
});
