/**
 * lib/metric-rates.ts, asked of V8 itself, each case in a child process of
 * its own (so that no earlier MetricRate has shaped the class):
 * - the mechanism: once settled, a MetricRate that ticks to a fraction keeps
 *   the hidden class of one that has not ticked yet (`%HaveSameMap`,
 *   --allow-natives-syntax); without it, the tick moves it to a new class
 *   and deprecates the old one;
 * - the effect: a broker counting calls past the first tick (5 s), traced
 *   with --trace-opt, has no optimization of a metric function thrown away
 *   for a deprecated class once settled, and many without.
 * The cases without the cure fail the day Moleculer or V8 no longer needs it.
 */
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import ts from "typescript";

const ROOT = path.resolve(__dirname, "../..");
const run = promisify(execFile);

let dir: string;
let cure: string;

beforeAll(() => {
	dir = fs.mkdtempSync(path.join(os.tmpdir(), "mint-metric-rates-"));
	const source = fs.readFileSync(path.join(ROOT, "lib/metric-rates.ts"), "utf8");
	const { outputText } = ts.transpileModule(source, {
		compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
	});
	cure = path.join(dir, "metric-rates.js");
	fs.writeFileSync(cure, outputText);
});

afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Runs `script` in a fresh Node (Moleculer resolvable), after the cure when `settle`; its stdout. */
async function inChild(settle: boolean, flags: string[], script: string): Promise<string> {
	const { stdout } = await run(process.execPath, [...flags, "-e", `if (${settle}) require(${JSON.stringify(cure)}).settleMetricRateShape();\n${script}`], {
		env: { ...process.env, NODE_PATH: path.join(ROOT, "node_modules") },
		encoding: "utf8",
		maxBuffer: 64 * 1024 * 1024,
	});
	return stdout;
}

const TICK = `
	const { MetricTypes } = require("moleculer");
	const registry = { opts: {}, changed() {} };
	const rated = (name, value) => {
		const gauge = new MetricTypes.Gauge({ type: "gauge", name, rate: true }, registry);
		gauge.set(value);
		const rate = gauge.get().rate;
		clearInterval(rate.timer);
		return rate;
	};
	const ticked = rated("ticked", 1);
	const waiting = rated("waiting", 0);
	ticked.lastTickTime = Date.now() - 7000;
	ticked.tick(); // 1 in 7 s: 4.29 a minute
	const same = %HaveSameMap(ticked, waiting); // before anything reads \`waiting\` (a read may move it to the new class)
	if (Number.isInteger(ticked.rate) || waiting.rate !== 0) throw new Error("unexpected rates " + ticked.rate + " " + waiting.rate);
	process.stdout.write(String(same));
`;

const BROKER = `
	const { ServiceBroker } = require("moleculer");
	const broker = new ServiceBroker({ logger: false, metrics: { enabled: true } });
	broker.createService({ name: "svc", actions: { a: () => ({ x: 1 }) } });
	broker.start().then(async () => {
		const end = Date.now() + 6500; // past the rates' first tick, at 5 s
		while (Date.now() < end) {
			await Promise.all(Array.from({ length: 32 }, () => broker.call("svc.a", { y: 2 })));
			await new Promise(resolve => setImmediate(resolve));
		}
		await broker.stop();
	});
`;

/** --trace-opt's lines for an optimization of a metric function thrown away for a deprecated class. */
const thrownAway = (trace: string) =>
	trace.split("\n").filter(line => /aborted optimizing .*JSFunction (set|increment|decrement|observe) .*Maps became deprecated/.test(line));

describe("settleMetricRateShape", () => {
	it("keeps a ticked rate on the class of one not yet ticked; without it the tick parts them", async () => {
		const [settled, unsettled] = await Promise.all([inChild(true, ["--allow-natives-syntax"], TICK), inChild(false, ["--allow-natives-syntax"], TICK)]);
		expect(settled).toBe("true");
		expect(unsettled).toBe("false");
	});

	it("leaves V8 nothing to throw away in a counting broker past the first tick; without it, it recompiles again and again", async () => {
		const [settled, unsettled] = await Promise.all([inChild(true, ["--trace-opt"], BROKER), inChild(false, ["--trace-opt"], BROKER)]);
		expect(thrownAway(settled)).toEqual([]);
		expect(thrownAway(unsettled).length).toBeGreaterThan(10);
	}, 30_000);
});
