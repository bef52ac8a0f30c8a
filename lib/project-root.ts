/** Where Mint's own files are (templates/, public/): the folder holding package.json, found from the sources or from dist alike. */
import fs from "node:fs";
import path from "node:path";

export function projectRoot(): string {
	let dir = __dirname;
	while (!fs.existsSync(path.join(dir, "package.json"))) {
		const parent = path.dirname(dir);
		if (parent === dir) throw new Error(`package.json not found above ${__dirname}`);
		dir = parent;
	}
	return dir;
}
