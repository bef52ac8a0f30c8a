/**
 * Tracing in one process: the exporter each setting chooses, what an exported
 * span carries (never params or error data), how a request id becomes a trace
 * id, how a W3C traceparent joins, and that work started with the broker
 * while serving a request stays in the request's trace.
 */
import crypto from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { Errors, type Context, ServiceBroker, type ServiceSchema, TracerExporters } from "moleculer";
import { loadConfig } from "../../lib/config";
import { requestLogFields, spanIdOf, traceIdOf } from "../../lib/request-context";
import { brokerOptions } from "../../moleculer.config";
import { requestIdOf, traceParentOf, type Req } from "../../services/api/http";
import { beginRequest } from "../../services/api/requests";

const tracingOf = (env: Record<string, string>) => brokerOptions(loadConfig({ NODE_ENV: "test", ...env })).tracing as any;

describe("the tracer from the config", () => {
	it("is on wherever spans go somewhere, in every mode, for actions and events, naming calls without their params or error data", () => {
		for (const env of [{ ZIPKIN_URL: "http://zipkin:9411" }, { TRACING: "console", TRANSPORTER: "amqp://mq:5672" }] as Record<string, string>[]) {
			const tracing = tracingOf(env);
			expect(tracing).toMatchObject({ enabled: true, events: true, tags: { action: { params: false }, event: { params: false } } });
			expect(tracing.errorFields).not.toContain("data");
		}
	});

	it("makes no spans when neither ZIPKIN_URL nor TRACING is set: nothing would read them", () => {
		expect(tracingOf({})).toMatchObject({ enabled: false, exporter: null });
		expect(tracingOf({ TRANSPORTER: "amqp://mq:5672" })).toMatchObject({ enabled: false, exporter: null });
	});

	it("ZIPKIN_URL: Moleculer's Zipkin exporter, sending to that URL", () => {
		const [exporter, ...others] = tracingOf({ ZIPKIN_URL: "http://zipkin:9411/" }).exporter;
		expect(others).toEqual([]);
		expect(exporter).toBeInstanceOf(TracerExporters.Zipkin);
		expect(exporter.opts.baseURL).toBe("http://zipkin:9411");
	});

	it("TRACING=console: the Console exporter; with ZIPKIN_URL too, both", () => {
		expect(tracingOf({ TRACING: "console" }).exporter).toEqual([{ type: "Console", options: expect.any(Object) }]);
		const both = tracingOf({ TRACING: "console", ZIPKIN_URL: "http://zipkin:9411" }).exporter;
		expect(both).toHaveLength(2);
		expect(both[0]).toBeInstanceOf(TracerExporters.Zipkin);
		expect(both[1]).toMatchObject({ type: "Console" });
	});
});

describe("traceIdOf: the trace id a request id is exported and logged as", () => {
	it("keeps a hex trace id of 32 or 16 digits, in lower case", () => {
		expect(traceIdOf("4bf92f3577b34da6a3ce929d0e0e4736")).toBe("4bf92f3577b34da6a3ce929d0e0e4736");
		expect(traceIdOf("4BF92F3577B34DA6A3CE929D0E0E4736")).toBe("4bf92f3577b34da6a3ce929d0e0e4736");
		expect(traceIdOf("a3ce929d0e0e4736")).toBe("a3ce929d0e0e4736");
	});

	it("takes a UUID's 32 digits", () => {
		expect(traceIdOf("0f8fad5b-d9cb-469f-a165-70867728950e")).toBe("0f8fad5bd9cb469fa16570867728950e");
	});

	it("hashes any other caller-chosen id to a stable 32-digit id", () => {
		const id = traceIdOf("req-1234.abc:DEF_9");
		expect(id).toMatch(/^[0-9a-f]{32}$/);
		expect(traceIdOf("req-1234.abc:DEF_9")).toBe(id);
		expect(traceIdOf("req-1234.abc:DEF_8")).not.toBe(id);
	});
});

/** A fake incoming request: only what the request helpers read. */
const fakeReq = (headers: Record<string, string>): Req => ({ headers, socket: { remoteAddress: "10.0.0.1" } }) as any;

describe("a W3C traceparent joins the caller's trace", () => {
	const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
	const parentId = "00f067aa0ba902b7";

	it("its trace-id becomes the request id when there is no valid X-Request-Id", () => {
		expect(requestIdOf(fakeReq({ traceparent: `00-${traceId}-${parentId}-01` }))).toBe(traceId);
		expect(requestIdOf(fakeReq({ traceparent: `00-${traceId}-${parentId}-00`, "x-request-id": "bad id!" }))).toBe(traceId);
		// A later version may add fields.
		expect(traceParentOf(fakeReq({ traceparent: `01-${traceId}-${parentId}-01-more` }))).toEqual({ traceId, parentId });
	});

	it("a valid X-Request-Id still wins", () => {
		expect(requestIdOf(fakeReq({ traceparent: `00-${traceId}-${parentId}-01`, "x-request-id": "req-1" }))).toBe("req-1");
	});

	it.each([
		["version ff", `ff-${traceId}-${parentId}-01`],
		["version 00 with an extra field", `00-${traceId}-${parentId}-01-more`],
		["an all-zero trace-id", `00-${"0".repeat(32)}-${parentId}-01`],
		["an all-zero parent-id", `00-${traceId}-${"0".repeat(16)}-01`],
		["upper-case hex", `00-${traceId.toUpperCase()}-${parentId}-01`],
		["a short trace-id", `00-${traceId.slice(1)}-${parentId}-01`],
		["garbage", "hello"],
	])("is ignored when it has %s: a fresh UUID", (_what, traceparent) => {
		expect(traceParentOf(fakeReq({ traceparent }))).toBeUndefined();
		expect(requestIdOf(fakeReq({ traceparent }))).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
	});

	it("the gateway's first span hangs under the caller's span, only when the request joined its trace", () => {
		const res = { setHeader: jest.fn(), once: jest.fn() } as any;
		const opts = { trustProxy: () => false, secure: false, logger: { info: jest.fn() } as any };
		const joined: Parameters<typeof beginRequest>[0] = {};
		beginRequest(joined, fakeReq({ traceparent: `00-${traceId}-${parentId}-01` }), res, opts);
		expect(joined).toEqual({ requestID: traceId, parentSpan: { id: parentId, traceID: traceId, sampled: true } });
		expect(res.setHeader).toHaveBeenCalledWith("X-Request-Id", traceId);
		const own: Parameters<typeof beginRequest>[0] = {};
		beginRequest(own, fakeReq({ traceparent: `00-${traceId}-${parentId}-01`, "x-request-id": "req-2" }), res, opts);
		expect(own).toEqual({ requestID: "req-2" });
	});
});

/** What a Zipkin server does, for the test: keeps what is POSTed to /api/v2/spans. */
async function startCollector() {
	const spans: any[] = [];
	const server = http.createServer((req, res) => {
		let body = "";
		req.on("data", chunk => (body += chunk));
		req.on("end", () => {
			if (req.method === "POST" && req.url === "/api/v2/spans") spans.push(...JSON.parse(body));
			res.writeHead(202).end();
		});
	});
	await new Promise<void>(resolve => server.listen(0, "127.0.0.1", resolve));
	return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, spans, close: () => new Promise(resolve => server.close(resolve)) };
}

describe("spans exported to Zipkin from one node", () => {
	let collector: Awaited<ReturnType<typeof startCollector>>;
	let broker: ServiceBroker;
	const events: { requestID: string | null; parentID: string | null }[] = [];

	const probe: ServiceSchema = {
		name: "probe",
		actions: {
			echo: (ctx: Context) => ({ requestID: ctx.requestID, log: requestLogFields() }),
			/** Work started with the broker itself, as a background step or an outbox does. */
			async outer(this: any, ctx: Context) {
				const inner = await this.broker.call("probe.echo");
				await this.broker.emit("probe.happened", {});
				return { id: ctx.id, inner };
			},
			signup: () => {
				throw new Errors.ValidationError("bad password", "VALIDATION_ERROR", { field: "password", actual: "hunter2 secret" });
			},
			search: {
				tracing: { spanName: "GET /users/search?email=ada", tags: { params: ["req.url"] } },
				handler: () => [],
			},
		},
		events: {
			"probe.happened": (ctx: Context) => void events.push({ requestID: ctx.requestID, parentID: ctx.parentID }),
		},
	};

	beforeEach(async () => {
		collector = await startCollector();
		broker = new ServiceBroker(brokerOptions(loadConfig({ NODE_ENV: "test", LOG_LEVEL: "warn", ZIPKIN_URL: collector.url, SERVICES: "none" })));
		broker.createService(probe);
		await broker.start();
	});

	afterEach(async () => {
		await broker.stop();
		await collector.close();
	});

	it("a call or event made with the broker inside an action joins its trace, under its span, and logs its ids", async () => {
		const requestID = crypto.randomUUID();
		const result: any = await broker.call("probe.outer", {}, { requestID });
		const traceId = requestID.replaceAll("-", "");
		expect(result.inner).toEqual({ requestID, log: { requestId: requestID, traceId, spanId: expect.stringMatching(/^[0-9a-f]{16}$/) } });
		expect(events).toEqual([{ requestID, parentID: result.id }]);
		expect(requestLogFields()).toEqual({});

		// Stopping the broker sends what is still queued.
		await broker.stop();
		const trace = collector.spans.filter(span => span.traceId === traceId);
		const outer = trace.find(span => span.name === "action 'probe.outer'");
		expect(outer.id).toBe(spanIdOf(result.id));
		const echo = trace.find(span => span.name === "action 'probe.echo'");
		expect(echo.parentId).toBe(outer.id);
		expect(echo.id).toBe(result.inner.log.spanId);
		expect(trace.find(span => span.name === "event 'probe.happened' in 'probe'")).toMatchObject({ parentId: outer.id, tags: { "span.type": "event" } });
	});

	it("a failed call's span names the error but carries neither its params nor its data", async () => {
		await expect(broker.call("probe.signup", { email: "ada@example.com", password: "hunter2 secret" })).rejects.toThrow("bad password");
		await broker.stop();
		const span = collector.spans.find(s => s.name === "action 'probe.signup'");
		expect(span.tags).toMatchObject({ "error.name": "ValidationError", "error.code": "422", "error.type": "VALIDATION_ERROR" });
		expect(JSON.stringify(span)).not.toMatch(/hunter2|ada@example|"params\.|error\.data/);
	});

	it("an HTTP span's name and URL lose their query string", async () => {
		await broker.call("probe.search", { req: { url: "/users/search?email=ada" } });
		await broker.stop();
		const span = collector.spans.find(s => s.name.startsWith("GET /users/search"));
		expect(span.name).toBe("GET /users/search");
		expect(span.tags["params.req.url"]).toBe("/users/search");
	});
});
