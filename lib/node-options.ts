/**
 * The Node.js options a Mint node is started with, wherever it is started:
 * package.json's scripts and the image's CMD spell them out (checked against
 * this list by test/unit/node-options.test.ts), scripts/cluster.ts and the
 * bench pass `nodeOptions()` to the nodes they spawn.
 *
 * `--experimental-async-context-frame`: the request context (lib/request-context.ts)
 * is an AsyncLocalStorage. On Node 22 that rests on async_hooks, whose
 * promise hooks run for every promise the process makes; with this option it
 * rests on V8's continuation data instead, and costs nothing per promise.
 * Measured on the embedded node: about 10% less CPU per transfer (6.0-6.1 ms
 * instead of 6.8, two alternating runs) and per GET through the whole way.
 * Node 24 made it the default (and takes the old name still); Node 22 does
 * not allow it in NODE_OPTIONS, so it goes on the command line. A node
 * started without it works the same, at that cost, and says so at start.
 */
export const ASYNC_CONTEXT_FRAME = "--experimental-async-context-frame";

/** The options to start a Mint node with on this Node.js (none from Node 24 on: there they are the default). */
export function nodeOptions(version = process.versions.node): string[] {
	return majorOf(version) >= 24 ? [] : [ASYNC_CONTEXT_FRAME];
}

/** Whether AsyncLocalStorage runs on async context frames in a process started with these options and NODE_OPTIONS. */
export function usesAsyncContextFrame(execArgv = process.execArgv, version = process.versions.node, envOptions = process.env.NODE_OPTIONS ?? ""): boolean {
	// The command line after NODE_OPTIONS, and the last mention wins, as in Node's own parsing.
	const options = [...envOptions.split(/\s+/), ...execArgv].reverse();
	const last = options.find(o => FRAME_SWITCHES.has(o));
	if (last === undefined) return majorOf(version) >= 24;
	return !last.startsWith("--no-");
}

/** Both spellings (Node 22's experimental one, Node 24's), on and off. */
const FRAME_SWITCHES = new Set([ASYNC_CONTEXT_FRAME, "--no-experimental-async-context-frame", "--async-context-frame", "--no-async-context-frame"]);

const majorOf = (version: string) => Number(version.split(".")[0]);
