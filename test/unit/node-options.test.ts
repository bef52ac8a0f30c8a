/** Every way Mint starts a node gives it the Node.js options of lib/node-options.ts, and a node knows whether it has them. */
import fs from "node:fs";
import path from "node:path";
import { ASYNC_CONTEXT_FRAME, nodeOptions, usesAsyncContextFrame } from "../../lib/node-options";

const ROOT = path.resolve(__dirname, "../..");
const NODE_22 = "22.23.3";

describe("the Node.js options a node starts with", () => {
	it("are the async context frame option before Node 24, none from Node 24 on (its default there)", () => {
		expect(nodeOptions(NODE_22)).toEqual([ASYNC_CONTEXT_FRAME]);
		expect(nodeOptions("23.11.0")).toEqual([ASYNC_CONTEXT_FRAME]);
		expect(nodeOptions("24.0.0")).toEqual([]);
	});

	it("are given by npm start, npm run repl, npm test and the image's CMD, right before the script", () => {
		const scripts = JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8")).scripts as Record<string, string>;
		const options = nodeOptions(NODE_22).join(" ");
		expect(scripts.start).toContain(`node ${options} dist/server.js`);
		expect(scripts.repl).toContain(`node ${options} dist/server.js`);
		expect(scripts.test).toBe(`node ${options} node_modules/jest/bin/jest.js`);
		const cmd = /^CMD\s+(\[.*\])\s*$/m.exec(fs.readFileSync(path.join(ROOT, "Dockerfile"), "utf8"));
		expect(JSON.parse(cmd?.[1] ?? "[]")).toEqual(["node", ...nodeOptions(NODE_22), "dist/server.js"]);
		// The image's Node.js is the one the options are for.
		expect(fs.readFileSync(path.join(ROOT, "Dockerfile"), "utf8")).toMatch(/^FROM node:22-slim\s*$/m);
	});

	it("are known to the node: on the command line or in NODE_OPTIONS, the last one said winning; Node 24's default", () => {
		expect(usesAsyncContextFrame([ASYNC_CONTEXT_FRAME], NODE_22, "")).toBe(true);
		expect(usesAsyncContextFrame([], NODE_22, "")).toBe(false);
		expect(usesAsyncContextFrame(["--require", "x.js"], NODE_22, "--max-old-space-size=4096")).toBe(false);
		expect(usesAsyncContextFrame([ASYNC_CONTEXT_FRAME, "--no-experimental-async-context-frame"], NODE_22, "")).toBe(false);
		expect(usesAsyncContextFrame([], "24.1.0", "")).toBe(true);
		expect(usesAsyncContextFrame([], "24.1.0", "--no-async-context-frame")).toBe(false);
		expect(usesAsyncContextFrame(["--async-context-frame"], "24.1.0", "--no-async-context-frame")).toBe(true);
	});
});
