/**
 * Tracing across nodes over the real RabbitMQ: a gateway, a transactions node
 * and an auth + wallet node, all exporting Zipkin v2 spans to a small HTTP
 * collector. One request is one trace, whatever nodes it crosses; its trace
 * id is the request id (or the caller's traceparent trace-id), and the log
 * lines it causes on another node carry it.
 */
import crypto from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { ServiceBroker } from "moleculer";
import type request from "supertest";
import type { Config } from "../../lib/config";
import { brokerOptions } from "../../moleculer.config";
import { startMint } from "../../server";
import { createServices } from "../../services";
import { browserAgent, newPerson, sessionFrom, signupBody } from "../helpers/http";
import { RABBITMQ_URL, describeWithInfra, rabbitmqNeed, removeFromRabbitmq } from "../helpers/infra";
import { testConfig, waitFor } from "../helpers/mint";

/** A Zipkin v2 span as the collector receives it. */
interface ZipkinSpan {
	traceId: string;
	id: string;
	parentId?: string | null;
	name: string;
	localEndpoint: { serviceName: string | null };
	tags: Record<string, string>;
}

/** What a Zipkin server does, for the test: takes POST /api/v2/spans and keeps the JSON spans. */
async function startCollector() {
	const spans: ZipkinSpan[] = [];
	const paths: string[] = [];
	const server = http.createServer((req, res) => {
		let body = "";
		req.on("data", chunk => (body += chunk));
		req.on("end", () => {
			paths.push(`${req.method} ${req.url}`);
			spans.push(...(JSON.parse(body) as ZipkinSpan[]));
			res.writeHead(202).end();
		});
	});
	await new Promise<void>(resolve => server.listen(0, "127.0.0.1", resolve));
	return {
		url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
		spans,
		paths,
		close: () => new Promise(resolve => server.close(resolve)),
	};
}

/** A node as `npm start` builds it, its log lines captured as parsed JSON instead of written to stdout. */
async function startNodeCapturingLogs(config: Config, lines: Record<string, any>[]): Promise<ServiceBroker> {
	const options = brokerOptions(config);
	const logger = options.logger as { type: string; options: { pino: Record<string, unknown> } };
	const destination = { write: (line: string) => void lines.push(JSON.parse(line)) };
	const broker = new ServiceBroker({ ...options, logger: { ...logger, options: { ...logger.options, pino: { ...logger.options.pino, destination } } } });
	for (const schema of createServices(config)) broker.createService(schema);
	await broker.start();
	return broker;
}

const hex = (bytes: number) => crypto.randomBytes(bytes).toString("hex");

/** The spans of one trace, once those named have all arrived (each node sends its own, every second). */
function traceWith(spans: ZipkinSpan[], traceId: string, names: string[]): ZipkinSpan[] | undefined {
	const trace = spans.filter(span => span.traceId === traceId);
	return names.every(name => trace.some(span => span.name === name)) ? trace : undefined;
}

describeWithInfra("tracing across nodes over RabbitMQ", rabbitmqNeed(), () => {
	const namespace = `mint-test-${crypto.randomUUID().slice(0, 8)}`;
	const node = (name: string) => `${namespace}-${name}`;
	let collector: Awaited<ReturnType<typeof startCollector>>;
	let gateway: ServiceBroker;
	let money: ServiceBroker;
	let backend: ServiceBroker;
	let notifications: ServiceBroker;
	let api: ReturnType<typeof request>;
	const backendLines: Record<string, any>[] = [];

	beforeAll(async () => {
		collector = await startCollector();
		const shared = { TRANSPORTER: RABBITMQ_URL, NAMESPACE: namespace, ZIPKIN_URL: collector.url };
		backend = await startNodeCapturingLogs(testConfig({ ...shared, SERVICES: "auth,wallet", NODE_ID: node("backend"), LOG_LEVEL: "info" }), backendLines);
		money = await startMint(testConfig({ ...shared, SERVICES: "transactions", NODE_ID: node("money") }));
		notifications = await startMint(testConfig({ ...shared, SERVICES: "notifications", NODE_ID: node("notifications") }));
		gateway = await startMint(testConfig({ ...shared, SERVICES: "api", NODE_ID: node("gateway") }));
		await gateway.waitForServices(["auth", "wallet", "transactions"], 10_000);
		await backend.waitForServices(["api", "transactions"], 10_000);
		await money.waitForServices(["api", "auth", "wallet"], 10_000);
		api = browserAgent((gateway.getLocalService("api") as any).server);
	}, 30_000);

	afterAll(async () => {
		await gateway?.stop();
		await notifications?.stop();
		await money?.stop();
		await backend?.stop();
		await collector?.close();
		await removeFromRabbitmq({
			queues: ["notifications", "notifications.retry", "notifications.dead"].map(q => `${namespace}.${q}`),
			exchanges: [`${namespace}.events`],
		});
	});

	it("one transfer through the gateway is one trace, its id the X-Request-Id, with spans from the gateway, transactions and wallet nodes in one tree", async () => {
		const sender = sessionFrom(await api.post("/api/v1/auth/signup").send(signupBody(newPerson())));
		const recipient = await api.post("/api/v1/auth/signup").send(signupBody(newPerson()));
		expect((await api.post("/api/v1/transactions/topup").set("Cookie", sender.cookie).send({ amount: 30 })).status).toBe(201);

		const requestId = hex(16);
		const sent = await api
			.post("/api/v1/transactions/transfer")
			.set("Cookie", sender.cookie)
			.set("X-Request-Id", requestId)
			.send({ amount: 12.5, toUserId: recipient.body.id });
		expect(sent.status).toBe(201);
		expect(sent.headers["x-request-id"]).toBe(requestId);

		const steps = ["action 'transactions.transfer'", "action 'wallet.debit'", "action 'wallet.credit'"];
		const whole = await waitFor(() => traceWith(collector.spans, requestId, ["POST /api/v1/transactions/transfer", ...steps]), 10_000);
		expect(collector.paths.every(path => path === "POST /api/v2/spans")).toBe(true);
		// The receipts the notifications node sends later (durable events) join the trace too; the request's own path is the rest.
		const notifications = node("notifications");
		const trace = whole.filter(span => span.tags.nodeID !== notifications && span.tags.callerNodeID !== notifications);
		expect(new Set(trace.map(span => span.tags.nodeID))).toEqual(new Set([node("gateway"), node("money"), node("backend")]));
		for (const step of steps) expect(trace.filter(span => span.name === step)).toHaveLength(1);
		// A tree: unique span ids, one root (the gateway's HTTP span), every other span's parent in the trace.
		const ids = trace.map(span => span.id);
		expect(new Set(ids).size).toBe(ids.length);
		const [root, ...children] = [...trace].sort((a, b) => Number(Boolean(a.parentId)) - Number(Boolean(b.parentId)));
		expect(root.parentId ?? undefined).toBeUndefined();
		expect(root).toMatchObject({ name: "POST /api/v1/transactions/transfer", localEndpoint: { serviceName: "api" } });
		expect(root.tags.nodeID).toBe(node("gateway"));
		for (const child of children) expect(ids).toContain(child.parentId);

		const spanOf = (name: string) => trace.find(span => span.name === name);
		expect(spanOf("action 'transactions.transfer'")).toMatchObject({ parentId: root.id, localEndpoint: { serviceName: "transactions" } });
		expect(spanOf("action 'transactions.transfer'")!.tags.nodeID).toBe(node("money"));
		for (const step of ["wallet.debit", "wallet.credit"]) {
			const span = spanOf(`action '${step}'`);
			expect(span).toMatchObject({ localEndpoint: { serviceName: "wallet" } });
			expect(span!.tags.nodeID).toBe(node("backend"));
			expect(span!.tags.callerNodeID).toBe(node("money"));
		}
		// No span carries the call's params (a signup's or a login's would hold the password).
		expect(trace.some(span => Object.keys(span.tags).some(tag => tag.startsWith("params.") && tag !== "params.req.url" && tag !== "params.req.method"))).toBe(
			false,
		);
	}, 20_000);

	it("a W3C traceparent joins the caller's trace: its trace-id is the request id and the trace id, its parent-id the first span's parent", async () => {
		const session = sessionFrom(await api.post("/api/v1/auth/signup").send(signupBody(newPerson())));
		const traceId = hex(16);
		const parentId = hex(8);
		const res = await api.get("/api/v1/wallet/user").set("Cookie", session.cookie).set("traceparent", `00-${traceId}-${parentId}-01`);
		expect(res.status).toBe(200);
		expect(res.headers["x-request-id"]).toBe(traceId);

		const trace = await waitFor(() => traceWith(collector.spans, traceId, ["GET /api/v1/wallet/user", "action 'wallet.mine'"]), 10_000);
		const root = trace.find(span => span.name === "GET /api/v1/wallet/user")!;
		expect(root).toMatchObject({ parentId, localEndpoint: { serviceName: "api" } });
		for (const span of trace) if (span !== root) expect(trace.map(s => s.id)).toContain(span.parentId);
		expect(trace.find(span => span.name === "action 'wallet.mine'")).toMatchObject({ parentId: root.id, localEndpoint: { serviceName: "wallet" } });
		expect(new Set(trace.map(span => span.tags.nodeID))).toEqual(new Set([node("gateway"), node("backend")]));
	}, 20_000);

	it("the log lines a request causes on another node carry its trace id and span id; the event it emits is in its trace", async () => {
		const requestId = hex(16);
		const person = newPerson();
		const res = await api.post("/api/v1/auth/signup").set("X-Request-Id", requestId).send(signupBody(person));
		expect(res.status).toBe(201);

		const signedUp = await waitFor(() => backendLines.find(line => line.msg === "user signed up" && line.userId === res.body.id), 5000);
		expect(signedUp).toMatchObject({ requestId, traceId: requestId, spanId: expect.stringMatching(/^[0-9a-f]{16}$/) });
		const ofTheRequest = backendLines.filter(line => line.requestId === requestId);
		expect(ofTheRequest.length).toBeGreaterThan(0);
		expect(ofTheRequest.every(line => line.traceId === requestId)).toBe(true);
		// The span id on the line is the auth.signup span's, as Zipkin shows it.
		const span = await waitFor(() => collector.spans.find(s => s.traceId === requestId && s.name === "action 'auth.signup'"), 5000);
		expect(signedUp.spanId).toBe(span.id);
		// The event signup emits crosses to the wallet service inside the same trace, under auth.signup.
		const event = await waitFor(() => collector.spans.find(s => s.traceId === requestId && s.name === "event 'user.signedUp' in 'wallet'"), 5000);
		expect(event).toMatchObject({ parentId: span.id, tags: { "span.type": "event", nodeID: node("backend") } });
		// So does the durable copy the notifications node reads from its RabbitMQ queue: the trace travels in the message's headers.
		const durable = await waitFor(() => collector.spans.find(s => s.traceId === requestId && s.name === "event 'user.signedUp' in 'notifications'"), 10_000);
		expect(durable).toMatchObject({ parentId: span.id, tags: { nodeID: node("notifications") } });
	}, 20_000);
});
