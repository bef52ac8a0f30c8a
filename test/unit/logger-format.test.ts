/** Log lines: JSON for machines, readable for a person at a terminal, and above the REPL's prompt while one is open. */
import { PassThrough, Writable } from "node:stream";
import repl from "node:repl";
import { ServiceBroker } from "moleculer";
import { pino } from "pino";
import { logDestination, logFormatOf, prettyLogLine, TerminalOutput, type LogStream } from "../../lib/logger-format";
import { traceIdOf } from "../../lib/request-context";
import { brokerOptions } from "../../moleculer.config";
import { testConfig } from "../helpers/mint";

const pad = (n: number, width = 2) => String(n).padStart(width, "0");
/** A time as the pretty lines show it: the local clock, to the millisecond. */
const clock = (epochMs: number) => {
	const d = new Date(epochMs);
	return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
};

/** A stand-in for stdout that keeps what is written. */
function capture(isTTY: boolean): LogStream & { text: () => string } {
	const chunks: string[] = [];
	return { isTTY, write: (text: string) => chunks.push(text), text: () => chunks.join("") };
}

describe("which format", () => {
	it.each([
		[undefined, true, "pretty"],
		[undefined, false, "json"],
		[undefined, undefined, "json"],
		["json", true, "json"],
		["pretty", false, "pretty"],
	] as const)("LOG_FORMAT %s with a terminal: %s -> %s", (configured, isTTY, format) => {
		expect(logFormatOf(configured, isTTY)).toBe(format);
	});

	it("JSON without a REPL keeps pino's own stdout stream, as before; anything else goes through the terminal output", () => {
		expect(logDestination({ logFormat: undefined, repl: false }, new TerminalOutput(capture(false)))).toBeUndefined();
		expect(logDestination({ logFormat: "json", repl: false }, new TerminalOutput(capture(true)))).toBeUndefined();

		const replStream = capture(true);
		logDestination({ logFormat: "json", repl: true }, new TerminalOutput(replStream))!.write('{"level":30,"msg":"as is"}\n');
		expect(replStream.text()).toBe('{"level":30,"msg":"as is"}\n');

		for (const [config, stream] of [
			[{ logFormat: undefined, repl: false }, capture(true)],
			[{ logFormat: "pretty", repl: false }, capture(false)],
		] as const) {
			logDestination(config, new TerminalOutput(stream))!.write(`${JSON.stringify({ level: 30, time: 0, msg: "readable" })}\n`);
			expect(stream.text()).toBe(`[${clock(0)}] INFO: readable\n`);
		}
	});
});

describe("a readable line", () => {
	const pretty = prettyLogLine({ colorize: false });
	const time = Date.UTC(2026, 0, 2, 13, 4, 5, 67);
	const requestId = "3f2a9c1e-5b7d-4f7e-8d0e-1a2b3c4d5e6f";
	/** The fields after the message, which the line ends with as JSON. */
	const fieldsOf = (line: string) => JSON.parse(line.slice(line.indexOf(" {") + 1));

	it("shows the clock time, level, node/module, request id and message, then every other field", () => {
		const line = pretty(
			JSON.stringify({
				level: 30,
				time,
				pid: 4242,
				hostname: "vm",
				nodeID: "vm-4242",
				ns: "mint",
				mod: "transactions",
				svc: "transactions",
				requestId,
				traceId: traceIdOf(requestId),
				spanId: "0123456789abcdef",
				amountMinor: 1250,
				parties: ["u-1", "u-2"],
				req: { method: "POST", headers: { cookie: "[redacted]" } },
				msg: "transfer completed",
			}),
		);
		expect(line).toBe(
			`[${clock(time)}] INFO: vm-4242/transactions [${requestId}] transfer completed ` +
				'{"spanId":"0123456789abcdef","amountMinor":1250,"parties":["u-1","u-2"],"req":{"method":"POST","headers":{"cookie":"[redacted]"}}}\n',
		);
	});

	it("keeps what the header does not already say: a set node ID's pid and host, another namespace, a foreign trace id, a versioned service", () => {
		const line = pretty(
			JSON.stringify({
				level: 40,
				time,
				pid: 7,
				hostname: "box",
				nodeID: "gateway-1",
				ns: "staging",
				mod: "v2.api",
				svc: "api",
				ver: 2,
				requestId: "caller-chosen",
				traceId: "4bf92f3577b34da6a3ce929d0e0e4736",
				msg: "slow",
			}),
		);
		expect(line.startsWith(`[${clock(time)}] WARN (7 on box): gateway-1/v2.api [caller-chosen] slow {`)).toBe(true);
		expect(fieldsOf(line)).toEqual({ ns: "staging", traceId: "4bf92f3577b34da6a3ce929d0e0e4736" });

		const otherModule = pretty(JSON.stringify({ level: 30, time, nodeID: "n1", mod: "custom", svc: "api", msg: "m" }));
		expect(fieldsOf(otherModule)).toEqual({ svc: "api" });
	});

	it("prints an error with its stack on the lines below, and a line without a request as it is", () => {
		const err = new Error("ledger unreachable");
		const lines: string[] = [];
		pino({}, { write: (line: string) => void lines.push(line) })
			.child({ nodeID: "n1", mod: "wallet", svc: "wallet" })
			.error({ err }, "debit failed");
		const out = pretty(lines[0]);
		expect(out.split("\n")[0]).toMatch(new RegExp(`^\\[\\d\\d:\\d\\d:\\d\\d\\.\\d{3}\\] ERROR \\(${process.pid} on [^)]+\\): n1/wallet debit failed$`));
		expect(out).toContain('"message": "ledger unreachable"');
		expect(out).toContain(err.stack!.split("\n")[1].trim());
		expect(pretty("not json at all\n")).toBe("not json at all\n");
	});
});

describe("the broker's logger (moleculer.config.ts) on a terminal", () => {
	let written: string[];
	let isTTY: PropertyDescriptor | undefined;
	let broker: ServiceBroker | undefined;
	beforeEach(() => {
		written = [];
		isTTY = Object.getOwnPropertyDescriptor(process.stdout, "isTTY");
		Object.defineProperty(process.stdout, "isTTY", { value: true, configurable: true });
		jest.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => {
			written.push(String(chunk));
			return true;
		});
	});
	afterEach(async () => {
		await broker?.stop();
		jest.restoreAllMocks();
		if (isTTY) Object.defineProperty(process.stdout, "isTTY", isTTY);
		else delete (process.stdout as { isTTY?: boolean }).isTTY;
	});

	/** A broker with Mint's options and one service that logs inside an action; the lines it wrote. */
	async function logThroughBroker(env: Record<string, string>) {
		broker = new ServiceBroker(brokerOptions(testConfig({ SERVICES: "none", LOG_LEVEL: "info", ...env })));
		broker.createService({
			name: "probe",
			actions: {
				work(this: { logger: ServiceBroker["logger"] }) {
					this.logger.info({ userId: "u-1", password: "correct horse" }, "moved money");
				},
			},
		});
		await broker.start();
		const before = Date.now();
		await broker.call("probe.work", {}, { requestID: "req-pretty-42" });
		return { lines: written.join("").split("\n"), before, after: Date.now() };
	}

	it("writes readable lines with the clock time, the request id and redaction intact", async () => {
		const { lines, before, after } = await logThroughBroker({});
		const line = lines.find(l => l.includes("moved money"))!;
		expect(line).toMatch(new RegExp(`^\\[(\\d\\d:\\d\\d:\\d\\d\\.\\d{3})\\] INFO: ${broker!.nodeID}/probe \\[req-pretty-42\\] moved money \\{`));
		const shown = /^\[([^\]]+)\]/.exec(line)![1];
		expect(shown >= clock(before) && shown <= clock(after)).toBe(true);
		expect(JSON.parse(line.slice(line.indexOf(" {") + 1))).toEqual({ userId: "u-1", password: "[redacted]", spanId: expect.stringMatching(/^[0-9a-f]{16}$/) });
		expect(lines.some(l => l.startsWith("{"))).toBe(false);
	});

	it("LOG_FORMAT=json leaves the terminal to pino's own JSON stream", async () => {
		const options = brokerOptions(testConfig({ LOG_FORMAT: "json" }));
		const logger = options.logger as unknown as { options: { pino: { options: object; destination?: unknown } } };
		expect(logger.options.pino.destination).toBeUndefined();
		expect(Object.keys(logger.options.pino.options)).toEqual(["mixin", "redact"]);
	});
});

describe("log lines while the REPL is open", () => {
	/** What a terminal shows after the bytes written: enough of VT100 for readline's cursor moves and clears. */
	const CSI = new RegExp(`^${String.fromCharCode(27)}\\[([?\\d;]*)([A-Za-z])`);
	function screen(bytes: string): string[] {
		const rows: string[] = [""];
		let row = 0;
		let col = 0;
		const put = (ch: string) => {
			rows[row] = rows[row].padEnd(col).slice(0, col) + ch + rows[row].slice(col + 1);
			col++;
		};
		for (let i = 0; i < bytes.length; i++) {
			const ch = bytes[i];
			if (ch === "\x1b" && bytes[i + 1] === "[") {
				const m = CSI.exec(bytes.slice(i))!;
				const n = Number(m[1] || 0);
				if (m[2] === "G") col = Math.max(n, 1) - 1;
				else if (m[2] === "A") row = Math.max(0, row - Math.max(n, 1));
				else if (m[2] === "B") row += Math.max(n, 1);
				else if (m[2] === "C") col += Math.max(n, 1);
				else if (m[2] === "D") col = Math.max(0, col - Math.max(n, 1));
				else if (m[2] === "J") {
					rows.splice(row + 1);
					rows[row] = rows[row].slice(0, col);
				} else if (m[2] === "K") rows[row] = rows[row].slice(0, col);
				i += m[0].length - 1;
			} else if (ch === "\r") col = 0;
			else if (ch === "\n") {
				row++;
				col = 0; // a terminal's output translation (onlcr) makes \n a new line
			} else put(ch);
			while (rows.length <= row) rows.push("");
		}
		return rows.map(r => r.trimEnd());
	}

	async function openRepl(evaluate: (cmd: string, done: () => void) => void) {
		const input = new PassThrough();
		let bytes = "";
		const output = Object.assign(
			new Writable({
				write(chunk, _encoding, next) {
					bytes += String(chunk);
					next();
				},
			}),
			{ isTTY: true, columns: 80 },
		);
		const server = repl.start({
			input,
			output,
			terminal: true,
			preview: false,
			ignoreUndefined: true,
			prompt: "mint $ ",
			eval: (cmd, _context, _file, callback) => evaluate(cmd, () => callback(null, undefined)),
		});
		const out = new TerminalOutput(output);
		out.writeAbovePrompt(server);
		const type = async (text: string) => {
			input.write(text);
			await new Promise(resolve => setImmediate(resolve));
		};
		return { server, out, type, screen: () => screen(bytes).filter((r, i, all) => r !== "" || i < all.length - 1) };
	}

	it("a line goes above the prompt, which comes back with what the operator was typing", async () => {
		const { server, out, type, screen: shown } = await openRepl((_cmd, done) => done());
		await type("user ada@exa");
		out.write("[12:00:00.000] INFO: vm-1/broker Node 'core-1' connected.\n");
		out.write("[12:00:00.001] WARN: vm-1/transit Heartbeat late\n");
		expect(shown()).toEqual([
			"[12:00:00.000] INFO: vm-1/broker Node 'core-1' connected.",
			"[12:00:00.001] WARN: vm-1/transit Heartbeat late",
			"mint $ user ada@exa",
		]);
		await type("mple.com");
		expect(shown().at(-1)).toBe("mint $ user ada@example.com");
		server.close();
	});

	it("while a command runs there is no prompt to keep: its output and the lines follow each other, then the prompt returns", async () => {
		let finish = () => {};
		const {
			server,
			out,
			type,
			screen: shown,
		} = await openRepl((_cmd, done) => {
			finish = done;
		});
		await type("sweep\r");
		out.write("[12:00:01.000] INFO: vm-1/transactions swept\n");
		expect(shown()).toEqual(["mint $ sweep", "[12:00:01.000] INFO: vm-1/transactions swept"]);
		finish();
		await type("");
		expect(shown()).toEqual(["mint $ sweep", "[12:00:01.000] INFO: vm-1/transactions swept", "mint $"]);
		out.write("after\n");
		expect(shown()).toEqual(["mint $ sweep", "[12:00:01.000] INFO: vm-1/transactions swept", "after", "mint $"]);
		server.close();
	});
});
