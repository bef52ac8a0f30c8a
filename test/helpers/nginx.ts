/**
 * The real nginx in front of a test's gateways: the template rendered as the
 * official nginx image renders /etc/nginx/templates (envsubst over the
 * variables that are defined, so nginx's own $variables stay), included in
 * the http {} of a minimal nginx.conf in a temp dir, and /usr/sbin/nginx run
 * as the current user in the foreground. Its access log (JSON lines, to
 * nginx's stdout) is kept in a file for the test to read.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import http, { type IncomingHttpHeaders } from "node:http";
import { freePort } from "./ports";
import os from "node:os";
import path from "node:path";
import { tcpReachable } from "./infra";
import { jsonLines } from "./json-lines";

export const NGINX_BIN = "/usr/sbin/nginx";
export const ENVSUBST_BIN = "/usr/bin/envsubst";
export const MINT_TEMPLATE = path.resolve(__dirname, "../../nginx/templates/mint.conf.template");

export function nginxNeed(): { name: string; available: boolean } {
	return { name: `nginx (${NGINX_BIN}) and envsubst (${ENVSUBST_BIN}, gettext-base)`, available: fs.existsSync(NGINX_BIN) && fs.existsSync(ENVSUBST_BIN) };
}

/**
 * What the image's 20-envsubst-on-templates.sh does: envsubst with the list
 * of the defined variables' names, so a `$name` nobody defined stays as it is.
 */
export function renderTemplate(template: string, vars: Record<string, string>): string {
	const env = { PATH: process.env.PATH ?? "/usr/bin:/bin", ...vars };
	const defined = Object.keys(env)
		.map(name => `\${${name}}`)
		.join(" ");
	return execFileSync(ENVSUBST_BIN, [defined], { input: fs.readFileSync(template, "utf8"), env, encoding: "utf8" });
}

export interface AccessLogLine {
	requestId: string;
	client: string;
	method: string;
	/** The path, without the query string. */
	path: string;
	status: number;
	upstream: string;
	upstreamStatus: string;
	limitReq: string;
}

export interface RunningNginx {
	port: number;
	/** http://127.0.0.1:<port>: what a browser on the page sends as Origin. */
	origin: string;
	/** The rendered template, as nginx read it. */
	rendered: string;
	accessLog(): AccessLogLine[];
	errorLog(): string;
	stop(): Promise<void>;
}

/** The http {} around the rendered file, as the image's nginx.conf has it, with every path in `dir`. */
function mainConf(dir: string): string {
	// As root, workers would run as `nobody` and could not use the temp dir; otherwise `user` does not apply.
	const user = process.getuid?.() === 0 ? `user ${os.userInfo().username};` : "";
	const temp = (name: string) => path.join(dir, "temp", name);
	return `daemon off;
${user}
worker_processes 2;
pid ${path.join(dir, "nginx.pid")};
error_log ${path.join(dir, "error.log")} info;
events { worker_connections 512; }
http {
    default_type application/octet-stream;
    sendfile on;
    keepalive_timeout 65;
    client_body_temp_path ${temp("client_body")};
    proxy_temp_path ${temp("proxy")};
    fastcgi_temp_path ${temp("fastcgi")};
    uwsgi_temp_path ${temp("uwsgi")};
    scgi_temp_path ${temp("scgi")};
    include ${path.join(dir, "conf.d")}/*.conf;
}
`;
}

/**
 * Renders the template with these gateways (host:port) and starts nginx on a
 * free port of 127.0.0.1 (or `port`); resolves once it accepts connections.
 */
export async function startNginx(opts: { gateways: [string, string]; port?: number; template?: string }): Promise<RunningNginx> {
	const port = opts.port ?? (await freePort());
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mint-nginx-"));
	fs.mkdirSync(path.join(dir, "conf.d"));
	fs.mkdirSync(path.join(dir, "temp"));
	const rendered = renderTemplate(opts.template ?? MINT_TEMPLATE, {
		NGINX_PORT: `127.0.0.1:${port}`,
		MINT_GATEWAY_1: opts.gateways[0],
		MINT_GATEWAY_2: opts.gateways[1],
	});
	fs.writeFileSync(path.join(dir, "conf.d/mint.conf"), rendered);
	const conf = path.join(dir, "nginx.conf");
	fs.writeFileSync(conf, mainConf(dir));
	const errorLogPath = path.join(dir, "error.log");
	const errorLog = () => (fs.existsSync(errorLogPath) ? fs.readFileSync(errorLogPath, "utf8") : "");

	// The access log goes to nginx's stdout (as in the image), here a file: /dev/stdout cannot reopen the socket Node's pipes are.
	const accessLogPath = path.join(dir, "access.log");
	const stdout = fs.openSync(accessLogPath, "a");
	const child: ChildProcess = spawn(NGINX_BIN, ["-p", `${dir}/`, "-c", conf, "-e", errorLogPath], { stdio: ["ignore", stdout, "pipe"] });
	fs.closeSync(stdout);
	let stderr = "";
	child.stderr?.on("data", (chunk: Buffer) => {
		stderr += chunk.toString();
	});
	const exited = new Promise<void>(resolve => child.once("exit", () => resolve()));
	const remove = () => fs.rmSync(dir, { recursive: true, force: true });

	const deadline = Date.now() + 10_000;
	while (!tcpReachable("127.0.0.1", port)) {
		if (child.exitCode !== null || child.signalCode !== null || Date.now() > deadline) {
			child.kill("SIGKILL");
			await exited;
			const why = `nginx did not start:\n${stderr}\n${errorLog()}`;
			remove();
			throw new Error(why);
		}
		await new Promise(resolve => setTimeout(resolve, 50));
	}

	return {
		port,
		origin: `http://127.0.0.1:${port}`,
		rendered,
		accessLog: () => jsonLines<AccessLogLine>(fs.readFileSync(accessLogPath, "utf8")),
		errorLog,
		async stop() {
			// SIGTERM: nginx's fast shutdown, open streams included.
			if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
			const killer = setTimeout(() => child.kill("SIGKILL"), 5000);
			await exited;
			clearTimeout(killer);
			remove();
		},
	};
}

export interface Answer {
	status: number;
	headers: IncomingHttpHeaders;
	text: string;
	/** The JSON body, or undefined when it is not JSON. */
	body: any;
}

/**
 * One HTTP/1.1 request on a connection of its own, from `from` (any
 * 127.x.y.z: a client address of the test's own, so nginx's per-address
 * limits and the gateway's client IP tell the test's clients apart).
 */
export function send(
	port: number,
	method: string,
	route: string,
	opts: { headers?: Record<string, string>; body?: unknown; from?: string; timeoutMs?: number } = {},
): Promise<Answer> {
	const headers: Record<string, string> = { ...opts.headers };
	let payload: Buffer | undefined;
	if (opts.body !== undefined) {
		payload = Buffer.isBuffer(opts.body) ? opts.body : Buffer.from(typeof opts.body === "string" ? opts.body : JSON.stringify(opts.body));
		headers["Content-Type"] ??= "application/json";
		headers["Content-Length"] = String(payload.length);
	}
	return new Promise((resolve, reject) => {
		const req = http.request({ host: "127.0.0.1", port, method, path: route, headers, localAddress: opts.from, agent: false }, res => {
			const chunks: Buffer[] = [];
			res.on("data", (chunk: Buffer) => chunks.push(chunk));
			res.on("error", reject);
			res.on("end", () => {
				const text = Buffer.concat(chunks).toString("utf8");
				let body: unknown;
				try {
					body = JSON.parse(text);
				} catch {
					body = undefined;
				}
				resolve({ status: res.statusCode ?? 0, headers: res.headers, text, body });
			});
		});
		req.setTimeout(opts.timeoutMs ?? 15_000, () => req.destroy(new Error(`${method} ${route} timed out`)));
		req.on("error", reject);
		req.end(payload);
	});
}
