/**
 * What a person sees when a node starts: the banner saying where everything
 * is, and log lines readable on a terminal (a real pseudo-terminal, from
 * util-linux's script(1)) while pipes keep getting pino's JSON lines.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { stripVTControlCharacters } from "node:util";
import { nodeOptions } from "../../lib/node-options";
import { bannerDetails } from "../../server";
import { buildMint, type BuiltMint } from "../helpers/dist";
import { describeWithInfra } from "../helpers/infra";
import { testConfig } from "../helpers/mint";
import { freePort } from "../helpers/ports";
import { jsonLines } from "../helpers/json-lines";

interface Running {
	output: () => string;
	/** The start banner's first line and the ones after it. */
	banner: Promise<string[]>;
	stop(): Promise<number | null>;
}

let build: BuiltMint;
const dirs: string[] = [];
const tempDir = () => {
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mint-readable-"));
	dirs.push(dir);
	return dir;
};

beforeAll(() => {
	build = buildMint("readable");
});
afterAll(() => {
	build.remove();
	for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
});

/** The built server (through script(1) on a pseudo-terminal with `pty`), until its banner is printed. */
function start(env: Record<string, string>, { pty = false } = {}): Running {
	const server = path.join(build.dist, "server.js");
	const child: ChildProcess = pty
		? spawn("script", ["-qfec", `'${process.execPath}' ${nodeOptions().join(" ")} '${server}'`, "/dev/null"], {
				env: { ...baseEnv(), TERM: "xterm-256color", ...env },
			})
		: spawn(process.execPath, [...nodeOptions(), server], { env: { ...baseEnv(), ...env } });
	let output = "";
	const exit = new Promise<number | null>(resolve => child.on("exit", code => resolve(code)));
	const banner = new Promise<string[]>((resolve, reject) => {
		const timer = setTimeout(() => reject(new Error(`no banner within 20 s:\n${output}`)), 20_000);
		const onData = (chunk: Buffer) => {
			output += chunk.toString().replaceAll("\r\n", "\n");
			// The banner is one write: its first line and the indented ones after it.
			const match = /^(Mint (?:is up|node is up).*\n(?: {2}\S.*\n)+)/m.exec(output);
			if (match) {
				clearTimeout(timer);
				resolve(match[1].trimEnd().split("\n"));
			}
		};
		child.stdout?.on("data", onData);
		child.stderr?.on("data", onData);
		exit.then(code => {
			clearTimeout(timer);
			reject(new Error(`exited with ${code} before its banner:\n${output}`));
		});
	});
	banner.catch(() => undefined);
	return {
		output: () => output,
		banner,
		stop: () => {
			if (child.exitCode === null) child.kill("SIGTERM");
			return exit;
		},
	};
}

const baseEnv = () => ({ PATH: process.env.PATH ?? "", PORT: "0", JWT_KEY_BITS: "2048", LOG_LEVEL: "warn", DATA_DIR: tempDir() });

const signup = (base: string, requestId: string) =>
	fetch(`${base}/api/v1/auth/signup`, {
		method: "POST",
		headers: { "Content-Type": "application/json", "X-Request-Id": requestId },
		body: JSON.stringify({ firstName: "Ada", lastName: "Lovelace", email: "ada@example.com", password: "correct horse", passwordConfirm: "correct horse" }),
	});

describe("the start banner", () => {
	it("says where the API, its docs, the metrics, the data and the mail are, under the first line scripts read; log lines through a pipe stay JSON", async () => {
		const metricsPort = await freePort();
		const dataDir = tempDir();
		const mint = start({ DATA_DIR: dataDir, METRICS_PORT: String(metricsPort), LOG_LEVEL: "info" });
		try {
			const [first, ...details] = await mint.banner;
			const base = /^Mint is up: (http:\/\/127\.0\.0\.1:\d+)\/api\/v1 \(services: api, auth, wallet, transactions, notifications\)$/.exec(first)![1];
			expect(details).toEqual([
				`  docs     ${base}/api/docs`,
				`  metrics  http://127.0.0.1:${metricsPort}/metrics`,
				`  data     ${dataDir} (embedded files)`,
				`  mail     ${path.join(dataDir, "mail")} (.eml files; SMTP_URL sends them)`,
			]);
			// Each address answers.
			expect((await fetch(`${base}/api/v1/health`)).status).toBe(200);
			const docs = await fetch(`${base}/api/docs`);
			expect([docs.status, docs.headers.get("content-type")]).toEqual([200, expect.stringContaining("text/html")]);
			const metrics = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
			expect([metrics.status, await metrics.text()]).toEqual([200, expect.stringContaining("moleculer_")]);

			// Through a pipe, log lines stay pino's JSON lines, with the same fields as ever.
			expect((await signup(base, "req-json-7")).status).toBe(201);
			await new Promise(resolve => setTimeout(resolve, 300));
			const lines = jsonLines(mint.output());
			const request = lines.find(l => l.msg === "http request" && l.requestId === "req-json-7");
			expect(Object.keys(request)).toEqual([
				"level",
				"time",
				"pid",
				"hostname",
				"nodeID",
				"ns",
				"mod",
				"svc",
				"requestId",
				"traceId",
				"spanId",
				"method",
				"path",
				"status",
				"ms",
				"ip",
				"msg",
			]);
			expect(typeof request.time).toBe("number");
		} finally {
			expect(await mint.stop()).toBe(0);
		}
	}, 30_000);

	it("on a node without the gateway: its readiness URL on the first line, then metrics off, its data and its mail", async () => {
		const port = await freePort();
		const dataDir = tempDir();
		const mint = start({ DATA_DIR: dataDir, SERVICES: "notifications", PORT: String(port) });
		try {
			expect(await mint.banner).toEqual([
				`Mint node is up (services: notifications) (ready: http://127.0.0.1:${port}/ready)`,
				"  metrics  off (METRICS_PORT serves them)",
				`  data     ${dataDir} (embedded files)`,
				`  mail     ${path.join(dataDir, "mail")} (.eml files; SMTP_URL sends them)`,
			]);
		} finally {
			expect(await mint.stop()).toBe(0);
		}
	}, 30_000);

	it("names MongoDB and SMTP by their hosts, never their credentials", () => {
		const config = testConfig({
			DATA_DIR: tempDir(),
			SERVICES: "api,auth,notifications",
			NAMESPACE: "shop",
			MONGO_URI: "mongodb://mint:s3cret@db1:27017,db2:27017/mint?replicaSet=rs0&authSource=admin",
			SMTP_URL: "smtps://mailer:hunter2@smtp.example.com:465",
			HOST: "0.0.0.0",
			METRICS_PORT: "9100",
		});
		expect(bannerDetails(config, 3000)).toEqual([
			"  docs     http://localhost:3000/api/docs",
			"  metrics  http://localhost:9100/metrics",
			"  data     MongoDB mongodb://db1:27017,db2:27017 (databases shop-auth, shop-notifications)",
			"  mail     smtps://smtp.example.com:465",
		]);
		expect(
			bannerDetails(testConfig({ DATA_DIR: tempDir(), SERVICES: "wallet", MONGO_URI: "mongodb+srv://u:p@cluster0.example.net/?retryWrites=true" })),
		).toEqual(["  metrics  off (METRICS_PORT serves them)", "  data     MongoDB mongodb+srv://cluster0.example.net (databases mint-wallet)"]);
	});
});

const script = { name: "script(1) from util-linux, for a pseudo-terminal", available: spawnSync("script", ["--version"]).status === 0 };

describeWithInfra("log lines on a terminal", script, () => {
	const plain = (text: string) => stripVTControlCharacters(text);

	it("are readable: clock time, level, node/service, request id, message, the other fields; LOG_FORMAT=json keeps them JSON", async () => {
		const pretty = start({ LOG_LEVEL: "info" }, { pty: true });
		const json = start({ LOG_LEVEL: "info", LOG_FORMAT: "json" }, { pty: true });
		let banner: string[];
		try {
			[banner] = await Promise.all([pretty.banner, json.banner]);
			const base = /Mint is up: (\S+)\/api\/v1/.exec(banner[0])![1];
			expect((await signup(base, "req-pretty-7")).status).toBe(201);
			await new Promise(resolve => setTimeout(resolve, 300));
		} finally {
			expect(await Promise.all([pretty.stop(), json.stop()])).toEqual([0, 0]);
		}
		const lines = plain(pretty.output()).split("\n");
		expect(banner[0]).toMatch(/^Mint is up: http:\/\/127\.0\.0\.1:\d+\/api\/v1 \(services: /);
		expect(lines.filter(l => l.startsWith("{"))).toEqual([]);
		const request = lines.find(l => l.includes("[req-pretty-7] http request"))!;
		expect(request).toMatch(
			/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: \S+-\d+\/api \[req-pretty-7\] http request \{"spanId":"[0-9a-f]{16}","method":"POST","path":"\/auth\/signup","status":201,"ms":[\d.]+,"ip":"127\.0\.0\.1"\}$/,
		);
		expect(lines.find(l => l.includes("[req-pretty-7] user signed up"))).toMatch(
			/^\[[\d:.]+\] INFO: \S+\/auth \[req-pretty-7\] user signed up \{"spanId":"\w+","userId":"[\w-]+"\}$/,
		);
		expect(pretty.output()).not.toContain("correct horse");

		const jsonLines = json
			.output()
			.split("\n")
			.filter(l => l.startsWith("{"));
		expect(jsonLines.length).toBeGreaterThan(10);
		expect(jsonLines.every(l => typeof JSON.parse(l).time === "number")).toBe(true);
	}, 30_000);
});
