/**
 * How log lines look and where they go. Machines (docker logs, promtail, a
 * pipe, a file) get pino's JSON lines exactly as pino writes them; a person
 * at a terminal gets one readable line per entry:
 *
 *   [14:03:07.123] INFO: vm-4242/auth [3f2a…] user signed up {"userId":"…","spanId":"…"}
 *
 * clock time, level, node/module, the request id, the message, then every
 * other field (errors with their stack on the lines below). LOG_FORMAT=json
 * or pretty decides; unset, stdout being a terminal does.
 *
 * A readable line is made from the finished JSON line, so pino's redaction
 * and the request fields (lib/request-context.ts) are already in it; it is
 * made here, synchronously, with pino-pretty's formatter rather than its
 * worker-thread transport, so the fatal line written just before
 * `process.exit(1)` is on the screen.
 *
 * While the REPL is open, every line is written above its prompt, which is
 * then drawn again with what the operator was typing (`TerminalOutput`).
 */
import readline from "node:readline";
import type { REPLServer } from "node:repl";
import { prettyFactory } from "pino-pretty";
import type { Config } from "./config";
import { traceIdOf } from "./request-context";

export type LogFormat = NonNullable<Config["logFormat"]>;

/** LOG_FORMAT when set; otherwise readable on a terminal, JSON anywhere else. */
export function logFormatOf(configured: LogFormat | undefined, isTTY: boolean | undefined): LogFormat {
	return configured ?? (isTTY ? "pretty" : "json");
}

/** The stream log lines end up on: process.stdout, or a test's stand-in. */
export interface LogStream {
	isTTY?: boolean;
	write(text: string): unknown;
	/** Node's tty streams: whether the terminal takes colours (NO_COLOR, FORCE_COLOR and TERM respected). */
	hasColors?(): boolean;
}

/**
 * This process's terminal output for log lines: straight to the stream, or,
 * while a REPL is open on it, above the prompt.
 */
export class TerminalOutput {
	private repl: REPLServer | undefined;
	/** False while a command runs: its output and the log lines simply follow each other until the prompt is back. */
	private promptShown = false;

	constructor(readonly stream: LogStream) {}

	write(text: string): void {
		const repl = this.repl;
		if (!repl || !this.promptShown) {
			this.stream.write(text);
			return;
		}
		// Clear the prompt and the input (however many rows it wraps over), write, then draw them again below.
		const output = repl.output as NodeJS.WritableStream;
		readline.moveCursor(output, 0, -repl.getCursorPos().rows);
		readline.cursorTo(output, 0);
		readline.clearScreenDown(output);
		output.write(text);
		repl.displayPrompt(true);
	}

	/** From now on, lines go above this REPL's prompt (a REPL just started shows its prompt). */
	writeAbovePrompt(repl: REPLServer): void {
		this.repl = repl;
		this.promptShown = true;
		const displayPrompt = repl.displayPrompt.bind(repl);
		repl.displayPrompt = (preserveCursor?: boolean) => {
			this.promptShown = true;
			displayPrompt(preserveCursor);
		};
		// Before the REPL's own listener runs the command (which may show the prompt again at once).
		repl.prependListener("line", () => {
			this.promptShown = false;
		});
		repl.once("exit", () => {
			this.repl = undefined;
		});
	}
}

/** The process's stdout, where every broker of the process logs. */
export const terminal = new TerminalOutput(process.stdout);

/** A pino destination (pino takes any object with `write`). */
export interface LogDestination {
	write(line: string): void;
}

/**
 * Where the broker's pino logger writes: undefined (pino's own stdout
 * stream, as before) for JSON lines with no REPL, else through `output`.
 */
export function logDestination(config: Pick<Config, "logFormat" | "repl">, output: TerminalOutput = terminal): LogDestination | undefined {
	const format = logFormatOf(config.logFormat, output.stream.isTTY);
	if (format === "json") return config.repl ? { write: line => output.write(line) } : undefined;
	const pretty = prettyLogLine({ colorize: output.stream.isTTY === true && output.stream.hasColors?.() === true });
	return { write: line => output.write(pretty(line)) };
}

type LogRecord = Record<string, unknown>;

/**
 * Makes JSON log lines readable. Nothing is lost: a field is left off only
 * when the line says it otherwise — `nodeID` and `mod` are in the header;
 * `svc` and `ver` when `mod` is the service's full name; `pid` and
 * `hostname` when the node ID is Moleculer's default `<hostname>-<pid>`
 * (else pino-pretty shows them as `(pid on hostname)`); `traceId` when it is
 * the one the request id maps to; `ns` when it is the default `mint`.
 * Anything that is not a JSON object is written as it came.
 */
export function prettyLogLine(options: { colorize: boolean }): (jsonLine: string) => string {
	let header = "";
	const prettify = prettyFactory({
		colorize: options.colorize,
		translateTime: "SYS:HH:MM:ss.l",
		singleLine: true,
		// pino-pretty leaves off `hostname` by default.
		ignore: "",
		// The header in grey, so the message stands out.
		messageFormat: (log, messageKey, _level, { colors }) => `${colors.gray(header)}${log[messageKey] === undefined ? "" : String(log[messageKey])}`,
	});
	return jsonLine => {
		let log: unknown;
		try {
			log = JSON.parse(jsonLine);
		} catch {
			return jsonLine;
		}
		if (typeof log !== "object" || log === null || Array.isArray(log)) return jsonLine;
		const { rest, where, requestId } = splitHeader(log as LogRecord);
		header = `${where ? `${where} ` : ""}${requestId === undefined ? "" : `[${requestId}] `}`;
		const pretty = prettify(rest);
		// pino-pretty ends the first line with a space when only an error follows it.
		const eol = pretty.indexOf("\n");
		return pretty[eol - 1] === " " ? pretty.slice(0, eol - 1) + pretty.slice(eol) : pretty;
	};
}

const DEFAULT_NAMESPACE = "mint";

/** What goes into the header, and the fields left for the rest of the line. */
function splitHeader(log: LogRecord): { rest: LogRecord; where: string; requestId?: string } {
	const rest: LogRecord = { ...log };
	const { nodeID, mod, svc, ver, pid, hostname, ns, requestId, traceId } = log;
	const where = [nodeID, mod].filter(part => typeof part === "string" && part !== "").join("/");
	for (const key of ["nodeID", "mod"] as const) if (typeof log[key] === "string" && log[key] !== "") delete rest[key];
	// Moleculer names a service's logger by its full name: `auth`, or `v2.auth` for version 2.
	if (typeof svc === "string" && typeof mod === "string" && mod === (ver === undefined ? svc : `${typeof ver === "number" ? `v${ver}` : String(ver)}.${svc}`)) {
		delete rest.svc;
		delete rest.ver;
	}
	if (pid !== undefined && hostname !== undefined && nodeID === `${hostname}-${pid}`) {
		delete rest.pid;
		delete rest.hostname;
	}
	if (ns === DEFAULT_NAMESPACE) delete rest.ns;
	if (typeof requestId !== "string") return { rest, where };
	delete rest.requestId;
	if (traceId === traceIdOf(requestId)) delete rest.traceId;
	return { rest, where, requestId };
}
