/**
 * 1,000 idle wallet streams on one node (a child process, as `npm start`
 * runs it): what they cost in memory (its RSS before and after, printed),
 * that the node serves every other request meanwhile (a stream holds no
 * action call, so none waits in the gateway's bulkhead), and that they all
 * end when the node stops.
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { nodeOptions } from "../../lib/node-options";
import { buildMint, type BuiltMint } from "../helpers/dist";
import { openStream, type SseStream } from "../helpers/sse";

const STREAMS = 1000;

let built: BuiltMint;
let dataDir: string;
let child: ChildProcess | undefined;

beforeAll(() => {
	built = buildMint("streams");
	dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "mint-streams-"));
});
afterAll(() => {
	child?.kill("SIGKILL");
	built.remove();
	fs.rmSync(dataDir, { recursive: true, force: true });
});

/** The node's resident memory now (Linux /proc), in MB. */
function rssMb(pid: number): number {
	const line = fs
		.readFileSync(`/proc/${pid}/status`, "utf8")
		.split("\n")
		.find(l => l.startsWith("VmRSS:"));
	return Number(/(\d+)/.exec(line ?? "")?.[1]) / 1024;
}

const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms));

it(`${STREAMS} idle streams: memory per stream, every other request still served, all ended on SIGTERM`, async () => {
	const node = spawn(process.execPath, [...nodeOptions(), path.join(built.dist, "server.js")], {
		cwd: path.dirname(built.dist),
		env: { PATH: process.env.PATH ?? "", PORT: "0", DATA_DIR: dataDir, JWT_KEY_BITS: "2048", LOG_LEVEL: "warn", STREAMS_PER_USER: String(STREAMS) },
	});
	child = node;
	let output = "";
	const exited = new Promise<number | null>(resolve => node.on("exit", code => resolve(code)));
	const url = await new Promise<string>((resolve, reject) => {
		const timer = setTimeout(() => reject(new Error(`no start line within 30 s:\n${output}`)), 30_000);
		const onData = (chunk: Buffer) => {
			output += chunk.toString();
			const match = /Mint is up: (http:\/\/\S+)\/api\/v1/.exec(output);
			if (match) {
				clearTimeout(timer);
				resolve(match[1]);
			}
		};
		node.stdout.on("data", onData);
		node.stderr.on("data", onData);
	});
	const port = Number(new URL(url).port);

	const signup = await fetch(`${url}/api/v1/auth/signup`, {
		method: "POST",
		headers: { "Content-Type": "application/json" },
		body: JSON.stringify({ firstName: "Ada", lastName: "Lovelace", email: "ada@example.com", password: "correct horse", passwordConfirm: "correct horse" }),
	});
	expect(signup.status).toBe(201);
	const access = /access\.token=([^;]+)/.exec(signup.headers.getSetCookie().join("\n"))?.[1];
	const headers = { Authorization: `Bearer ${access}` };
	const open = async () => {
		const stream = await openStream(port, { headers });
		expect(stream.status).toBe(200);
		await stream.until(s => s.events.length >= 1, 20_000);
		return stream;
	};

	// Warm: the code paths a stream takes have run, then the node is left to settle.
	for (const stream of await Promise.all(Array.from({ length: 20 }, open))) stream.close();
	await sleep(2000);
	const before = rssMb(node.pid as number);

	const streams: SseStream[] = [];
	for (let i = 0; i < STREAMS; i += 100) streams.push(...(await Promise.all(Array.from({ length: 100 }, open))));
	await sleep(2000);
	const after = rssMb(node.pid as number);
	const perStreamKb = ((after - before) * 1024) / STREAMS;
	console.log(
		`${STREAMS} idle wallet streams: RSS ${before.toFixed(1)} MB before, ${after.toFixed(1)} MB after: +${(after - before).toFixed(1)} MB, ${perStreamKb.toFixed(1)} kB per stream`,
	);
	expect(streams.every(s => s.named()[0]?.[0] === "balance")).toBe(true);
	expect(perStreamKb).toBeLessThan(100);

	// Every other request is served while they are open, and the user's cap holds.
	for (const route of ["/api/v1/health", "/api/v1/wallet/user"]) expect((await fetch(`${url}${route}`, { headers })).status).toBe(200);
	expect((await openStream(port, { headers })).status).toBe(429);

	node.kill("SIGTERM");
	expect(await exited).toBe(0);
	const ends = await Promise.all(streams.map(s => s.ended));
	expect(ends.every(Boolean)).toBe(true);
	expect(streams.every(s => s.named().at(-1)?.[0] === "end")).toBe(true);
	child = undefined;
}, 120_000);
