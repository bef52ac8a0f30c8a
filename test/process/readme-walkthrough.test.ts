/**
 * The README's "Try it with curl" works as written: its shell blocks run, in
 * order, in one bash, against the built server on a free port (the only
 * change: the README's http://127.0.0.1:3000 is that port). What each block
 * prints must match the output block shown after it, line for line (`...`
 * matches what differs on every run), and the ids must agree across commands.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { nodeOptions } from "../../lib/node-options";
import { buildMint, type BuiltMint } from "../helpers/dist";
import { describeWithInfra } from "../helpers/infra";

const ROOT = path.resolve(__dirname, "../..");
/** The walkthrough's text: the README (its section under HEADING). */
const WALKTHROUGH = path.join(ROOT, "README.md");
const HEADING = "### Try it with curl";
/** The base the README's commands use. */
const README_ORIGIN = "http://127.0.0.1:3000";

interface Step {
	commands: string;
	/** The output block after the commands, if the README shows one. */
	expected?: string[];
}

/** The section's fenced blocks: each `sh` block, with the plain block that follows it as its output. */
function walkthroughSteps(markdown: string, heading: string): Step[] {
	const lines = markdown.split("\n");
	const start = lines.indexOf(heading);
	if (start < 0) throw new Error(`no "${heading}" heading in the walkthrough`);
	const level = heading.indexOf(" ");
	const steps: Step[] = [];
	let fence: { info: string; body: string[] } | undefined;
	for (const line of lines.slice(start + 1)) {
		if (fence) {
			if (line.startsWith("```")) {
				if (fence.info === "sh") steps.push({ commands: fence.body.join("\n") });
				else if (fence.info === "" && steps.length > 0 && steps.at(-1)!.expected === undefined) steps.at(-1)!.expected = fence.body;
				fence = undefined;
			} else fence.body.push(line);
			continue;
		}
		const headingMatch = /^(#+) /.exec(line);
		if (headingMatch && headingMatch[1].length <= level) break;
		if (line.startsWith("```")) fence = { info: line.slice(3).trim(), body: [] };
	}
	return steps;
}

/** An output line as shown in the README, as a pattern: `...` is whatever differs per run. */
const linePattern = (shown: string) =>
	new RegExp(
		`^${shown
			.split("...")
			.map(part => part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"))
			.join(".*")}$`,
	);

const bashCurlSed = { name: "bash, curl and sed", available: ["bash", "curl", "sed"].every(tool => spawnSync(tool, ["--version"]).status === 0) };

describeWithInfra("the README's curl walkthrough", bashCurlSed, () => {
	let build: BuiltMint;
	let work: string;
	let server: ChildProcess | undefined;
	let exited: Promise<number | null>;

	beforeAll(() => {
		build = buildMint("walkthrough");
		work = fs.mkdtempSync(path.join(os.tmpdir(), "mint-walkthrough-"));
	});
	afterAll(async () => {
		if (server && server.exitCode === null) {
			server.kill("SIGTERM");
			await exited;
		}
		build.remove();
		fs.rmSync(work, { recursive: true, force: true });
	});

	/** `npm start`'s server on a fresh DATA_DIR and a free port; resolves with its origin. */
	function startMint(dataDir: string): Promise<string> {
		const child = spawn(process.execPath, [...nodeOptions(), path.join(build.dist, "server.js")], {
			env: { PATH: process.env.PATH ?? "", PORT: "0", DATA_DIR: dataDir, JWT_KEY_BITS: "2048", LOG_LEVEL: "warn" },
		});
		server = child;
		exited = new Promise(resolve => child.on("exit", resolve));
		let output = "";
		return new Promise((resolve, reject) => {
			const timer = setTimeout(() => reject(new Error(`no start line within 20 s:\n${output}`)), 20_000);
			const onData = (chunk: Buffer) => {
				output += chunk.toString();
				const up = /Mint is up: (http:\/\/[^/\s]+)\/api\/v1/.exec(output);
				if (up) {
					clearTimeout(timer);
					resolve(up[1]);
				}
			};
			child.stdout.on("data", onData);
			child.stderr.on("data", onData);
			exited.then(code => reject(new Error(`exited with ${code} before starting:\n${output}`)));
		});
	}

	it("prints what the README shows, block after block, on a fresh Mint", async () => {
		const steps = walkthroughSteps(fs.readFileSync(WALKTHROUGH, "utf8"), HEADING);
		expect(steps.length).toBeGreaterThanOrEqual(5);
		expect(steps.filter(s => s.expected).length).toBeGreaterThanOrEqual(5);

		const dataDir = path.join(work, "data");
		const origin = await startMint(dataDir);
		const shell = path.join(work, "shell");
		fs.mkdirSync(shell);
		// One bash for all blocks (their variables carry over), each block's output in a file of its own.
		const script = steps.map((step, i) => `{\n${step.commands.replaceAll(README_ORIGIN, origin)}\n} > ${path.join(work, `out.${i}`)} 2>&1`).join("\n");
		const run = spawnSync("bash", ["--noprofile", "--norc", "-c", script], { cwd: shell, env: { PATH: process.env.PATH ?? "", HOME: work }, timeout: 20_000 });
		expect(run.status).toBe(0);
		const outputs = steps.map((_, i) =>
			fs
				.readFileSync(path.join(work, `out.${i}`), "utf8")
				.replace(/\n$/, "")
				.split("\n"),
		);

		for (const [i, step] of steps.entries()) {
			if (!step.expected) continue;
			const actual = outputs[i];
			const mismatch = `block ${i + 1}:\n${step.commands}\nprinted:\n${actual.join("\n")}\nREADME shows:\n${step.expected.join("\n")}`;
			expect([mismatch, actual.length]).toEqual([mismatch, step.expected.length]);
			for (const [j, shown] of step.expected.entries()) expect([mismatch, actual[j]]).toEqual([mismatch, expect.stringMatching(linePattern(shown))]);
		}

		// What `...` hides must still agree across commands: one Ada, one Grace, one top-up, the money where it should be.
		const printed = outputs.flat();
		const json: Record<string, any>[] = printed
			.flatMap(line => {
				const body = line.replace(/ \d{3}$/, "");
				return body.startsWith("{") || body.startsWith("[") ? [JSON.parse(body)] : [];
			})
			.flat();
		const users = (email: string) => new Set(json.filter(o => o.email === email).map(o => o.id));
		const [ada, grace] = [users("ada@example.com"), users("grace@example.com")].map(ids => [...ids]);
		expect([ada.length, grace.length]).toEqual([1, 1]);
		expect(printed).toContain(grace[0]); // `echo "$GRACE"`
		const topUps = json.filter(o => o.type === "TopUp");
		expect(new Set(topUps.map(t => t.id)).size).toBe(1);
		const transfer = json.find(o => o.type === "Transfer");
		expect(transfer).toMatchObject({ fromUserId: ada[0], toUserId: grace[0], status: "Completed", amount: 10 });
		const wallets = json.filter(o => "balance" in o);
		expect(wallets.filter(w => w.userId === ada[0]).at(-1)?.balance).toBe(15.5);
		expect(wallets.filter(w => w.userId === grace[0]).at(-1)?.balance).toBe(10);

		// The emails the README says were sent (the sender polls every second), and the jars removed by its last block.
		const emails = () => fs.readdirSync(path.join(dataDir, "mail")).filter(f => f.endsWith(".eml")).length;
		for (const until = Date.now() + 5000; emails() < 5 && Date.now() < until; ) await new Promise(resolve => setTimeout(resolve, 100));
		expect(emails()).toBe(5);
		expect(fs.readdirSync(shell)).toEqual([]);
	}, 30_000);
});
