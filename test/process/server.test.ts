/** The real entry point as `npm start` runs it: a child process, signals, exit codes, data on disk. */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ASYNC_CONTEXT_FRAME, nodeOptions } from "../../lib/node-options";
import { jsonLines } from "../helpers/json-lines";

const ROOT = path.resolve(__dirname, "../..");
const SERVER = path.join(ROOT, "dist/server.js");

beforeAll(() => {
	// The same build `npm start` runs first.
	execFileSync(process.execPath, [path.join(ROOT, "node_modules/typescript/bin/tsc"), "-p", ROOT], { stdio: "inherit" });
}, 120_000);

interface Running {
	child: ChildProcess;
	url: string;
	output: () => string;
	exit: Promise<number | null>;
}

/** The built server, started as `npm start` starts it: with the Node.js options of lib/node-options.ts unless others are given. */
function start(env: Record<string, string>, nodeArgs: string[] = nodeOptions()): Promise<Running> {
	const child = spawn(process.execPath, [...nodeArgs, SERVER], {
		cwd: ROOT,
		env: { PATH: process.env.PATH ?? "", PORT: "0", JWT_KEY_BITS: "2048", LOG_LEVEL: "warn", ...env },
	});
	let output = "";
	const exit = new Promise<number | null>(resolve => child.on("exit", code => resolve(code)));
	return new Promise((resolve, reject) => {
		const timer = setTimeout(() => reject(new Error(`no start line within 20 s:\n${output}`)), 20_000);
		const onData = (chunk: Buffer) => {
			output += chunk.toString();
			const match = /Mint is up: (http:\/\/\S+)\/api\/v1/.exec(output);
			if (match) {
				clearTimeout(timer);
				resolve({ child, url: match[1], output: () => output, exit });
			}
		};
		child.stdout.on("data", onData);
		child.stderr.on("data", onData);
		exit.then(code => {
			clearTimeout(timer);
			reject(new Error(`exited with ${code} before starting:\n${output}`));
		});
	});
}

/** Ada's signup, as each test here makes it: a 201 with her cookies. */
function signUpAda(url: string, headers: Record<string, string> = {}): Promise<Response> {
	return fetch(`${url}/api/v1/auth/signup`, {
		method: "POST",
		headers: { "Content-Type": "application/json", ...headers },
		body: JSON.stringify({ firstName: "Ada", lastName: "Lovelace", email: "ada@example.com", password: "correct horse", passwordConfirm: "correct horse" }),
	});
}

describe("npm start's entry point", () => {
	let dataDir: string;
	beforeEach(() => {
		dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "mint-proc-"));
	});
	afterEach(() => fs.rmSync(dataDir, { recursive: true, force: true }));

	it("prints its URL, serves, stops cleanly on SIGINT and keeps users and keys for the next start", async () => {
		const first = await start({ DATA_DIR: dataDir });
		const signup = await signUpAda(first.url);
		expect(signup.status).toBe(201);
		const accessToken = /access\.token=([^;]+)/.exec(signup.headers.get("set-cookie") ?? "")?.[1];
		expect(accessToken).toBeDefined();
		first.child.kill("SIGINT");
		expect(await first.exit).toBe(0);
		expect(fs.readFileSync(path.join(dataDir, "auth/users.db"), "utf8")).toContain("ada@example.com");
		// Private to the node's user: DATA_DIR and its folders 0700, its files (the generated secret included) 0600.
		for (const dir of [dataDir, path.join(dataDir, "auth"), path.join(dataDir, "mail")]) expect([dir, fs.statSync(dir).mode & 0o777]).toEqual([dir, 0o700]);
		for (const file of ["auth/users.db", "auth/sessions.db", "auth-secret", ...fs.readdirSync(path.join(dataDir, "mail")).map(f => `mail/${f}`)]) {
			expect([file, fs.statSync(path.join(dataDir, file)).mode & 0o777]).toEqual([file, 0o600]);
		}

		const second = await start({ DATA_DIR: dataDir });
		try {
			const me = await fetch(`${second.url}/api/v1/auth/user`, { headers: { Authorization: `Bearer ${accessToken}` } });
			expect(((await me.json()) as { email: string }).email).toBe("ada@example.com");
		} finally {
			second.child.kill("SIGTERM");
			expect(await second.exit).toBe(0);
		}
	}, 60_000);

	// Started as npm start does, and without the option (as `node dist/server.js` alone on Node 22: AsyncLocalStorage on async_hooks): the same lines, and a warning.
	it.each([
		["with", nodeOptions()],
		["without", ["--no-experimental-async-context-frame"]],
	])(
		"writes the request's X-Request-Id on the log lines of the services that served it, started %s Node's async context frames",
		async (mode, nodeArgs) => {
			const mint = await start({ DATA_DIR: dataDir, LOG_LEVEL: "info" }, nodeArgs);
			try {
				const res = await signUpAda(mint.url, { "X-Request-Id": "req-log-check-42" });
				expect(res.status).toBe(201);
				await new Promise(r => setTimeout(r, 300));
				const lines = jsonLines(mint.output());
				const tagged = lines.filter(l => l.requestId === "req-log-check-42");
				expect(tagged.map(l => l.msg)).toEqual(expect.arrayContaining(["user signed up", "http request"]));
				expect([...new Set(tagged.map(l => l.svc))]).toEqual(expect.arrayContaining(["auth", "api", "notifications"]));
				const warned = lines.filter(l => l.level === 40 && l.msg.startsWith(`started without ${ASYNC_CONTEXT_FRAME}`));
				expect(warned).toHaveLength(mode === "with" ? 0 : 1);
				// Nothing secret on any line.
				expect(mint.output()).not.toContain("correct horse");
			} finally {
				mint.child.kill("SIGTERM");
				expect(await mint.exit).toBe(0);
			}
		},
		60_000,
	);

	it("refuses to start on a bad variable, naming it, with exit code 2", async () => {
		for (const [env, variable] of [
			[{ PORT: "eighty" }, "PORT"],
			[{ NODE_ENV: "production" }, "AUTH_SECRET"],
			[{ NODE_ENV: "production", AUTH_SECRET: `${"k".repeat(20)}Zq81mWx0Tt3pLr7v`, COOKIE_SECURE: "false" }, "COOKIE_SECURE"],
		] as const) {
			const result = await start({ DATA_DIR: dataDir, ...env }).then(
				() => "started",
				(err: Error) => err.message,
			);
			expect(result).toMatch(/^exited with 2 before starting/);
			expect(result).toContain(`Invalid configuration: ${variable}`);
		}
	}, 60_000);

	it("survives the 90 kB login of 15,000 nested objects that once killed it, and prints no deprecation warning", async () => {
		const mint = await start({ DATA_DIR: dataDir });
		try {
			const res = await fetch(`${mint.url}/api/v1/auth/login`, {
				method: "POST",
				headers: { "Content-Type": "application/json" },
				body: `{"email":${'{"a":'.repeat(15_000)}1${"}".repeat(15_000)},"password":"x"}`,
			});
			expect([res.status, await res.json()]).toEqual([400, { error: { message: "The JSON body is nested deeper than 32 levels", status: 400 } }]);
			const signup = await signUpAda(mint.url);
			expect(signup.status).toBe(201);
			expect(mint.output()).not.toContain("DeprecationWarning");
		} finally {
			mint.child.kill("SIGTERM");
			expect(await mint.exit).toBe(0);
		}
	}, 60_000);

	it("on the embedded store without Redis, loads neither mongoose nor ioredis (it starts sooner and smaller without them); with REDIS_URL, ioredis", async () => {
		// What the node loaded, listed from outside the product: a preloaded script writes its packages as it exits.
		const lister = path.join(dataDir, "list-packages.js");
		const listed = path.join(dataDir, "packages.json");
		fs.writeFileSync(
			lister,
			`process.on("exit", () => require("node:fs").writeFileSync(${JSON.stringify(listed)}, JSON.stringify([...new Set(Object.keys(require.cache).map(f => /node_modules\\/((?:@[^/]+\\/)?[^/]+)/.exec(f)?.[1]).filter(Boolean))])));\n`,
		);
		const loaded = async (env: Record<string, string>, serve: boolean): Promise<string[]> => {
			const mint = await start({ DATA_DIR: dataDir, ...env }, [...nodeOptions(), "--require", lister]);
			if (serve) {
				const signup = await signUpAda(mint.url);
				expect(signup.status).toBe(201);
			}
			mint.child.kill("SIGTERM");
			expect(await mint.exit).toBe(0);
			return JSON.parse(fs.readFileSync(listed, "utf8"));
		};
		const embedded = await loaded({}, true);
		expect(embedded).toEqual(expect.arrayContaining(["moleculer", "@seald-io/nedb", "nodemailer"]));
		expect(embedded.filter(name => ["mongoose", "mongodb", "ioredis"].includes(name))).toEqual([]);
		// The same node with REDIS_URL loads ioredis as it starts (this machine's Redis, or one that is down: the client is made
		// either way), in a namespace of its own; it serves nothing: signups from this address are counted in that shared Redis.
		const redisUrl = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
		expect(await loaded({ REDIS_URL: redisUrl, NAMESPACE: `mint-loads-${process.pid}` }, false)).toContain("ioredis");
	}, 60_000);

	it.each([
		["an uncaught exception", "setImmediate(() => { throw new Error('injected fault'); })", "uncaught exception"],
		["an unhandled promise rejection", "Promise.reject(new Error('injected fault'))", "unhandled promise rejection"],
	])(
		"exits with code 1 after %s, logging it, so the supervisor restarts the node",
		async (_name, fault, logged) => {
			// Fault injection from outside the product: a preloaded script raises the fault on SIGUSR2.
			const injector = path.join(dataDir, "inject-fault.js");
			fs.writeFileSync(injector, `process.on("SIGUSR2", () => { ${fault}; });\n`);
			const mint = await start({ DATA_DIR: dataDir }, [...nodeOptions(), "--require", injector]);
			expect((await fetch(`${mint.url}/api/v1/health`)).status).toBe(200);
			mint.child.kill("SIGUSR2");
			expect(await mint.exit).toBe(1);
			const fatal = jsonLines(mint.output()).find(l => l.level === 60);
			expect(fatal.msg).toBe(`${logged}; exiting for the supervisor to restart this node`);
			expect(fatal.err.message).toBe("injected fault");
		},
		60_000,
	);
});
