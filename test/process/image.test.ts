/**
 * The Docker image runs every kind of node. There is no Docker engine here,
 * so this replays the Dockerfile's runtime stage: its COPY lines from an
 * emulated build stage into a fresh folder, its ENV, its USER (an
 * unprivileged account, when the test runs as root), its CMD, and its
 * HEALTHCHECK command, which must pass.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { RABBITMQ_URL, describeWithInfra, rabbitmqNeed, removeFromRabbitmq } from "../helpers/infra";
import { waitFor } from "../helpers/mint";
import { freePort } from "../helpers/ports";

const ROOT = path.resolve(__dirname, "../..");

interface Stage {
	from: string;
	lines: string[];
}

/** The Dockerfile's stages, each with its instructions (continuation lines joined, comments dropped). */
function stagesOf(dockerfile: string): Stage[] {
	const lines = dockerfile
		.replace(/\\\n/g, " ")
		.split("\n")
		.map(l => l.trim())
		.filter(l => l && !l.startsWith("#"));
	const stages: Stage[] = [];
	for (const line of lines) {
		if (/^FROM\s/i.test(line)) stages.push({ from: line, lines: [] });
		else stages[stages.length - 1].lines.push(line);
	}
	return stages;
}

const dockerfile = fs.readFileSync(path.join(ROOT, "Dockerfile"), "utf8");
const [buildStage, runtime] = stagesOf(dockerfile);
const instruction = (name: string) => runtime.lines.filter(l => l.toUpperCase().startsWith(`${name} `)).map(l => l.slice(name.length + 1).trim());
const WORKDIR = instruction("WORKDIR")[0];
const runAsRoot = process.getuid?.() === 0;
const UNPRIVILEGED = { uid: 65534, gid: 65534 }; // nobody: stands in for the image's `node` user

/** The build stage's /app: the sources (as `COPY . .` takes them), the compiled dist, its node_modules, the data folder. */
function emulateBuildStage(dir: string) {
	const ignored = new Set(
		fs
			.readFileSync(path.join(ROOT, ".dockerignore"), "utf8")
			.split("\n")
			.map(l => l.trim())
			.filter(Boolean),
	);
	for (const entry of fs.readdirSync(ROOT)) {
		if (ignored.has(entry) || entry === "node_modules") continue;
		fs.cpSync(path.join(ROOT, entry), path.join(dir, entry), { recursive: true });
	}
	// 360 MB are not copied: node_modules links to this checkout's (the image prunes dev dependencies).
	fs.symlinkSync(path.join(ROOT, "node_modules"), path.join(dir, "node_modules"));
	execFileSync(process.execPath, [path.join(ROOT, "node_modules/typescript/bin/tsc"), "-p", dir, "--outDir", path.join(dir, "dist")], { stdio: "inherit" });
	if (buildStage.lines.some(l => /mkdir -p \/app\/data\b/.test(l))) fs.mkdirSync(path.join(dir, "data"));
}

/** The runtime stage's COPY --from=build lines, replayed from the emulated build stage into `app`. */
function replayCopies(build: string, app: string): string[] {
	const replayed: string[] = [];
	for (const copy of instruction("COPY")) {
		const match = /^((?:--\S+\s+)*)(\S+)\s+(\S+)$/.exec(copy);
		if (!match) throw new Error(`cannot replay COPY ${copy}`);
		const [, flags, source, target] = match;
		expect(flags).toContain("--from=build");
		const from = path.join(build, path.relative("/app", source));
		const to = path.join(app, target);
		if (!fs.existsSync(from)) throw new Error(`COPY ${copy}: the build stage has no ${source}`);
		if (fs.lstatSync(from).isSymbolicLink()) fs.symlinkSync(fs.readlinkSync(from), to);
		else fs.cpSync(from, to, { recursive: true });
		if (/--chown=/.test(flags) && runAsRoot) execFileSync("chown", ["-R", `${UNPRIVILEGED.uid}:${UNPRIVILEGED.gid}`, to]);
		replayed.push(target);
	}
	return replayed;
}

const imageEnv = () =>
	Object.fromEntries(
		instruction("ENV")
			.flatMap(l => l.split(/\s+/))
			.map(pair => pair.split("=") as [string, string]),
	);
const jsonArray = (text: string) => JSON.parse(text.slice(text.indexOf("["))) as string[];
const healthcheck = () => jsonArray(instruction("HEALTHCHECK")[0]);
const command = () => jsonArray(instruction("CMD")[0]);
const asNode = (argv: string[]) => (argv[0] === "node" ? [process.execPath, ...argv.slice(1)] : argv);

describe("the Dockerfile's runtime stage", () => {
	let build: string;
	let app: string;
	const children: ChildProcess[] = [];

	beforeAll(() => {
		build = fs.mkdtempSync(path.join(os.tmpdir(), "mint-image-build-"));
		app = fs.mkdtempSync(path.join(os.tmpdir(), "mint-image-app-"));
		fs.chmodSync(app, 0o755);
		emulateBuildStage(build);
		replayCopies(build, app);
	}, 120_000);

	afterAll(() => {
		for (const child of children) child.kill("SIGKILL");
		fs.rmSync(build, { recursive: true, force: true });
		fs.rmSync(app, { recursive: true, force: true });
	});

	/** Starts the image's CMD in the replayed folder as the image's user would, and waits for its HEALTHCHECK to pass. */
	async function startNode(env: Record<string, string>) {
		const port = await freePort();
		const fullEnv = {
			PATH: process.env.PATH ?? "",
			...imageEnv(),
			PORT: String(port),
			AUTH_SECRET: crypto.randomBytes(36).toString("base64url"),
			JWT_KEY_BITS: "2048",
			LOG_LEVEL: "warn",
			...env,
		};
		const [bin, ...args] = asNode(command());
		const child = spawn(bin, args, { cwd: app, env: fullEnv, ...(runAsRoot ? UNPRIVILEGED : {}) });
		children.push(child);
		let output = "";
		child.stdout!.on("data", c => (output += c));
		child.stderr!.on("data", c => (output += c));
		let exited: number | null | undefined;
		child.on("exit", code => (exited = code));
		const [hcBin, ...hcArgs] = asNode(healthcheck());
		await waitFor(() => {
			if (exited !== undefined) throw new Error(`the node exited with ${exited}:\n${output}`);
			return spawnSync(hcBin, hcArgs, { env: fullEnv, timeout: 3000 }).status === 0 || undefined;
		}, 30_000).catch(err => {
			throw new Error(`${(err as Error).message}\n${output}`);
		});
		const stop = async () => {
			child.kill("SIGTERM");
			await waitFor(() => exited !== undefined, 15_000);
			return exited;
		};
		return { port, stop, output: () => output };
	}

	it("copies what a node needs, keeps data in a volume owned by the node's user, and checks health at /ready", () => {
		expect(instruction("USER")).toEqual(["node"]);
		expect(instruction("VOLUME")).toEqual([`${WORKDIR}/data`]);
		expect(instruction("HEALTHCHECK")[0]).toContain("/ready");
		expect(fs.existsSync(path.join(app, "templates/mail/layout.html.hbs"))).toBe(true);
		expect(fs.existsSync(path.join(app, "public/verify-email.html"))).toBe(true);
		expect(fs.existsSync(path.join(app, "dist/server.js"))).toBe(true);
		if (runAsRoot) expect(fs.statSync(path.join(app, "data")).uid).toBe(UNPRIVILEGED.uid);
	});

	it("runs all services: healthy, serves a signup and writes its welcome email under the data volume, serves the pages", async () => {
		const node = await startNode({});
		try {
			const res = await fetch(`http://127.0.0.1:${node.port}/api/v1/auth/signup`, {
				method: "POST",
				headers: { "Content-Type": "application/json" },
				body: JSON.stringify({ firstName: "Ada", lastName: "Lovelace", email: "ada@example.com", password: "correct horse", passwordConfirm: "correct horse" }),
			});
			expect(res.status).toBe(201);
			const mail = await waitFor(() => {
				const dir = path.join(app, "data/mail");
				return (fs.existsSync(dir) && fs.readdirSync(dir).find(f => f.endsWith(".eml"))) || undefined;
			}, 10_000);
			expect(fs.readFileSync(path.join(app, "data/mail", mail), "utf8")).toContain("Welcome to Mint");
			const ready = (await (await fetch(`http://127.0.0.1:${node.port}/ready`)).json()) as { status: string };
			expect(ready.status).toBe("ready");
			// The pages the email links open, the docs page and Swagger UI from the image's node_modules.
			for (const [page, type] of [
				["/verify-email", "text/html; charset=utf-8"],
				["/reset-password", "text/html; charset=utf-8"],
				["/api/docs", "text/html; charset=utf-8"],
				["/api/docs/swagger-ui-bundle.js", "text/javascript; charset=utf-8"],
				["/api/v1/openapi.json", "application/json; charset=utf-8"],
			]) {
				const res = await fetch(`http://127.0.0.1:${node.port}${page}`);
				expect([page, res.status, res.headers.get("content-type")]).toEqual([page, 200, type]);
			}
		} finally {
			expect(await node.stop()).toBe(0);
		}
	}, 60_000);

	describeWithInfra("with RabbitMQ", rabbitmqNeed(), () => {
		const namespace = `mint-image-${crypto.randomUUID().slice(0, 8)}`;
		afterAll(() =>
			removeFromRabbitmq({
				queues: ["notifications", "notifications.retry", "notifications.dead"].map(q => `${namespace}.${q}`),
				exchanges: [`${namespace}.events`],
			}),
		);

		it("runs SERVICES=notifications: healthy, its probe server answering /ready", async () => {
			const node = await startNode({ SERVICES: "notifications", TRANSPORTER: RABBITMQ_URL, NAMESPACE: namespace });
			try {
				const ready = await fetch(`http://127.0.0.1:${node.port}/ready`);
				expect([ready.status, await ready.json()]).toEqual([200, { status: "ready", checks: { node: "ok", notifications: "ok", transporter: "ok" } }]);
			} finally {
				expect(await node.stop()).toBe(0);
			}
		}, 60_000);
	});
});
