/**
 * Liveness and readiness of a Mint node, for supervisors (Docker
 * HEALTHCHECK, Kubernetes probes, nginx) and operators. The gateway answers
 * them at /health and /ready; a node without a gateway answers them from a
 * small probe server (lib/probe-server.ts). Both use these functions.
 */
import type { ServiceBroker } from "moleculer";

export type CheckState = "ok" | "down" | "starting" | "stopping";

export interface ReadinessReport {
	ready: boolean;
	body: { status: "ready" | "unavailable"; checks: Record<string, CheckState>; error?: { message: string; status: 503 } };
}

/** Seconds a client should wait before asking a node that is not ready again. */
export const NOT_READY_RETRY_AFTER_SEC = 5;

export function liveness(broker: ServiceBroker) {
	return { status: "ok", nodeID: broker.nodeID, uptimeSec: Math.round(process.uptime()) };
}

/**
 * Ready when this node has started every local service and is not stopping,
 * each named service answers its `health` action (which touches its
 * database), and the transporter and the Redis cache, where used, are connected.
 * `nodeID` asks only this node's own services.
 */
export async function readiness(broker: ServiceBroker, services: readonly string[], opts: { nodeID?: string } = {}): Promise<ReadinessReport> {
	const checks: Record<string, CheckState> = { node: broker.stopping ? "stopping" : broker.started ? "ok" : "starting" };
	await Promise.all(
		services.map(async name => {
			try {
				await broker.call(`${name}.health`, {}, { timeout: 2000, retries: 0, nodeID: opts.nodeID });
				checks[name] = "ok";
			} catch {
				checks[name] = "down";
			}
		}),
	);
	// Transit's own flag stays true while the AMQP transporter reconnects; the transporter's flag tells.
	const transit = (broker as unknown as { transit?: { connected: boolean; tx?: { connected: boolean } } }).transit;
	if (transit) checks.transporter = transit.connected && transit.tx?.connected !== false ? "ok" : "down";
	const redis = (broker.cacher as unknown as { client?: { ping?: () => Promise<unknown> } } | undefined)?.client;
	if (redis?.ping) {
		try {
			await redis.ping();
			checks.cache = "ok";
		} catch {
			checks.cache = "down";
		}
	}
	const failing = Object.keys(checks).filter(name => checks[name] !== "ok");
	if (failing.length === 0) return { ready: true, body: { status: "ready", checks } };
	return { ready: false, body: { status: "unavailable", error: { message: `Not ready: ${failing.join(", ")}`, status: 503 }, checks } };
}
