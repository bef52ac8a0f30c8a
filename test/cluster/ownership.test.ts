/**
 * Over the real RabbitMQ: a stateful service on the embedded file store is
 * owned by one node of its namespace. A second node hosting it is refused,
 * one after the other or at the same moment; the lock goes with the owner's
 * stop; namespaces are independent; notifications nodes each own their
 * store; a lock connection RabbitMQ drops is taken again.
 */
import { execFile, execFileSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import { promisify } from "node:util";
import type { ServiceBroker } from "moleculer";
import { OwnershipLocks, ServiceOwnershipError, ownershipOf, type OwnershipLock } from "../../lib/service-ownership";
import { startMint } from "../../server";
import { RABBITMQ_URL, describeWithInfra, rabbitmqNeed, removeFromRabbitmq } from "../helpers/infra";
import { testConfig, waitFor } from "../helpers/mint";

const quiet = { info() {}, warn() {}, error() {} };

/** Everything a namespace left in RabbitMQ: Moleculer's exchanges and queues, the durable events' ones. */
async function removeNamespaceFromRabbitmq(namespaces: string[]): Promise<void> {
	const ours = (name: string) => namespaces.some(ns => name.startsWith(`MOL-${ns}.`) || name.startsWith(`${ns}.`));
	const names = async (what: string) => (await promisify(execFile)("rabbitmqctl", [what, "name", "-q", "--no-table-headers"])).stdout.split("\n").filter(ours);
	const [queues, exchanges] = await Promise.all([names("list_queues"), names("list_exchanges")]);
	await removeFromRabbitmq({ queues, exchanges });
}

/** Closes a connection from RabbitMQ's side, found by the name its client gave it. */
function closeConnectionNamed(name: string) {
	const line = execFileSync("rabbitmqctl", ["list_connections", "pid", "client_properties", "-q", "--no-table-headers"])
		.toString()
		.split("\n")
		.find(l => l.includes(`{"connection_name","${name}"}`));
	if (!line) throw new Error(`no RabbitMQ connection named ${name}`);
	execFileSync("rabbitmqctl", ["close_connection", line.split("\t")[0], "test: the lock connection drops"]);
}

describeWithInfra("one owner per stateful service on file stores", rabbitmqNeed(), () => {
	const namespace = `mint-test-${crypto.randomUUID().slice(0, 8)}`;
	const otherNamespace = `mint-test-${crypto.randomUUID().slice(0, 8)}`;
	const running: ServiceBroker[] = [];
	const dataDirs: string[] = [];

	const start = async (services: string, env: Record<string, string> = {}) => {
		const config = testConfig({
			TRANSPORTER: RABBITMQ_URL,
			NAMESPACE: namespace,
			SERVICES: services,
			NODE_ID: `${namespace}-${crypto.randomUUID().slice(0, 6)}`,
			...env,
		});
		dataDirs.push(config.dataDir);
		const broker = await startMint(config);
		running.push(broker);
		return broker;
	};
	const stop = async (broker: ServiceBroker) => {
		running.splice(running.indexOf(broker), 1);
		await broker.stop();
	};
	const refusal = (services: string, env: Record<string, string> = {}) =>
		start(services, env).then(
			() => "started",
			(err: Error) => err,
		);

	// A failed test leaves no owner behind for the next one.
	afterEach(async () => {
		for (const broker of running.splice(0)) await broker.stop();
	});

	afterAll(async () => {
		for (const dir of dataDirs) fs.rmSync(dir, { recursive: true, force: true });
		await removeNamespaceFromRabbitmq([namespace, otherNamespace]);
	});

	it("refuses a second wallet node, naming the service and MONGO_URI; the owner keeps it until it stops", async () => {
		const owner = await start("wallet");
		const refused = await refusal("wallet");
		expect(refused).toBeInstanceOf(ServiceOwnershipError);
		expect((refused as Error).message).toBe(
			`Cannot start wallet: another node in namespace "${namespace}" already hosts it on the embedded file store, and its data cannot be shared or split between nodes. ` +
				"Set MONGO_URI so that every node hosting wallet shares one database, or run wallet on one node only (SERVICES).",
		);
		// The refused node kept nothing: still refused, and the owner still owns.
		expect(await refusal("api,wallet")).toBeInstanceOf(ServiceOwnershipError);
		expect(ownershipOf(owner)?.held).toBe(true);

		await stop(owner);
		const next = await start("wallet");
		expect(ownershipOf(next)?.locks.map(l => l.queue)).toEqual([`${namespace}.owner.wallet`]);
		await stop(next);
	}, 30_000);

	it("names every service another node holds, and a different namespace is independent", async () => {
		const core = await start("auth,wallet,transactions");
		const refused = await refusal("api,transactions,wallet");
		expect((refused as Error).message).toMatch(/^Cannot start wallet and transactions: another node in namespace "[^"]+" already hosts them/);
		expect((refused as ServiceOwnershipError).refused.map(l => l.service).sort()).toEqual(["transactions", "wallet"]);

		const elsewhere = await start("auth,wallet,transactions", { NAMESPACE: otherNamespace, NODE_ID: `${otherNamespace}-core` });
		expect(ownershipOf(elsewhere)?.held).toBe(true);
		await stop(elsewhere);
		await stop(core);
	}, 30_000);

	it("lets exactly one of two wallet nodes started at the same moment win", async () => {
		const outcomes = await Promise.all([refusal("wallet"), refusal("wallet")]);
		expect(outcomes.filter(o => o === "started")).toHaveLength(1);
		expect(outcomes.filter(o => o instanceof ServiceOwnershipError)).toHaveLength(1);
		for (const broker of [...running]) await stop(broker);

		// The lock itself, raced harder: five contenders for the same two locks, three times; one wins each time, with both locks.
		const locks: OwnershipLock[] = ["auth", "wallet"].map(service => ({
			service: service as "auth" | "wallet",
			scope: "service",
			queue: `${namespace}.owner.${service}`,
		}));
		for (let round = 0; round < 3; round++) {
			const contenders = Array.from(
				{ length: 5 },
				(_, i) => new OwnershipLocks(RABBITMQ_URL, namespace, i % 2 ? [...locks].reverse() : locks, `race ${i}`, quiet, () => undefined),
			);
			const won = await Promise.all(
				contenders.map(c =>
					c.acquire().then(
						() => true,
						() => false,
					),
				),
			);
			expect(won.filter(Boolean)).toHaveLength(1);
			expect(contenders.filter(c => c.held)).toHaveLength(1);
			await Promise.all(contenders.map(c => c.release()));
		}
	}, 30_000);

	it("lets notifications nodes with their own DATA_DIR scale, and refuses one sharing another's records", async () => {
		const first = await start("notifications");
		const second = await start("notifications");
		const [firstLock, secondLock] = [first, second].map(b => ownershipOf(b)!.locks[0].queue);
		expect(firstLock).toMatch(new RegExp(`^${namespace}\\.owner\\.notifications\\.[0-9a-f-]{36}$`));
		expect(secondLock).not.toBe(firstLock);

		const sharedDir = dataDirs[dataDirs.length - 2];
		const refused = await refusal("notifications", { DATA_DIR: sharedDir });
		expect((refused as Error).message).toBe(
			`Cannot start notifications: another node in namespace "${namespace}" already uses its records in ${sharedDir}/notifications. ` +
				"Give each notifications node its own DATA_DIR, or set MONGO_URI so that they share one database.",
		);
		await stop(first);
		await stop(second);
	}, 30_000);

	it("takes its lock again when RabbitMQ drops the lock connection, and still refuses a second node", async () => {
		const owner = await start("wallet");
		const locks = ownershipOf(owner)!;
		closeConnectionNamed(`${namespace} ${owner.nodeID} ownership`);
		await waitFor(() => !locks.held, 5000);
		await waitFor(() => locks.held, 5000);
		expect(await refusal("wallet")).toBeInstanceOf(ServiceOwnershipError);
		await stop(owner);
	}, 30_000);
});
