/**
 * nginx/templates/mint.conf.template in the real nginx (/usr/sbin/nginx),
 * rendered as the official nginx image renders its templates, in front of
 * two gateway nodes of one Mint over the real RabbitMQ: two SERVICES=api
 * nodes and a core node with the other services, in this process. Each
 * gateway has a spy on its calls (which gateway, which action, the request
 * id and client IP it passed on) that can also make it die before it
 * answers, as a gateway killed mid-request would.
 *
 * Every client of a test has its own loopback address (127.0.0.x), so
 * nginx's per-address limits and the gateways' client IPs tell them apart.
 */
import { execFile } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import http, { type Server } from "node:http";
import net, { type AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import type { ServiceBroker } from "moleculer";
import type { Config } from "../../lib/config";
import { startMint } from "../../server";
import { newPerson, signupBody } from "../helpers/http";
import { RABBITMQ_URL, describeWithInfra, rabbitmqNeed, removeFromRabbitmq } from "../helpers/infra";
import { testConfig, waitFor } from "../helpers/mint";
import { MINT_TEMPLATE, nginxNeed, send, startNginx, type Answer, type RunningNginx } from "../helpers/nginx";
import { freePort } from "../helpers/ports";
import { openStream } from "../helpers/sse";

const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms));

const errorBody = (status: number, message: string) => ({ error: { message, status } });

/** name -> "attributes" of each Set-Cookie, Max-Age's number left out (a second may pass between two signups). */
function cookieAttributes(answer: Answer): Record<string, string> {
	const lines = answer.headers["set-cookie"] ?? [];
	return Object.fromEntries(
		lines.map(line => {
			const [pair, ...attributes] = line.split(";");
			return [pair.slice(0, pair.indexOf("=")).trim(), attributes.map(a => a.trim().replace(/^Max-Age=[1-9]\d*$/, "Max-Age>0")).join("; ")];
		}),
	);
}

function cookieValue(answer: Answer, name: string): string {
	const line = (answer.headers["set-cookie"] ?? []).find(l => l.startsWith(`${name}=`));
	if (!line) throw new Error(`no ${name} cookie in a ${answer.status} answer: ${answer.text}`);
	return line.slice(name.length + 1).split(";")[0];
}

describe("the nginx template", () => {
	it("has exactly the three placeholders; every other $variable is nginx's own (lower-case, never an environment variable)", () => {
		const text = fs.readFileSync(MINT_TEMPLATE, "utf8");
		const names = new Set([...text.matchAll(/\$\{?([A-Za-z_][A-Za-z0-9_]*)/g)].map(m => m[1]));
		const upper = [...names].filter(name => name !== name.toLowerCase());
		expect(upper.sort()).toEqual(["MINT_GATEWAY_1", "MINT_GATEWAY_2", "NGINX_PORT"]);
		expect([...names].filter(name => name.startsWith("http_") || name.startsWith("upstream_http_")).length).toBeGreaterThan(5);
	});
});

describeWithInfra("nginx with stub gateways", nginxNeed(), () => {
	/** What a stub writes on a stream before it ends it: more than every socket buffer between it and a client that does not read. */
	const STREAM_BYTES = 32 * 1024 * 1024;
	let nginx: RunningNginx;
	const stubs: Server[] = [];
	/** Per X-Request-Id: the bytes the stub's socket sent, and whether it finished writing the stream. */
	const streams = new Map<string, { sent: () => number; finished: boolean }>();

	beforeAll(async () => {
		const event = "event: balance\ndata: {}\n\n";
		const chunk = Buffer.alloc(64 * 1024, event);
		for (let i = 0; i < 2; i++) {
			const stub = http.createServer((req, res) => {
				const socket = req.socket;
				const stream = { sent: () => socket.bytesWritten, finished: false };
				streams.set(String(req.headers["x-request-id"]), stream);
				res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-store" });
				res.once("finish", () => {
					stream.finished = true;
				});
				let written = 0;
				const pump = () => {
					while (written < STREAM_BYTES) {
						written += chunk.length;
						if (!res.write(chunk)) return void res.once("drain", pump);
					}
					res.end();
				};
				pump();
			});
			await new Promise<void>(resolve => stub.listen(0, "127.0.0.1", resolve));
			stubs.push(stub);
		}
		const [a, b] = stubs.map(s => `127.0.0.1:${(s.address() as AddressInfo).port}`);
		nginx = await startNginx({ gateways: [a, b] });
	});

	afterAll(async () => {
		await nginx?.stop();
		for (const stub of stubs) stub.closeAllConnections();
		await Promise.all(stubs.map(stub => new Promise(resolve => stub.close(resolve))));
	});

	/** A client that asks for `route` and never reads the answer; `seen()` tells what the stub managed to send meanwhile. */
	const unreadStream = (route: string) => {
		const requestId = crypto.randomUUID();
		const socket = net.connect(nginx.port, "127.0.0.1");
		socket.pause();
		socket.write(`GET ${route} HTTP/1.1\r\nHost: 127.0.0.1:${nginx.port}\r\nX-Request-Id: ${requestId}\r\n\r\n`);
		const seen = () => {
			const stream = streams.get(requestId);
			return { finished: stream?.finished, sentMB: Math.round((stream?.sent() ?? 0) / 1024 / 1024) };
		};
		return { seen, close: () => socket.destroy() };
	};

	it("/api/v1/wallet/stream is not buffered: a client that does not read holds the gateway back, where nginx would take a whole answer elsewhere", async () => {
		const [stream, other] = [unreadStream("/api/v1/wallet/stream"), unreadStream("/api/v1/wallet/other")];
		try {
			// nginx takes the whole 32 MB of the other path into its buffers and temp file...
			await waitFor(() => other.seen().finished, 10_000);
			expect(other.seen()).toEqual({ finished: true, sentMB: 32 });
			// ...while the stream's gateway can send no more than the sockets between it and the client hold.
			await sleep(300);
			expect(stream.seen().finished).toBe(false);
			expect(stream.seen().sentMB).toBeLessThan(16);
		} finally {
			stream.close();
			other.close();
		}
	});

	it("/api/v1/wallet/stream passes each event as it comes", async () => {
		const first = await new Promise<string>((resolve, reject) => {
			const req = http.get({ host: "127.0.0.1", port: nginx.port, path: "/api/v1/wallet/stream", agent: false }, res => {
				res.setEncoding("utf8");
				res.once("data", (text: string) => {
					resolve(text);
					req.destroy();
				});
			});
			req.on("error", reject);
		});
		expect(first.startsWith("event: balance\ndata: {}\n\n")).toBe(true);
	});
});

async function removeNamespaceFromRabbitmq(namespace: string): Promise<void> {
	const ours = (name: string) => name.startsWith(`MOL-${namespace}.`) || name.startsWith(`${namespace}.`);
	const names = async (what: string) => (await promisify(execFile)("rabbitmqctl", [what, "name", "-q", "--no-table-headers"])).stdout.split("\n").filter(ours);
	const [queues, exchanges] = await Promise.all([names("list_queues"), names("list_exchanges")]);
	await removeFromRabbitmq({ queues, exchanges });
}

interface GatewayCall {
	gateway: string;
	action: string;
	requestId: string;
	clientIp?: string;
}

/** What the gateways call, and, once armed, a gateway that dies after the action ran and before it answers. */
class GatewaySpy {
	readonly calls: GatewayCall[] = [];
	private dieAfter?: string;

	/** The next gateway whose call of `action` returns drops every connection instead of answering. */
	dieAfterNext(action: string): void {
		this.dieAfter = action;
	}

	callsOf(requestId: string): GatewayCall[] {
		return this.calls.filter(call => call.requestId === requestId);
	}

	middleware(gateway: string, server: () => Server) {
		return {
			name: "nginx-test-gateway-spy",
			remoteAction: (next: (ctx: any) => Promise<unknown>, action: { name: string }) => async (ctx: any) => {
				this.calls.push({ gateway, action: action.name, requestId: ctx.requestID, clientIp: ctx.meta?.clientIp });
				const result = await next(ctx);
				if (this.dieAfter === action.name) {
					this.dieAfter = undefined;
					server().closeAllConnections();
				}
				return result;
			},
		};
	}
}

describeWithInfra(
	"Mint behind nginx",
	{ name: `${nginxNeed().name} and ${rabbitmqNeed().name}`, available: nginxNeed().available && rabbitmqNeed().available },
	() => {
		const namespace = `mint-nginx-${crypto.randomUUID().slice(0, 8)}`;
		const spy = new GatewaySpy();
		const configs: Config[] = [];
		let core: ServiceBroker;
		const gateways: { name: string; broker: ServiceBroker; port: number; server: Server; stopped?: boolean }[] = [];
		let nginx: RunningNginx;

		const serverOf = (broker: ServiceBroker) => (broker.getLocalService("api") as unknown as { server: Server }).server;
		const nodeIds = () => gateways.map(g => g.broker.nodeID);

		beforeAll(async () => {
			const nginxPort = await freePort();
			const shared = { TRANSPORTER: RABBITMQ_URL, NAMESPACE: namespace, PUBLIC_URL: `http://127.0.0.1:${nginxPort}` };
			const coreConfig = testConfig({ ...shared, SERVICES: "auth,wallet,transactions,notifications", NODE_ID: `${namespace}-core` });
			configs.push(coreConfig);
			core = await startMint(coreConfig);
			for (const name of ["gateway-1", "gateway-2"]) {
				// A heartbeat a second: a test sees one pass through nginx without waiting 15 s.
				const config = testConfig({ ...shared, SERVICES: "api", NODE_ID: `${namespace}-${name}`, STREAM_HEARTBEAT_SEC: "1" });
				configs.push(config);
				let server: Server | undefined;
				const broker = await startMint(config, [], [spy.middleware(name, () => server as Server) as any]);
				server = serverOf(broker);
				gateways.push({ name, broker, server, port: (server.address() as AddressInfo).port });
			}
			for (const { broker } of gateways) await broker.waitForServices(["auth", "wallet", "transactions", "notifications"], 15_000);
			// A logout waits for every gateway auth knows of: it must know both before a session test.
			const apiNodes = () => core.registry.getServiceList({ onlyAvailable: true }).filter(service => service.name === "api").length;
			await waitFor(() => apiNodes() === 2 || undefined, 15_000);
			nginx = await startNginx({ gateways: [`127.0.0.1:${gateways[0].port}`, `127.0.0.1:${gateways[1].port}`], port: nginxPort });
		}, 40_000);

		afterAll(async () => {
			await nginx?.stop();
			for (const gateway of gateways) if (!gateway.stopped) await gateway.broker.stop();
			await core?.stop();
			for (const config of configs) fs.rmSync(config.dataDir, { recursive: true, force: true });
			await removeNamespaceFromRabbitmq(namespace);
		}, 20_000);

		/** A person signed up directly at gateway 1: their id and a Bearer header. */
		async function signUpDirect(from: string): Promise<{ id: string; auth: Record<string, string> }> {
			const res = await send(gateways[0].port, "POST", "/api/v1/auth/signup", { body: signupBody(newPerson()), from });
			expect(res.status).toBe(201);
			return { id: res.body.id, auth: { Authorization: `Bearer ${cookieValue(res, "access.token")}` } };
		}

		it("spreads requests over both gateways", async () => {
			const answers = await Promise.all(Array.from({ length: 20 }, () => send(nginx.port, "GET", "/api/v1/health", { from: "127.0.0.11" })));
			expect(answers.map(a => a.status)).toEqual(Array(20).fill(200));
			const byNode = new Map<string, number>();
			for (const { body } of answers) byNode.set(body.nodeID, (byNode.get(body.nodeID) ?? 0) + 1);
			expect([...byNode.keys()].sort()).toEqual(nodeIds().sort());
			expect(Math.min(...byNode.values())).toBeGreaterThanOrEqual(5);
			// nginx's access log (JSON lines) names the gateway of each request by its request id.
			const ids = answers.map(a => String(a.headers["x-request-id"]));
			const logged = await waitFor(() => {
				const lines = nginx.accessLog().filter(line => ids.includes(line.requestId));
				return lines.length === ids.length ? lines : undefined;
			});
			expect(new Set(logged.map(line => line.upstream))).toEqual(new Set(gateways.map(g => `127.0.0.1:${g.port}`)));
		});

		it("logs each request as one JSON line: its id, client, gateway and status, never its query string (one-time tokens travel in it)", async () => {
			const token = crypto.randomBytes(24).toString("base64url");
			const link = await send(nginx.port, "GET", `/api/v1/health?token=${token}`, { from: "127.0.0.20" });
			expect(link.status).toBe(200);
			const line = await waitFor(() => nginx.accessLog().find(l => l.requestId === link.headers["x-request-id"]));
			expect(line).toMatchObject({ method: "GET", path: "/api/v1/health", status: 200, client: "127.0.0.20", upstreamStatus: "200", limitReq: "PASSED" });
			expect(gateways.map(g => `127.0.0.1:${g.port}`)).toContain(line.upstream);
			expect(JSON.stringify(nginx.accessLog())).not.toContain(token);
		});

		it("passes on the client's address (whatever X-Forwarded-For it claims), its X-Request-Id, a traceparent's trace id, or a request id of its own", async () => {
			const requestId = `nginx-test-${crypto.randomUUID()}`;
			const claimed = await send(nginx.port, "GET", "/api/v1/auth/health", {
				from: "127.0.0.12",
				headers: { "X-Request-Id": requestId, "X-Forwarded-For": "203.0.113.7" },
			});
			expect([claimed.status, claimed.headers["x-request-id"]]).toEqual([200, requestId]);
			expect(spy.callsOf(requestId).map(call => [call.action, call.clientIp])).toEqual([["auth.health", "127.0.0.12"]]);

			const traceId = crypto.randomBytes(16).toString("hex");
			const traced = await send(nginx.port, "GET", "/api/v1/auth/health", {
				from: "127.0.0.12",
				headers: { traceparent: `00-${traceId}-${"ab".repeat(8)}-01` },
			});
			expect(traced.headers["x-request-id"]).toBe(traceId);
			expect(spy.callsOf(traceId).map(call => call.action)).toEqual(["auth.health"]);

			// No id, or one the gateway would refuse: nginx's $request_id, the same in its log and in Mint's call.
			for (const headers of [{}, { "X-Request-Id": "not an id" }] as Record<string, string>[]) {
				const plain = await send(nginx.port, "GET", "/api/v1/auth/health", { from: "127.0.0.12", headers });
				const id = String(plain.headers["x-request-id"]);
				expect(id).toMatch(/^[0-9a-f]{32}$/);
				expect(spy.callsOf(id).map(call => call.action)).toEqual(["auth.health"]);
				expect(await waitFor(() => nginx.accessLog().find(line => line.requestId === id))).toMatchObject({ status: 200, client: "127.0.0.12" });
			}
		});

		it("a cookie session works through nginx exactly as direct, the Origin check on unsafe methods included", async () => {
			const direct = { port: gateways[0].port, origin: `http://127.0.0.1:${gateways[0].port}` };
			const behind = { port: nginx.port, origin: nginx.origin };

			/** A browser's session on `target`'s page: signup, reads and writes with its cookies, from several origins, and logout. */
			const session = async (target: { port: number; origin: string }, otherOrigin: string) => {
				const from = "127.0.0.13";
				const person = newPerson();
				const signup = await send(target.port, "POST", "/api/v1/auth/signup", { body: signupBody(person), headers: { Origin: target.origin }, from });
				const cookie = `access.token=${cookieValue(signup, "access.token")}; refresh.token=${cookieValue(signup, "refresh.token")}`;
				const me = () => send(target.port, "GET", "/api/v1/auth/user", { headers: { Cookie: cookie }, from });
				const rename = (firstName: string, origin?: string) =>
					send(target.port, "PUT", "/api/v1/users/me", { headers: { Cookie: cookie, ...(origin ? { Origin: origin } : {}) }, body: { firstName }, from });
				const afterSignup = await me();
				const steps = {
					signup: [signup.status, cookieAttributes(signup)],
					me: [afterSignup.status, afterSignup.body?.email === person.email],
					foreignOrigin: [(await rename("Eve", "https://evil.example")).body],
					noOrigin: [(await rename("Eve")).body],
					// The other way in (nginx's origin at the gateway, the gateway's behind nginx) is another origin.
					otherOrigin: [(await rename("Eve", otherOrigin)).body],
					ownOrigin: await rename("Grace", target.origin).then(res => [res.status, res.body?.firstName]),
					logout: await send(target.port, "POST", "/api/v1/auth/logout", { headers: { Cookie: cookie, Origin: target.origin }, from }).then(res => [
						res.status,
						cookieAttributes(res),
					]),
				};
				const afterLogout = await me();
				return { ...steps, afterLogout: [afterLogout.status, afterLogout.body] };
			};

			const forbidden = [errorBody(403, "Origin not allowed")];
			const issued = {
				"access.token": "Max-Age>0; Path=/; HttpOnly; Secure; SameSite=Strict",
				"refresh.token": "Max-Age>0; Path=/api/v1; HttpOnly; Secure; SameSite=Strict",
			};
			const expected = {
				signup: [201, issued],
				me: [200, true],
				foreignOrigin: forbidden,
				noOrigin: forbidden,
				otherOrigin: forbidden,
				ownOrigin: [200, "Grace"],
				logout: [
					204,
					{
						"access.token": "Max-Age=0; Path=/; HttpOnly; Secure; SameSite=Strict",
						"refresh.token": "Max-Age=0; Path=/api/v1; HttpOnly; Secure; SameSite=Strict",
					},
				],
				afterLogout: [200, null],
			};
			expect(await session(direct, behind.origin)).toEqual(expected);
			expect(await session(behind, direct.origin)).toEqual(expected);
		});

		it("a wallet stream through nginx: its head and each event as it happens, heartbeats; a logout through nginx ends it", async () => {
			const from = "127.0.0.21";
			const alice = await signUpDirect(from);
			const stream = await openStream(nginx.port, { headers: { ...alice.auth, "Accept-Encoding": "gzip", "X-Request-Id": "nginx-stream-1" }, from });
			try {
				expect([stream.status, stream.headers["content-type"], stream.headers["content-encoding"], stream.headers["x-request-id"]]).toEqual([
					200,
					"text/event-stream; charset=utf-8",
					undefined,
					"nginx-stream-1",
				]);
				await stream.until(s => s.events.length >= 1);
				// A change made directly at each gateway: whichever holds the stream passes it on at once.
				for (const [i, amount] of [
					[0, 7],
					[1, 3],
				]) {
					const topUp = await send(gateways[i].port, "POST", "/api/v1/transactions/topup", { headers: alice.auth, body: { amount }, from });
					expect(topUp.status).toBe(201);
					await stream.until(s => s.events.find(e => e.event === "transaction" && e.data.id === topUp.body.id && e.data.status === "Completed"), 2000);
				}
				await stream.until(s => s.comments.includes("heartbeat"), 3000);
				expect(stream.named().flatMap(([event, data]) => (event === "balance" ? [data.balance] : []))).toEqual([0, 7, 10]);

				const cookie = `access.token=${alice.auth.Authorization.slice("Bearer ".length)}`;
				expect((await send(nginx.port, "POST", "/api/v1/auth/logout-all", { headers: { Cookie: cookie, Origin: nginx.origin }, from })).status).toBe(204);
				expect(await stream.ended).toBe(true);
				expect(stream.named().at(-1)).toEqual(["end", { reason: "session-revoked" }]);
			} finally {
				stream.close();
			}
			const line = await waitFor(() => nginx.accessLog().find(l => l.requestId === "nginx-stream-1"));
			expect([line.path, line.status, line.upstreamStatus]).toEqual(["/api/v1/wallet/stream", 200, "200"]);
		});

		it("with gzip on for everything (as many an nginx.conf has it), the stream is still sent uncompressed; other answers are compressed", async () => {
			// The template, with gzip switched on for every type in the http {} it is included in.
			const template = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "mint-gzip-")), "mint.conf.template");
			fs.writeFileSync(template, `gzip on;\ngzip_types *;\ngzip_min_length 1;\n${fs.readFileSync(MINT_TEMPLATE, "utf8")}`);
			const gzipped = await startNginx({ gateways: [`127.0.0.1:${gateways[0].port}`, `127.0.0.1:${gateways[1].port}`], template });
			try {
				const from = "127.0.0.22";
				const alice = await signUpDirect(from);
				const headers = { ...alice.auth, "Accept-Encoding": "gzip" };
				const docs = await new Promise<http.IncomingMessage>((resolve, reject) =>
					http
						.get({ host: "127.0.0.1", port: gzipped.port, path: "/api/v1/openapi.json", headers, localAddress: from, agent: false }, resolve)
						.on("error", reject),
				);
				docs.resume();
				expect(docs.headers["content-encoding"]).toBe("gzip");
				const stream = await openStream(gzipped.port, { headers, from });
				try {
					expect([stream.status, stream.headers["content-encoding"]]).toEqual([200, undefined]);
					expect((await stream.until(s => s.events[0])).data.balance).toBe(0);
				} finally {
					stream.close();
				}
			} finally {
				await gzipped.stop();
				fs.rmSync(path.dirname(template), { recursive: true, force: true });
			}
		});

		it("a burst of password-forgot POSTs from one address: 6 pass, the rest get 429 in the SPEC shape with Retry-After; case and a trailing slash do not escape", async () => {
			const forgot = (from: string, route = "/api/v1/auth/password/forgot") => send(nginx.port, "POST", route, { body: { email: "nobody@example.com" }, from });
			const burst = await Promise.all(Array.from({ length: 10 }, () => forgot("127.0.0.14")));
			expect(burst.map(a => a.status).sort()).toEqual([202, 202, 202, 202, 202, 202, 429, 429, 429, 429]);
			const refused = burst.find(a => a.status === 429)!;
			expect(refused.body).toEqual(errorBody(429, "Too many requests, try again later"));
			expect([refused.headers["retry-after"], refused.headers["content-type"], refused.headers["x-content-type-options"]]).toEqual([
				"12",
				"application/json; charset=utf-8",
				"nosniff",
			]);
			expect(refused.headers["x-request-id"]).toMatch(/^[0-9a-f]{32}$/);
			// The gateway routes /API/V1/AUTH/PASSWORD/FORGOT/ to the same action: the same zone counts it.
			expect((await forgot("127.0.0.14", "/API/V1/Auth/Password/Forgot/")).status).toBe(429);
			expect((await forgot("127.0.0.15", "/API/V1/Auth/Password/Forgot/")).status).toBe(202);
			// Other requests from that address are not the forgot zone's.
			expect((await send(nginx.port, "GET", "/api/v1/health", { from: "127.0.0.14" })).status).toBe(200);
		});

		it("a burst of 100 requests from one address: 41 pass at once (and one per 50 ms it takes), the rest get 429 with Retry-After 1", async () => {
			const started = performance.now();
			const burst = await Promise.all(Array.from({ length: 100 }, () => send(nginx.port, "GET", "/api/v1/health", { from: "127.0.0.16" })));
			const tookMs = performance.now() - started;
			const passed = burst.filter(a => a.status === 200).length;
			const refused = burst.filter(a => a.status === 429);
			// burst=40 at 20 a second: 41 at once, and one more for each 50 ms the burst takes.
			expect(passed).toBeGreaterThanOrEqual(41);
			expect(passed).toBeLessThanOrEqual(41 + Math.ceil(tookMs / 50));
			expect(refused.length).toBeGreaterThanOrEqual(30);
			expect(refused.length).toBe(100 - passed);
			expect(new Set(refused.map(a => `${a.headers["retry-after"]} ${a.text}`))).toEqual(
				new Set([`1 ${JSON.stringify(errorBody(429, "Too many requests, try again later"))}`]),
			);
		});

		it("refuses a body over BODY_LIMIT (100kb) and headers over 16 kB as the gateway does direct; a body at the limit reaches the gateway", async () => {
			const bodyOf = (bytes: number) => {
				const prefix = '{"amount":1,"padding":"';
				return `${prefix}${"x".repeat(bytes - prefix.length - 2)}"}`;
			};
			/** The same request through nginx and direct to a gateway; who answered through nginx, by its access log. */
			const both = async (opts: Parameters<typeof send>[3]) => {
				const [viaNginx, direct] = await Promise.all(
					[nginx.port, gateways[1].port].map(port => send(port, "POST", "/api/v1/transactions/topup", { from: "127.0.0.17", ...opts })),
				);
				// nginx logs a request once it is done with it, which for a refused body can be after the answer.
				const logged = await waitFor(() => nginx.accessLog().find(line => line.requestId === viaNginx.headers["x-request-id"]));
				return {
					viaNginx: [viaNginx.status, viaNginx.body],
					answeredBy: logged && (logged.upstream ? "gateway" : "nginx"),
					direct: [direct.status, direct.body],
				};
			};
			const tooLarge = [413, errorBody(413, "Request body too large")];
			expect(await both({ body: bodyOf(102_401) })).toEqual({ viaNginx: tooLarge, answeredBy: "nginx", direct: tooLarge });
			// At the limit nginx passes it on, and the gateway decides (no session: 401).
			const notSignedIn = [401, errorBody(401, "Not authenticated")];
			expect(await both({ body: bodyOf(102_400) })).toEqual({ viaNginx: notSignedIn, answeredBy: "gateway", direct: notSignedIn });
			const headersTooLarge = [431, errorBody(431, "Request headers too large")];
			expect(await both({ body: {}, headers: { "X-Padding": "x".repeat(20_000) } })).toEqual({
				viaNginx: headersTooLarge,
				answeredBy: "nginx",
				direct: headersTooLarge,
			});
		});

		it("a POST that reached a gateway is never sent to the other: a transfer whose gateway dies before answering gets 502 and moves the money once; a GET so cut is answered by the other", async () => {
			const from = "127.0.0.18";
			const [alice, bob] = [await signUpDirect(from), await signUpDirect(from)];
			expect((await send(gateways[0].port, "POST", "/api/v1/transactions/topup", { headers: alice.auth, body: { amount: 100 }, from })).status).toBe(201);

			spy.dieAfterNext("transactions.transfer");
			const transferId = `nginx-transfer-${crypto.randomUUID()}`;
			const cut = await send(nginx.port, "POST", "/api/v1/transactions/transfer", {
				headers: { ...alice.auth, "X-Request-Id": transferId },
				body: { amount: 10, toUserId: bob.id },
				from,
			});
			expect([cut.status, cut.body, cut.headers["retry-after"], cut.headers["x-request-id"]]).toEqual([
				502,
				errorBody(502, "Service temporarily unavailable, try again later"),
				"5",
				transferId,
			]);
			expect(spy.callsOf(transferId).map(call => call.action)).toEqual(["transactions.transfer"]);
			const list = await send(gateways[1].port, "GET", "/api/v1/transactions?type=Transfer", { headers: alice.auth, from });
			expect([list.body.total, list.body.transactions.map((t: { amount: number; status: string }) => [t.amount, t.status])]).toEqual([1, [[10, "Completed"]]]);

			spy.dieAfterNext("wallet.mine");
			const readId = `nginx-read-${crypto.randomUUID()}`;
			const read = await send(nginx.port, "GET", "/api/v1/wallet/user", { headers: { ...alice.auth, "X-Request-Id": readId }, from });
			expect([read.status, read.body.balance]).toEqual([200, 90]);
			const reads = spy.callsOf(readId);
			expect(reads.map(call => call.action)).toEqual(["wallet.mine", "wallet.mine"]);
			expect(new Set(reads.map(call => call.gateway))).toEqual(new Set(["gateway-1", "gateway-2"]));
			const bobs = await send(nginx.port, "GET", "/api/v1/wallet/user", { headers: bob.auth, from });
			expect(bobs.body.balance).toBe(10);
		});

		it("one gateway killed under load: every request is answered by the other; with both gone, 502 in the SPEC shape", async () => {
			const alice = await signUpDirect("127.0.0.19");
			/** A gateway gone at once, as on SIGKILL: no new connections, the open ones cut, then its broker leaves. */
			const kill = async (gateway: (typeof gateways)[number]) => {
				gateway.server.close();
				gateway.server.closeAllConnections();
				gateway.stopped = true;
				await gateway.broker.stop();
			};

			// Eight clients, ten requests a second each (under the general limit), until told to stop.
			let running = true;
			const answers: { at: number; status: number; nodeID?: string }[] = [];
			const client = async (n: number) => {
				while (running) {
					const res = await send(nginx.port, "GET", "/api/v1/health", { from: `127.0.1.${n}` }).catch((err: Error) => ({
						status: 0,
						body: { err: err.message },
					}));
					answers.push({ at: Date.now(), status: res.status, nodeID: res.body?.nodeID });
					await sleep(100);
				}
			};
			const clients = Array.from({ length: 8 }, (_, n) => client(n + 1));
			await waitFor(() => answers.length >= 16 || undefined, 5000);
			await kill(gateways[0]);
			const killedAt = Date.now();
			await sleep(1500);
			// A POST finds gateway 1 refusing connections: it was never sent there, so the other gets it.
			const topUpId = `nginx-topup-${crypto.randomUUID()}`;
			const topUp = await send(nginx.port, "POST", "/api/v1/transactions/topup", {
				headers: { ...alice.auth, "X-Request-Id": topUpId },
				body: { amount: 5 },
				from: "127.0.0.19",
			});
			running = false;
			await Promise.all(clients);

			expect(answers.filter(a => a.status !== 200)).toEqual([]);
			expect(answers.length).toBeGreaterThan(100);
			expect(new Set(answers.filter(a => a.at > killedAt).map(a => a.nodeID))).toEqual(new Set([gateways[1].broker.nodeID]));
			// Passive health: after a few failed tries nginx leaves the dead gateway out (fail_timeout), rather than trying it for each request.
			const dead = `127.0.0.1:${gateways[0].port}`;
			const retried = nginx.accessLog().filter(line => line.path === "/api/v1/health" && line.upstream.startsWith(`${dead}, `));
			expect(retried.length).toBeGreaterThanOrEqual(1);
			expect(retried.length).toBeLessThanOrEqual(3 + 8);
			expect(retried.every(line => line.status === 200)).toBe(true);
			expect([topUp.status, topUp.body.amount]).toEqual([201, 5]);
			expect(spy.callsOf(topUpId).map(call => [call.gateway, call.action])).toEqual([["gateway-2", "transactions.topup"]]);

			await kill(gateways[1]);
			const none = await send(nginx.port, "GET", "/api/v1/health", { from: "127.0.0.19" });
			expect([none.status, none.body, none.headers["retry-after"], none.headers["content-type"]]).toEqual([
				502,
				errorBody(502, "Service temporarily unavailable, try again later"),
				"5",
				"application/json; charset=utf-8",
			]);
		});
	},
);
