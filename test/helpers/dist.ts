/**
 * The code as `npm run build` emits it, for tests that run it in child
 * processes (nodes to kill, `npm run cluster`): every file of the build
 * (tsconfig.json) in a folder of the caller's own, since other test files
 * rebuild dist/ meanwhile, beside links to package.json, node_modules,
 * templates and public (the gateway's pages). Transpiled only, as ts-jest
 * runs the tests themselves, in a second or two instead of a full tsc:
 * `npm run typecheck` checks the types.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import ts from "typescript";

const ROOT = path.resolve(__dirname, "../..");

export interface BuiltMint {
	/** The folder's dist/, as the repository's would be. */
	dist: string;
	remove(): void;
}

export function buildMint(label: string): BuiltMint {
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), `mint-${label}-build-`));
	for (const entry of ["package.json", "node_modules", "templates", "public"]) fs.symlinkSync(path.join(ROOT, entry), path.join(dir, entry));
	const parsed = ts.getParsedCommandLineOfConfigFile(
		path.join(ROOT, "tsconfig.json"),
		{},
		{
			...ts.sys,
			onUnRecoverableConfigFileDiagnostic: diagnostic => {
				throw new Error(ts.flattenDiagnosticMessageText(diagnostic.messageText, "\n"));
			},
		},
	);
	if (!parsed) throw new Error("tsconfig.json could not be read");
	const dist = path.join(dir, "dist");
	// CommonJS, as tsc emits for this package (no "type": "module").
	const compilerOptions = { ...parsed.options, module: ts.ModuleKind.CommonJS, sourceMap: false };
	// (Declarations, such as mixins/db/nedb-model.d.ts, emit nothing.)
	for (const file of parsed.fileNames.filter(name => !name.endsWith(".d.ts"))) {
		const { outputText } = ts.transpileModule(fs.readFileSync(file, "utf8"), { fileName: file, compilerOptions });
		const target = path.join(dist, path.relative(ROOT, file).replace(/\.ts$/, ".js"));
		fs.mkdirSync(path.dirname(target), { recursive: true });
		fs.writeFileSync(target, outputText);
	}
	return { dist, remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
}
