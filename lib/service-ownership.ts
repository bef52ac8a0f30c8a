/**
 * Safe scale-out: a stateful service on the embedded file store owns its files.
 *
 * auth, wallet and transactions keep their data in DATA_DIR's files when no
 * MONGO_URI is set. Two nodes hosting one of them in a namespace would each
 * keep their own copy (a ledger split in two), so in the cluster such a node
 * takes a cluster-wide lock through RabbitMQ before its services start: an
 * exclusive queue `<namespace>.owner.<service>` declared on a connection of
 * its own. RabbitMQ lets one connection hold an exclusive queue (a second
 * declaration is refused with 405 RESOURCE_LOCKED, whatever machine it comes
 * from, and of two at once exactly one wins) and deletes it when that
 * connection closes: when the node stops, or its process dies (at once), or
 * its machine does (missed heartbeats, within seconds).
 *
 * notifications scales by adding nodes: each message of its durable queue
 * goes to one node, which records and sends its emails. On file stores each
 * node must keep its own delivery records, so its lock is on the store, not
 * the service: `<namespace>.owner.notifications.<store id>`, the store id
 * being a random id kept in DATA_DIR/notifications. Two nodes sharing one
 * DATA_DIR (or a copy of it, pending emails included) would both send the
 * same emails: the second is refused.
 *
 * Without a transporter (one process) there is nothing to share; with
 * MONGO_URI every node shares one database and any service may run many
 * instances: no lock.
 *
 * A lock connection that drops while the node runs is reopened and the locks
 * taken again. If another node took one meanwhile, this node exits (1) at
 * once rather than keep writing beside the new owner: its supervisor's
 * restart either takes the lock back (the other is gone) or is refused with
 * the message below (exit 2).
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import amqp from "amqplib";
import type { Middleware, ServiceBroker } from "moleculer";
import { ALL_SERVICES, ConfigError, type Config, type ServiceName } from "./config";
import { defineMiddleware } from "./middleware";

/** Services whose data must live in one place: one node per namespace on file stores. */
const OWNED_BY_ONE_NODE: readonly ServiceName[] = ["auth", "wallet", "transactions"];
/** Services that scale on file stores, each node with its own store: one node per store. */
const OWNED_PER_STORE: readonly ServiceName[] = ["notifications"];

/** RabbitMQ's reply code when an exclusive queue is held by another connection. */
const RESOURCE_LOCKED = 405;
const HEARTBEAT_SEC = 5;

export interface OwnershipClaim {
	service: ServiceName;
	/** "service": one node in the namespace; "store": one node per DATA_DIR store. */
	scope: "service" | "store";
}

/** What this node must own alone before its services start; nothing embedded or with MONGO_URI. */
export function ownershipClaims(config: Pick<Config, "transporter" | "mongoUri" | "services">): OwnershipClaim[] {
	if (!config.transporter || config.mongoUri) return [];
	return ALL_SERVICES.filter(service => config.services.includes(service)).flatMap((service): OwnershipClaim[] => {
		if (OWNED_BY_ONE_NODE.includes(service)) return [{ service, scope: "service" }];
		if (OWNED_PER_STORE.includes(service)) return [{ service, scope: "store" }];
		return [];
	});
}

/** A claim as a lock: the exclusive queue that stands for it. */
export interface OwnershipLock extends OwnershipClaim {
	queue: string;
	/** For a store-scoped lock: the service's folder in DATA_DIR. */
	store?: string;
}

/** The random id of a service's store in DATA_DIR, made on first use (two nodes starting at once on one DATA_DIR keep the first one's). */
export function storeIdOf(dir: string): string {
	fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
	const file = path.join(dir, "store-id");
	let id: string;
	try {
		id = fs.readFileSync(file, "utf8").trim();
	} catch (err) {
		if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
		id = crypto.randomUUID();
		try {
			fs.writeFileSync(file, `${id}\n`, { mode: 0o600, flag: "wx" });
		} catch (raced) {
			if ((raced as NodeJS.ErrnoException).code !== "EEXIST") throw raced;
			id = fs.readFileSync(file, "utf8").trim();
		}
	}
	if (!/^[0-9a-f-]{36}$/.test(id)) throw new Error(`${file} does not hold a store id; remove it and start again`);
	return id;
}

export function ownershipLocks(config: Pick<Config, "transporter" | "mongoUri" | "services" | "namespace" | "dataDir">): OwnershipLock[] {
	return ownershipClaims(config).map(claim => {
		const queue = `${config.namespace}.owner.${claim.service}`;
		if (claim.scope === "service") return { ...claim, queue };
		const store = path.join(config.dataDir, claim.service);
		return { ...claim, queue: `${queue}.${storeIdOf(store)}`, store };
	});
}

const listed = (names: string[]) => (names.length === 1 ? names[0] : `${names.slice(0, -1).join(", ")} and ${names[names.length - 1]}`);

/** A node refused because another node owns what it would write: reported like a configuration error (exit 2). */
export class ServiceOwnershipError extends ConfigError {
	constructor(
		readonly namespace: string,
		readonly refused: OwnershipLock[],
	) {
		super("SERVICES", "");
		this.name = "ServiceOwnershipError";
		const services = refused.filter(l => l.scope === "service").map(l => l.service);
		const stores = refused.filter(l => l.scope === "store");
		const problems: string[] = [];
		if (services.length > 0) {
			const them = listed(services);
			problems.push(
				`Cannot start ${them}: another node in namespace "${namespace}" already hosts ${services.length === 1 ? "it" : "them"} on the embedded file store, ` +
					`and ${services.length === 1 ? "its" : "their"} data cannot be shared or split between nodes. ` +
					`Set MONGO_URI so that every node hosting ${them} shares one database, or run ${them} on one node only (SERVICES).`,
			);
		}
		for (const lock of stores) {
			problems.push(
				`Cannot start ${lock.service}: another node in namespace "${namespace}" already uses its records in ${lock.store}. ` +
					`Give each ${lock.service} node its own DATA_DIR, or set MONGO_URI so that they share one database.`,
			);
		}
		this.message = problems.join("\n");
	}
}

interface Logger {
	info(obj: object, msg: string): void;
	warn(obj: object, msg: string): void;
}

type AmqpFailure = Error & { code?: unknown };

const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms).unref());

/** Declares the exclusive queue on a channel of its own (a refusal closes the channel): false when another connection holds it. */
async function declareExclusive(connection: amqp.ChannelModel, queue: string): Promise<boolean> {
	const channel = await connection.createChannel();
	// A refusal closes the channel with 405; the rejected declare below reports it.
	channel.on("error", () => undefined);
	try {
		await channel.assertQueue(queue, { exclusive: true, durable: false, autoDelete: false });
	} catch (err) {
		if ((err as AmqpFailure).code === RESOURCE_LOCKED) return false;
		throw err;
	}
	// The queue belongs to the connection, not the channel.
	await channel.close();
	return true;
}

/** Without taking it: is the lock held by another connection (405 to a passive declare) rather than free (404)? */
async function heldElsewhere(connection: amqp.ChannelModel, queue: string): Promise<boolean> {
	const channel = await connection.createChannel();
	channel.on("error", () => undefined);
	try {
		await channel.checkQueue(queue);
		await channel.close();
		return false;
	} catch (err) {
		return (err as AmqpFailure).code === RESOURCE_LOCKED;
	}
}

/**
 * The locks of one node, held on one AMQP connection for the node's life.
 * `onLost` is called when another node took one while this one was cut off.
 */
export class OwnershipLocks {
	private connection?: amqp.ChannelModel;
	private released = false;
	private retaking?: Promise<void>;
	private readonly url: string;
	private readonly heartbeatSec: number;

	constructor(
		url: string,
		private readonly namespace: string,
		/** Taken in one order on every node, so two nodes racing for the same set cannot each win a part. */
		readonly locks: OwnershipLock[],
		private readonly connectionName: string,
		private readonly logger: Logger,
		private readonly onLost: (error: ServiceOwnershipError) => void,
	) {
		const order = (l: OwnershipLock) => `${ALL_SERVICES.indexOf(l.service)} ${l.queue}`;
		this.locks = [...locks].sort((a, b) => (order(a) < order(b) ? -1 : 1));
		const withHeartbeat = new URL(url);
		// A dead machine's locks are released after two missed heartbeats.
		if (!withHeartbeat.searchParams.has("heartbeat")) withHeartbeat.searchParams.set("heartbeat", String(HEARTBEAT_SEC));
		this.url = withHeartbeat.toString();
		this.heartbeatSec = Number(withHeartbeat.searchParams.get("heartbeat")) || 60;
	}

	/** Whether this node holds its locks now (false while it takes them again). */
	get held(): boolean {
		return this.connection !== undefined;
	}

	/**
	 * Takes every lock, or none: throws ServiceOwnershipError naming what other nodes hold. While RabbitMQ
	 * cannot be reached it tries again, as Moleculer's transporter does when a node starts before it.
	 */
	async acquire(): Promise<void> {
		let refused: OwnershipLock[] | undefined;
		for (let delayMs = 500; refused === undefined; delayMs = Math.min(delayMs * 2, 5000)) {
			try {
				refused = await this.take();
			} catch (err) {
				if (this.released) throw err;
				this.logger.warn({ err }, "ownership: RabbitMQ unreachable; trying again");
				await sleep(delayMs);
				if (this.released) throw new Error("Stopped before taking the ownership locks");
			}
		}
		if (refused.length > 0) throw new ServiceOwnershipError(this.namespace, refused);
		this.logger.info({ locks: this.locks.map(l => l.queue) }, `owns ${listed(this.locks.map(l => l.service))} in namespace "${this.namespace}"`);
	}

	/** Gives the locks up (closing their connection deletes the queues). */
	async release(): Promise<void> {
		this.released = true;
		const connection = this.connection;
		this.connection = undefined;
		await connection?.close().catch(() => undefined);
		await this.retaking;
	}

	/** One connection, every lock in order; on the first refusal it is closed (nothing kept) and what others hold is returned. */
	private async take(): Promise<OwnershipLock[]> {
		const connection = await amqp.connect(this.url, { noDelay: true, clientProperties: { connection_name: this.connectionName } });
		let lostWhileTaking: AmqpFailure | undefined;
		connection.on("error", () => undefined); // "close" follows, with the reason
		connection.on("close", (err?: AmqpFailure) => {
			if (this.connection === connection) this.lost(connection, err);
			else lostWhileTaking = err ?? new Error("the lock connection closed while taking the locks");
		});
		try {
			for (const [index, lock] of this.locks.entries()) {
				if (await declareExclusive(connection, lock.queue)) continue;
				// Stop at the first refusal; name everything others hold, without taking the rest.
				const others = [];
				for (const rest of this.locks.slice(index + 1)) if (await heldElsewhere(connection, rest.queue)) others.push(rest);
				await connection.close().catch(() => undefined);
				return [lock, ...others];
			}
		} catch (err) {
			await connection.close().catch(() => undefined);
			throw err;
		}
		if (lostWhileTaking) throw lostWhileTaking;
		if (this.released) {
			await connection.close().catch(() => undefined);
			return [];
		}
		this.connection = connection;
		return [];
	}

	private lost(connection: amqp.ChannelModel, err?: AmqpFailure) {
		if (this.connection !== connection || this.released) return;
		this.connection = undefined;
		this.logger.warn({ err, locks: this.locks.map(l => l.queue) }, "ownership: the lock connection to RabbitMQ was lost; taking the locks again");
		// RabbitMQ closed it (a reply code): the queues are gone already. The client gave up on it (heartbeat, socket):
		// RabbitMQ may still keep this node's own queues until it misses its heartbeats too.
		const staleForMs = typeof err?.code === "number" ? 2000 : 3 * this.heartbeatSec * 1000;
		this.retaking = this.retake(staleForMs).finally(() => (this.retaking = undefined));
	}

	private async retake(staleForMs: number): Promise<void> {
		const since = Date.now();
		let delayMs = 250;
		while (!this.released) {
			await sleep(delayMs);
			if (this.released) return;
			// Quick tries while this node's own old queues may linger, then at the transporter's pace.
			delayMs = Math.min(delayMs * 2, Date.now() - since < staleForMs ? 500 : 5000);
			let refused: OwnershipLock[];
			try {
				refused = await this.take();
			} catch (err) {
				this.logger.warn({ err }, "ownership: RabbitMQ unreachable; will take the locks again when it is back");
				continue;
			}
			if (refused.length === 0) {
				if (!this.released) this.logger.info({ locks: this.locks.map(l => l.queue) }, "ownership: locks taken again");
				return;
			}
			// Refused: this node's own queues from before, not yet deleted, or another node's.
			if (Date.now() - since < staleForMs) continue;
			const error = new ServiceOwnershipError(this.namespace, refused);
			error.message =
				`Lost the ownership of ${listed(refused.map(l => l.service))}: another node in namespace "${this.namespace}" took it while this node was cut off from RabbitMQ. ` +
				"Stopping at once, so that two nodes do not write the same data; a restart takes it back once that node is gone, or is refused.";
			this.released = true;
			this.onLost(error);
			return;
		}
	}
}

const owners = new WeakMap<ServiceBroker, OwnershipLocks>();

/** The node's ownership locks, or undefined when it needs none (embedded, MONGO_URI, stateless services). */
export const ownershipOf = (broker: ServiceBroker): OwnershipLocks | undefined => owners.get(broker);

/**
 * Broker middleware: takes the node's locks before its services start (a
 * refusal rejects broker.start() with ServiceOwnershipError), holds them
 * until the broker has stopped.
 */
export function ServiceOwnershipMiddleware(config: Config): Middleware {
	return defineMiddleware({
		name: "ServiceOwnership",
		async starting(broker) {
			const locks = ownershipLocks(config);
			if (!config.transporter || locks.length === 0) return;
			const owner = new OwnershipLocks(
				config.transporter,
				config.namespace,
				locks,
				`${config.namespace} ${broker.nodeID} ownership`,
				broker.getLogger("ownership"),
				// Moleculer's own way out of what a node cannot recover from: logged as fatal, exit code 1.
				error => broker.fatal(error.message),
			);
			// Known before it is taken: a broker stopped while waiting for RabbitMQ gives up waiting.
			owners.set(broker, owner);
			await owner.acquire().catch(err => {
				owners.delete(broker);
				throw err;
			});
		},
		async stopped(broker) {
			await ownershipOf(broker)?.release();
		},
	});
}
