/**
 * GET /health and GET /ready on PORT for a node that hosts no gateway (for
 * example SERVICES=notifications) when PORT is set, so a supervisor watches
 * every node the same way: the Docker image's HEALTHCHECK asks /ready whatever the node
 * hosts. It listens before the services start (answering 503 until they
 * have), reads no request body and serves nothing else.
 */
import crypto from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Middleware, ServiceBroker } from "moleculer";
import { defineMiddleware } from "./middleware";
import type { Config } from "./config";
import { NOT_READY_RETRY_AFTER_SEC, liveness, readiness } from "./readiness";

function send(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) {
	res.writeHead(status, {
		"Content-Type": "application/json; charset=utf-8",
		"Cache-Control": "no-store",
		"X-Content-Type-Options": "nosniff",
		"X-Request-Id": crypto.randomUUID(),
		...headers,
	});
	res.end(JSON.stringify(body));
}

async function answer(broker: ServiceBroker, services: readonly string[], req: http.IncomingMessage, res: http.ServerResponse) {
	const path = (req.url ?? "").split("?")[0];
	if (req.method === "GET" && path === "/health") return send(res, 200, liveness(broker));
	if (req.method === "GET" && path === "/ready") {
		const report = await readiness(broker, services, { nodeID: broker.nodeID });
		return send(res, report.ready ? 200 : 503, report.body, report.ready ? {} : { "Retry-After": String(NOT_READY_RETRY_AFTER_SEC) });
	}
	send(res, 404, { error: { message: "Not found", status: 404 } });
}

const ports = new WeakMap<ServiceBroker, number>();

/** The port a node's probe server listens on (PORT, or the one the OS chose for PORT=0). */
export const probePortOf = (broker: ServiceBroker): number | undefined => ports.get(broker);

/** The probe server as a broker middleware: up when the broker starts, closed when it has stopped. */
export function ProbeServerMiddleware(config: Config): Middleware {
	let server: http.Server | undefined;
	return defineMiddleware({
		name: "ProbeServer",
		async starting(broker: ServiceBroker) {
			const listening = http.createServer((req, res) => {
				answer(broker, config.services, req, res).catch(err => {
					broker.logger.error({ err }, "probe failed");
					if (!res.headersSent) send(res, 500, { error: { message: "Internal server error", status: 500 } });
				});
			});
			await new Promise<void>((resolve, reject) => {
				listening.once("error", reject);
				listening.listen(config.probePort, config.host, () => resolve());
			});
			server = listening;
			ports.set(broker, (listening.address() as AddressInfo).port);
		},
		async stopped() {
			await new Promise(resolve => (server ? server.close(resolve) : resolve(undefined)));
		},
	});
}
