/**
 * The ownership lock with real processes (the built server, as `npm start`
 * runs it) over the real RabbitMQ: a refused node exits 2 with the message; a
 * SIGKILLed owner's lock is released at once, so its restart with the same
 * NODE_ID starts within seconds; an owner that lost its lock to another node
 * while cut off exits 1.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import amqp from "amqplib";
import { nodeOptions } from "../../lib/node-options";
import { RABBITMQ_URL, describeWithInfra, rabbitmqNeed, removeFromRabbitmq } from "../helpers/infra";
import { jsonLines } from "../helpers/json-lines";

const ROOT = path.resolve(__dirname, "../..");

interface Node {
	child: ChildProcess;
	output: () => string;
	exit: Promise<number | null>;
	/** Resolves when the node printed its start line; rejects if it exited first. */
	up: Promise<void>;
}

/** Everything a namespace left in RabbitMQ: Moleculer's exchanges and queues, the durable events' ones. */
async function removeNamespaceFromRabbitmq(namespace: string): Promise<void> {
	const ours = (name: string) => name.startsWith(`MOL-${namespace}.`) || name.startsWith(`${namespace}.`);
	const names = async (what: string) => (await promisify(execFile)("rabbitmqctl", [what, "name", "-q", "--no-table-headers"])).stdout.split("\n").filter(ours);
	const [queues, exchanges] = await Promise.all([names("list_queues"), names("list_exchanges")]);
	await removeFromRabbitmq({ queues, exchanges });
}

/**
 * A TCP proxy in front of RabbitMQ that can refuse new connections (those it
 * carries go on), so that a node cut off cannot connect again until the test says so.
 */
async function amqpProxy() {
	const upstream = new URL(RABBITMQ_URL);
	let refusing = false;
	const sockets = new Set<net.Socket>();
	const server = net.createServer(client => {
		if (refusing) return void client.destroy();
		const broker = net.connect(Number(upstream.port || 5672), upstream.hostname);
		for (const [from, to] of [
			[client, broker],
			[broker, client],
		]) {
			sockets.add(from);
			from.pipe(to);
			from.on("error", () => to.destroy());
			from.on("close", () => {
				sockets.delete(from);
				to.destroy();
			});
		}
	});
	await new Promise<void>(resolve => server.listen(0, "127.0.0.1", () => resolve()));
	const url = new URL(RABBITMQ_URL);
	url.host = `127.0.0.1:${(server.address() as net.AddressInfo).port}`;
	return {
		url: url.toString(),
		refuse(on: boolean) {
			refusing = on;
		},
		close: () => {
			for (const socket of sockets) socket.destroy();
			return new Promise(resolve => server.close(resolve));
		},
	};
}

describeWithInfra("the ownership lock across processes", rabbitmqNeed(), () => {
	const namespace = `mint-test-${crypto.randomUUID().slice(0, 8)}`;
	const nodeId = `${namespace}-core`;
	let build: string;
	const dataDirs: string[] = [];
	const nodes: Node[] = [];

	beforeAll(() => {
		// The server as `npm start` builds it (type-checking is CI's own step), into a folder of this test's own.
		build = fs.mkdtempSync(path.join(os.tmpdir(), "mint-ownership-build-"));
		execFileSync(process.execPath, [path.join(ROOT, "node_modules/typescript/bin/tsc"), "-p", ROOT, "--outDir", build, "--noCheck"], { stdio: "inherit" });
	}, 60_000);

	afterAll(async () => {
		for (const node of nodes) node.child.kill("SIGKILL");
		await Promise.all(nodes.map(n => n.exit));
		fs.rmSync(build, { recursive: true, force: true });
		for (const dir of dataDirs) fs.rmSync(dir, { recursive: true, force: true });
		await removeNamespaceFromRabbitmq(namespace);
	});

	const startNode = (env: Record<string, string> = {}): Node => {
		const dataDir = env.DATA_DIR ?? fs.mkdtempSync(path.join(os.tmpdir(), "mint-ownership-"));
		dataDirs.push(dataDir);
		const child = spawn(process.execPath, [...nodeOptions(), path.join(build, "server.js")], {
			cwd: ROOT,
			env: {
				PATH: process.env.PATH ?? "",
				NODE_PATH: path.join(ROOT, "node_modules"),
				TRANSPORTER: RABBITMQ_URL,
				NAMESPACE: namespace,
				SERVICES: "wallet",
				NODE_ID: nodeId,
				PORT: "0",
				LOG_LEVEL: "warn",
				...env,
				DATA_DIR: dataDir,
			},
		});
		let output = "";
		let started = () => {};
		const exit = new Promise<number | null>(resolve => child.on("exit", code => resolve(code)));
		const up = new Promise<void>((resolve, reject) => {
			started = resolve;
			exit.then(code => reject(new Error(`exited with ${code} before starting:\n${output}`)));
		});
		const read = (chunk: Buffer) => {
			output += chunk.toString();
			if (output.includes("Mint node is up")) started();
		};
		child.stdout.on("data", read);
		child.stderr.on("data", read);
		up.catch(() => undefined);
		const node = { child, output: () => output, exit, up };
		nodes.push(node);
		return node;
	};

	let owner: Node;

	it("refuses a second wallet process with the message, exit code 2", async () => {
		owner = startNode();
		await owner.up;
		const second = startNode({ NODE_ID: `${namespace}-second` });
		expect(await second.exit).toBe(2);
		expect(second.output()).toContain(`Cannot start wallet: another node in namespace "${namespace}" already hosts it on the embedded file store`);
		expect(second.output()).toContain("Set MONGO_URI");
	}, 30_000);

	it("releases the lock at once when the owner is SIGKILLed: its restart with the same NODE_ID starts within seconds", async () => {
		const dataDir = dataDirs[0];
		const probe = await amqp.connect(RABBITMQ_URL);
		probe.on("error", () => undefined);
		try {
			/** Whether the lock queue exists: a passive declare answers 405 while another connection holds it, 404 once it is gone. */
			const lockHeld = async () => {
				const channel = await probe.createChannel();
				channel.on("error", () => undefined);
				return channel.checkQueue(`${namespace}.owner.wallet`).then(
					() => channel.close().then(() => true),
					(err: { code?: number }) => err.code !== 404,
				);
			};
			expect(await lockHeld()).toBe(true);
			owner.child.kill("SIGKILL");
			await owner.exit;
			const killedAt = Date.now();
			while (await lockHeld()) await new Promise(r => setTimeout(r, 10));
			// RabbitMQ saw the socket close: no heartbeat to wait for.
			expect(Date.now() - killedAt).toBeLessThan(1000);
		} finally {
			await probe.close();
		}
		const restartedAt = Date.now();
		owner = startNode({ DATA_DIR: dataDir });
		await owner.up;
		// The node's own start included (loading the code, the stores, joining the cluster): about 1.5 s on an idle machine.
		expect(Date.now() - restartedAt).toBeLessThan(15_000);
	}, 30_000);

	it("exits 1 when another node took its lock while its lock connection was down", async () => {
		// This owner reaches RabbitMQ through a proxy the test can close to new connections.
		const proxy = await amqpProxy();
		const rival = await amqp.connect(RABBITMQ_URL);
		rival.on("error", () => undefined);
		try {
			const dataDir = dataDirs[0];
			owner.child.kill("SIGKILL");
			await owner.exit;
			owner = startNode({ DATA_DIR: dataDir, TRANSPORTER: proxy.url });
			await owner.up;

			// Cut off: RabbitMQ drops its lock connection, and it cannot connect again...
			proxy.refuse(true);
			const { stdout } = await promisify(execFile)("rabbitmqctl", ["list_connections", "pid", "client_properties", "-q", "--no-table-headers"]);
			const line = stdout.split("\n").find(l => l.includes(`{"connection_name","${namespace} ${nodeId} ownership"}`));
			expect(line).toBeDefined();
			await promisify(execFile)("rabbitmqctl", ["close_connection", line!.split("\t")[0], "test: cut off"]);
			// ...while another node takes the lock.
			const channel = await rival.createChannel();
			await channel.assertQueue(`${namespace}.owner.wallet`, { exclusive: true });
			proxy.refuse(false);

			expect(await owner.exit).toBe(1);
			const fatal = jsonLines(owner.output()).filter(l => l.level === 60);
			expect(fatal.map(l => l.msg)).toEqual([
				`Lost the ownership of wallet: another node in namespace "${namespace}" took it while this node was cut off from RabbitMQ. ` +
					"Stopping at once, so that two nodes do not write the same data; a restart takes it back once that node is gone, or is refused.",
			]);
		} finally {
			await rival.close();
			await proxy.close();
		}
	}, 30_000);
});
