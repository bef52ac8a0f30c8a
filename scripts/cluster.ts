/**
 * `npm run cluster`: a local Mint cluster on this machine, over the local
 * RabbitMQ and Redis. Four nodes, each the built `dist/server.js` as a child
 * process with its own NODE_ID and its own DATA_DIR under DATA_DIR
 * (default ./data/cluster/<node>):
 *
 *   gateway-1      api                          PORT      /api/v1
 *   gateway-2      api                          PORT+1    /api/v1
 *   core           auth, wallet, transactions   PORT+2    /health, /ready
 *   notifications  notifications                PORT+3    /health, /ready
 *
 * Exactly one core node: on the embedded file store a stateful service owns
 * its files, so it runs on one node only (with MONGO_URI it could run on more).
 *
 * Their logs are streamed with the node's name in front. A node that dies
 * after it was up is started again with the same NODE_ID and DATA_DIR, as a
 * supervisor would; one that cannot start stops the cluster (exit 1).
 * Ctrl-C (SIGINT) or SIGTERM stops every node; the command exits 0 when they
 * all stopped cleanly. A second Ctrl-C kills what is left.
 *
 * Variables: PORT (3000), HOST, NAMESPACE (mint), TRANSPORTER or AMQP_URL
 * (amqp://guest:guest@127.0.0.1:5672), REDIS_URL (redis://127.0.0.1:6379; set
 * it empty for none), DATA_DIR (./data/cluster), AUTH_SECRET (one for every
 * node; unset: generated once into DATA_DIR/auth-secret), PUBLIC_URL (gateway
 * 1), METRICS_PORT (node i gets METRICS_PORT+i); every other variable is
 * passed to every node and validated as the nodes validate it.
 */
import { spawn, type ChildProcess } from "node:child_process";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { ConfigError, loadConfig, type ServiceName } from "../lib/config";
import { nodeOptions } from "../lib/node-options";
import { nodeSecrets } from "../lib/secrets";

export const DEFAULT_TRANSPORTER = "amqp://guest:guest@127.0.0.1:5672";
export const DEFAULT_REDIS_URL = "redis://127.0.0.1:6379";

type Env = Record<string, string | undefined>;

export interface NodeSpec {
	name: string;
	services: readonly ServiceName[];
	/** The gateway's port, or the probe server's (/health, /ready) for the other nodes. */
	port: number;
	/** Where it answers: the gateway's API base, or the node's /ready probe. */
	url: string;
	/** The node's whole environment. */
	env: Record<string, string>;
}

export interface ClusterPlan {
	namespace: string;
	/** Host and port only: never the credentials. */
	rabbitmq: string;
	redis?: string;
	dataDir: string;
	nodes: NodeSpec[];
}

const NODES: readonly { name: string; services: readonly ServiceName[] }[] = [
	{ name: "gateway-1", services: ["api"] },
	{ name: "gateway-2", services: ["api"] },
	{ name: "core", services: ["auth", "wallet", "transactions"] },
	{ name: "notifications", services: ["notifications"] },
];

const hostPort = (url: string, defaultPort: number) => {
	const parsed = new URL(url);
	return { host: parsed.hostname.replace(/^\[|\]$/g, ""), port: Number(parsed.port || defaultPort) };
};

/** The nodes and their environments, from this process's environment. Throws ConfigError on a bad variable. */
export function clusterPlan(env: Env): ClusterPlan {
	const given = (name: string) => (env[name]?.trim() ? env[name] : undefined);
	const shared: Env = {
		...env,
		TRANSPORTER: given("TRANSPORTER") ?? given("AMQP_URL") ?? DEFAULT_TRANSPORTER,
		// Set but empty: no Redis (memory cache and limits in each node).
		REDIS_URL: env.REDIS_URL ?? DEFAULT_REDIS_URL,
		PORT: given("PORT") ?? "3000",
		DATA_DIR: given("DATA_DIR") ?? path.join("data", "cluster"),
	};
	// The same validation every node applies, once, before anything starts.
	const config = loadConfig(shared);
	if (!config.transporter) throw new ConfigError("TRANSPORTER", "must name the RabbitMQ the nodes talk over");
	if (config.port < 1 || config.port > 65535 - (NODES.length - 1)) {
		throw new ConfigError("PORT", `must leave room for the cluster's ${NODES.length} ports (PORT to PORT+${NODES.length - 1}), got ${config.port}`);
	}
	// Every node of a cluster has the same AUTH_SECRET: the one given, else one generated once into DATA_DIR/auth-secret.
	shared.AUTH_SECRET = nodeSecrets(config).current;
	const host = ["0.0.0.0", "::"].includes(config.host) ? "localhost" : config.host.includes(":") ? `[${config.host}]` : config.host;
	const nodes = NODES.map(({ name, services }, i): NodeSpec => {
		const port = config.port + i;
		const nodeEnv: Env = {
			...shared,
			SERVICES: services.join(","),
			PORT: String(port),
			NODE_ID: `${os.hostname()}-${name}`,
			DATA_DIR: path.join(config.dataDir, name),
			// The links in emails lead to gateway 1, whichever node writes them.
			PUBLIC_URL: config.publicUrl ?? `http://${host}:${config.port}`,
			...(config.metricsPort > 0 ? { METRICS_PORT: String(config.metricsPort + i) } : {}),
		};
		return {
			name,
			services,
			port,
			url: services.includes("api") ? `http://${host}:${port}/api/v1` : `http://${host}:${port}/ready`,
			env: Object.fromEntries(Object.entries(nodeEnv).filter((e): e is [string, string] => e[1] !== undefined)),
		};
	});
	const rabbitmq = hostPort(config.transporter, 5672);
	const redis = config.redisUrl ? hostPort(config.redisUrl, 6379) : undefined;
	return {
		namespace: config.namespace,
		rabbitmq: `${rabbitmq.host}:${rabbitmq.port}`,
		redis: redis && `${redis.host}:${redis.port}`,
		dataDir: config.dataDir,
		nodes,
	};
}

/** The line server.ts prints once a node serves: "Mint is up: <url>/api/v1 ..." or "Mint node is up ... (ready: <url>)". */
const UP_LINE = /^Mint (?:is up: (\S+)|node is up\b(?:.*\(ready: (\S+)\))?)/;

export interface RunningNode {
	spec: NodeSpec;
	child: ChildProcess;
	/** Resolves once the node printed that it is up, with the URL it printed (its API base or its /ready, "" for none); rejects if it exits first. */
	up: Promise<string>;
	/** Resolves once the process has exited and its output was read to the end. */
	exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts one node (`server.js` with the node's environment), passing each line it prints to `log`. */
export function launchNode(serverJs: string, spec: NodeSpec, log: (node: string, line: string) => void): RunningNode {
	const child = spawn(process.execPath, [...nodeOptions(), serverJs], { env: spec.env, stdio: ["ignore", "pipe", "pipe"] });
	const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>(resolve => {
		child.once("error", () => resolve({ code: null, signal: null }));
		child.once("close", (code, signal) => resolve({ code, signal }));
	});
	let markUp = (_url: string) => {};
	const up = new Promise<string>((resolve, reject) => {
		markUp = resolve;
		exited.then(({ code, signal }) => reject(new Error(`${spec.name} exited (${signal ?? `code ${code}`}) before it was up`)));
	});
	up.catch(() => undefined); // whoever needs it awaits it; an early exit is also reported through `exited`
	for (const stream of [child.stdout, child.stderr]) {
		readline.createInterface({ input: stream }).on("line", line => {
			log(spec.name, line);
			const upLine = UP_LINE.exec(line);
			if (upLine) markUp(upLine[1] ?? upLine[2] ?? "");
		});
	}
	return { spec, child, up, exited };
}

/** Restarts allowed per node within RESTART_WINDOW_MS before the cluster gives up. */
const MAX_RESTARTS = 5;
const RESTART_WINDOW_MS = 60_000;
const RESTART_DELAY_MS = 1000;
/** How long nodes get to stop on their own before they are killed. */
const STOP_GRACE_MS = 20_000;

/** Runs the nodes: restarts one that dies, stops all on request. */
export class LocalCluster {
	private readonly running = new Map<string, RunningNode>();
	private readonly restarts = new Map<string, number[]>();
	private readonly pendingRestarts = new Set<NodeJS.Timeout>();
	private stopping = false;
	private failed = false;
	private finish: (code: number) => void = () => {};

	constructor(
		private readonly serverJs: string,
		private readonly nodes: NodeSpec[],
		private readonly print: (line: string) => void,
	) {}

	/** Starts every node; resolves with the exit code once all have stopped. */
	run(onUp: () => void): Promise<number> {
		const done = new Promise<number>(resolve => (this.finish = resolve));
		const started = this.nodes.map(spec => this.start(spec));
		Promise.all(started.map(node => node.up)).then(
			() => !this.stopping && onUp(),
			() => undefined,
		);
		return done;
	}

	/** Stops every node (SIGTERM: each finishes its work and exits); a second call kills them. */
	stop(reason: string): void {
		if (this.stopping) {
			this.say(`${reason} again: killing the nodes`);
			this.failed = true;
			for (const node of this.running.values()) node.child.kill("SIGKILL");
			return;
		}
		this.stopping = true;
		this.say(`${reason}: stopping ${this.running.size} node(s)`);
		for (const timer of this.pendingRestarts) clearTimeout(timer);
		this.pendingRestarts.clear();
		for (const node of this.running.values()) node.child.kill("SIGTERM");
		setTimeout(() => {
			if (this.running.size === 0) return;
			this.say(`killing ${[...this.running.keys()].join(", ")}: still running after ${STOP_GRACE_MS / 1000} s`);
			this.failed = true;
			for (const node of this.running.values()) node.child.kill("SIGKILL");
		}, STOP_GRACE_MS).unref();
		this.finishIfIdle();
	}

	private start(spec: NodeSpec): RunningNode {
		const node = launchNode(this.serverJs, spec, (name, line) => this.print(`${name.padEnd(13)} | ${line}`));
		this.running.set(spec.name, node);
		this.say(`${spec.name} started (pid ${node.child.pid}): ${spec.services.join(", ")} on ${spec.url}`);
		let wasUp = false;
		node.up.then(
			() => (wasUp = true),
			() => undefined,
		);
		node.exited.then(({ code, signal }) => {
			this.running.delete(spec.name);
			const how = signal ? `signal ${signal}` : `code ${code}`;
			if (this.stopping) {
				// SIGINT straight from the terminal (Ctrl-C reaches the whole process group) may beat a node's own handler.
				const clean = code === 0 || signal === "SIGINT" || signal === "SIGTERM";
				if (!clean) this.failed = true;
				this.say(`${spec.name} stopped (${how})`);
			} else if (!wasUp) {
				this.failed = true;
				this.stop(`${spec.name} could not start (${how})`);
			} else if (this.mayRestart(spec.name)) {
				this.say(`${spec.name} exited (${how}); starting it again in ${RESTART_DELAY_MS / 1000} s with the same NODE_ID and DATA_DIR`);
				const timer = setTimeout(() => {
					this.pendingRestarts.delete(timer);
					if (!this.stopping) this.start(spec);
				}, RESTART_DELAY_MS);
				this.pendingRestarts.add(timer);
			} else {
				this.failed = true;
				this.stop(`${spec.name} exited ${MAX_RESTARTS} times within ${RESTART_WINDOW_MS / 1000} s (${how})`);
			}
			this.finishIfIdle();
		});
		return node;
	}

	private mayRestart(name: string): boolean {
		const now = Date.now();
		const recent = (this.restarts.get(name) ?? []).filter(at => now - at < RESTART_WINDOW_MS);
		recent.push(now);
		this.restarts.set(name, recent);
		return recent.length <= MAX_RESTARTS;
	}

	private finishIfIdle() {
		if (this.stopping && this.running.size === 0) this.finish(this.failed ? 1 : 0);
	}

	private say(message: string) {
		this.print(`${"cluster".padEnd(13)} | ${message}`);
	}
}

/** Can a TCP connection be opened to host:port (within 1.5 s)? */
function reachable(hostAndPort: string): Promise<boolean> {
	const at = hostAndPort.lastIndexOf(":");
	return new Promise(resolve => {
		const socket = net.connect(Number(hostAndPort.slice(at + 1)), hostAndPort.slice(0, at));
		const settle = (ok: boolean) => {
			socket.destroy();
			resolve(ok);
		};
		socket.setTimeout(1500);
		socket.once("connect", () => settle(true));
		socket.once("error", () => settle(false));
		socket.once("timeout", () => settle(false));
	});
}

async function main(): Promise<number> {
	let plan: ClusterPlan;
	try {
		plan = clusterPlan(process.env);
	} catch (err) {
		if (!(err instanceof ConfigError)) throw err;
		console.error(err.message);
		return 2;
	}
	for (const [what, at, variable] of [["RabbitMQ", plan.rabbitmq, "TRANSPORTER"], ...(plan.redis ? [["Redis", plan.redis, "REDIS_URL"]] : [])]) {
		if (!(await reachable(at))) {
			console.error(`Mint cluster: ${what} is not reachable at ${at}; start it, or point ${variable} at one`);
			return 1;
		}
	}
	const width = Math.max(...plan.nodes.map(n => n.name.length));
	console.log(
		[
			`Mint cluster "${plan.namespace}" over RabbitMQ at ${plan.rabbitmq}, ${plan.redis ? `Redis at ${plan.redis}` : "no Redis"}; data under ${plan.dataDir}`,
			...plan.nodes.map(n => `  ${n.name.padEnd(width)}  ${n.url.padEnd(32)}  ${n.services.join(", ")}`),
		].join("\n"),
	);
	const gateways = plan.nodes.filter(n => n.services.includes("api")).map(n => n.url);
	const cluster = new LocalCluster(path.join(__dirname, "..", "server.js"), plan.nodes, line => process.stdout.write(`${line}\n`));
	process.on("SIGINT", () => cluster.stop("SIGINT"));
	process.on("SIGTERM", () => cluster.stop("SIGTERM"));
	return cluster.run(() => console.log(`Mint cluster is up: ${gateways.join(" and ")} (Ctrl-C stops it)`));
}

if (require.main === module) {
	main().then(
		code => process.exit(code),
		err => {
			console.error("Mint cluster failed:", err instanceof Error ? err.message : err);
			process.exit(1);
		},
	);
}
