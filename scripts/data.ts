/**
 * `npm run data -- export <dir>` and `npm run data -- import <dir>`: moves an
 * embedded deployment's data to MongoDB, or from one embedded engine to the
 * other (EMBEDDED_STORE=nedb for the export, EMBEDDED_STORE=sqlite for the import).
 *
 * export reads every collection file of the stateful services under DATA_DIR
 * (`<DATA_DIR>/<service>/<collection>.db`, or `.sqlite` with EMBEDDED_STORE=sqlite;
 * MONGO_URI is ignored) and writes
 * `<dir>/<service>/<collection>.ndjson`, one JSON document a line in `_id`
 * order, then `<dir>/manifest.json` with each collection's count (written
 * last: an export without it is incomplete). The folder must be new or empty;
 * it holds password hashes and sealed keys, so it is private to its user.
 *
 * import inserts every document of such a folder into the store this process
 * is configured for, as a node would use it: MongoDB (a database
 * `<NAMESPACE>-<service>`) with MONGO_URI, else DATA_DIR's files. A document
 * whose `_id` is already there is skipped and counted as such, so running it
 * again (say, after a failure half way) is safe. At the end every collection
 * must hold exactly its exported count.
 *
 * Both go through createAdapter (mixins/db.mixin.ts), as the services do.
 * Mint's documents hold only JSON values (times are ISO strings or epoch
 * milliseconds); export refuses a document that would not survive JSON.
 *
 * Every node must be stopped first: a node writing meanwhile leaves the copy
 * incomplete (export) or writes beside it (import).
 *
 * Exit codes: 0 done; 1 the copy failed or does not add up (the message says
 * why); 2 bad usage or a bad variable.
 */
import fs from "node:fs";
import path from "node:path";
import readline from "node:readline";
import { isDeepStrictEqual } from "node:util";
import { ConfigError, loadConfig, type Config } from "../lib/config";
import { ensurePrivateDataDir } from "../lib/secrets";
import { createAdapter, isDuplicateKeyError, type AdapterOwner, type DbAdapter } from "../mixins/db.mixin";

export const USAGE = `Usage: npm run data -- export <dir>
       npm run data -- import <dir>

Moves an embedded deployment's data to MongoDB, or from one embedded engine
(EMBEDDED_STORE) to the other. Stop every Mint node first: a node writing
during an export or an import leaves the copy incomplete.

  export <dir>  reads every collection under DATA_DIR (auth, wallet,
                transactions, notifications; on EMBEDDED_STORE's engine,
                nedb by default; MONGO_URI is ignored) into <dir>,
                new or empty: <service>/<collection>.ndjson, one document a
                line, and manifest.json with the counts.
  import <dir>  inserts every document of <dir> into MONGO_URI's databases
                (<NAMESPACE>-<service>: mint-auth... by default), or into
                DATA_DIR's files (EMBEDDED_STORE's engine) when MONGO_URI is
                unset. A document already
                there (same _id) is skipped, so it is safe to run again; each
                collection must end with the exported count.

The nodes on MongoDB need the same AUTH_SECRET as the exported deployment.`;

/** The services that keep data (the gateway keeps none). */
export const STATEFUL_SERVICES = ["auth", "wallet", "transactions", "notifications"] as const;

export const MANIFEST_FILE = "manifest.json";

/** What an export holds: each collection's document count, by service. */
export interface Manifest {
	version: 1;
	exportedAt: string;
	collections: Record<string, Record<string, number>>;
}

export interface CollectionReport {
	service: string;
	collection: string;
	imported: number;
	alreadyThere: number;
}

/** A stored document: the string `_id` its service chose, and JSON values. */
interface StoredDocument {
	_id: string;
	[field: string]: unknown;
}

/** What the operator can act on: printed as it is, without a stack (exit 1). */
export class DataCommandError extends Error {
	constructor(message: string, options?: { cause?: unknown }) {
		super(message, options);
		this.name = "DataCommandError";
	}
}

type Print = (line: string) => void;
type Env = Record<string, string | undefined>;

/** How many inserts are in flight at once: MongoDB acknowledges each after a majority journaled it. */
const INSERTS_IN_FLIGHT = 100;
const COLLECTION_NAME = /^[A-Za-z0-9_-]+$/;
const isStateful = (service: string) => (STATEFUL_SERVICES as readonly string[]).includes(service);
const errorText = (err: unknown) => (err instanceof Error ? err.message : String(err));
const sum = (counts: number[]) => counts.reduce((a, b) => a + b, 0);

/** The stores' own messages (MongoDB connection events): warnings and errors on stderr. */
const owner: AdapterOwner = {
	logger: {
		info: () => undefined,
		warn: (_obj: object, msg: string) => console.error(`warning: ${msg}`),
		error: (obj: { err?: unknown }, msg: string) => console.error(`error: ${msg}${obj?.err ? `: ${errorText(obj.err)}` : ""}`),
	},
};

async function openStore(config: Config, service: string, collection: string): Promise<DbAdapter<StoredDocument>> {
	const store = createAdapter<StoredDocument>(config, service, { name: collection });
	store.init(null, owner);
	await store.connect();
	return store;
}

/** The file of a collection on each embedded engine (mixins/db.mixin.ts). */
const ENGINE_EXTENSION: Record<Config["embeddedStore"], string> = { nedb: ".db", sqlite: ".sqlite" };

/**
 * The collections on disk of the stateful services, on one engine: `<DATA_DIR>/<service>/<collection>.db` (NeDB)
 * or `.sqlite` (SQLite); nothing else (mail, auth-secret, store-id, the other engine's files).
 */
export function embeddedCollections(dataDir: string, engine: Config["embeddedStore"]): { service: string; collection: string }[] {
	const extension = ENGINE_EXTENSION[engine];
	return STATEFUL_SERVICES.flatMap(service => {
		const dir = path.join(dataDir, service);
		if (!fs.existsSync(dir)) return [];
		return fs
			.readdirSync(dir, { withFileTypes: true })
			.filter(entry => entry.isFile() && entry.name.endsWith(extension) && COLLECTION_NAME.test(entry.name.slice(0, -extension.length)))
			.map(entry => ({ service, collection: entry.name.slice(0, -extension.length) }))
			.sort((a, b) => a.collection.localeCompare(b.collection));
	});
}

/** One document as a line, refused if JSON would change it (a Date, undefined, NaN...). */
function documentLine(doc: StoredDocument, where: string): string {
	const line = JSON.stringify(doc);
	if (typeof doc._id !== "string" || !isDeepStrictEqual(JSON.parse(line), doc)) {
		throw new DataCommandError(`${where}: document ${String(doc._id)} holds a value JSON cannot carry as it is: nothing of it was exported`);
	}
	return line;
}

/** Writes every embedded collection under config.dataDir into dir (new or empty). */
export async function exportData(config: Config, dir: string, print: Print = console.log): Promise<Manifest> {
	if (config.mongoUri) throw new Error("exportData reads the embedded files: give it a config without MONGO_URI");
	const found = embeddedCollections(config.dataDir, config.embeddedStore);
	if (found.length === 0) {
		throw new DataCommandError(`No embedded data (EMBEDDED_STORE=${config.embeddedStore}) under ${config.dataDir} (DATA_DIR): nothing to export`);
	}
	if (fs.existsSync(dir) && fs.readdirSync(dir).length > 0) throw new DataCommandError(`${dir} is not empty: export into a new or empty folder`);
	fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
	print(`Exporting the embedded data under ${config.dataDir} to ${dir} (every Mint node must be stopped)`);
	const manifest: Manifest = { version: 1, exportedAt: new Date().toISOString(), collections: {} };
	for (const { service, collection } of found) {
		const store = await openStore(config, service, collection);
		let docs: StoredDocument[];
		try {
			docs = await store.find({ sort: ["_id"] });
		} finally {
			await store.disconnect();
		}
		const lines = docs.map(doc => `${documentLine(doc, `${service}/${collection}`)}\n`);
		fs.mkdirSync(path.join(dir, service), { recursive: true, mode: 0o700 });
		fs.writeFileSync(path.join(dir, service, `${collection}.ndjson`), lines.join(""), { mode: 0o600, flag: "wx" });
		manifest.collections[service] ??= {};
		manifest.collections[service][collection] = docs.length;
		print(`  ${`${service}/${collection}`.padEnd(28)} ${String(docs.length).padStart(8)}`);
	}
	fs.writeFileSync(path.join(dir, MANIFEST_FILE), `${JSON.stringify(manifest, null, 2)}\n`, { mode: 0o600, flag: "wx" });
	const total = sum(Object.values(manifest.collections).flatMap(counts => Object.values(counts)));
	print(`Exported ${total} documents of ${found.length} collections.`);
	// The nodes on MongoDB need the secret that sealed the signing keys and records exported.
	const generatedSecret = path.join(config.dataDir, "auth-secret");
	if (config.auth.secret) {
		print("Start the nodes on MongoDB with the same AUTH_SECRET: it opens the signing keys and sealed records exported.");
	} else if (fs.existsSync(generatedSecret)) {
		print(
			`This deployment's AUTH_SECRET was generated into ${generatedSecret} (not exported): start the nodes on MongoDB with AUTH_SECRET set to its content.`,
		);
	}
	return manifest;
}

/** The manifest of an export folder, checked: known services, plain collection names, counts. */
export function readManifest(dir: string): Manifest {
	const file = path.join(dir, MANIFEST_FILE);
	let raw: string;
	try {
		raw = fs.readFileSync(file, "utf8");
	} catch (err) {
		if ((err as NodeJS.ErrnoException).code === "ENOENT")
			throw new DataCommandError(`${file} is missing: ${dir} is not a complete export (the manifest is written last)`);
		throw err;
	}
	let manifest: Manifest;
	try {
		manifest = JSON.parse(raw);
	} catch (err) {
		throw new DataCommandError(`${file} is not JSON: ${errorText(err)}`);
	}
	const valid =
		manifest?.version === 1 &&
		typeof manifest.collections === "object" &&
		manifest.collections !== null &&
		Object.entries(manifest.collections).every(
			([service, counts]) =>
				isStateful(service) &&
				typeof counts === "object" &&
				counts !== null &&
				Object.entries(counts).every(([collection, count]) => COLLECTION_NAME.test(collection) && Number.isSafeInteger(count) && count >= 0),
		);
	if (!valid) throw new DataCommandError(`${file} is not a manifest of npm run data -- export (version 1)`);
	return manifest;
}

function parseDocument(line: string, where: string): StoredDocument {
	let doc: StoredDocument;
	try {
		doc = JSON.parse(line);
	} catch (err) {
		throw new DataCommandError(`${where}: not JSON: ${errorText(err)}`);
	}
	if (typeof doc !== "object" || doc === null || Array.isArray(doc) || typeof doc._id !== "string")
		throw new DataCommandError(`${where}: not a document with a string _id`);
	return doc;
}

/** Waits for every insert of a batch, then reports the first failure. */
async function settle(inserts: Promise<void>[]): Promise<void> {
	const failed = (await Promise.allSettled(inserts)).find(result => result.status === "rejected");
	if (failed) throw failed.reason;
}

/** Inserts one exported collection, skipping the documents whose _id the store already holds; answers how many lines it read. */
async function importCollection(store: DbAdapter<StoredDocument>, file: string, report: CollectionReport): Promise<number> {
	const where = `${report.service}/${report.collection}`;
	const insert = async (doc: StoredDocument): Promise<void> => {
		try {
			await store.insert(doc);
			report.imported++;
		} catch (err) {
			// Only the same _id is "already there": a clash on another unique key (an email) is a conflict.
			if (isDuplicateKeyError(err) && (await store.findById(doc._id))) {
				report.alreadyThere++;
				return;
			}
			throw new DataCommandError(`${where}: document ${doc._id} could not be inserted: ${errorText(err)}`, { cause: err });
		}
	};
	let read = 0;
	let inFlight: Promise<void>[] = [];
	const input = fs.createReadStream(file, "utf8");
	try {
		for await (const line of readline.createInterface({ input, crlfDelay: Number.POSITIVE_INFINITY })) {
			if (line.trim() === "") continue;
			read++;
			inFlight.push(insert(parseDocument(line, `${file} line ${read}`)));
			if (inFlight.length >= INSERTS_IN_FLIGHT) {
				await settle(inFlight);
				inFlight = [];
			}
		}
		await settle(inFlight);
	} finally {
		// A bad line stops the reading: the inserts already started end before it is reported.
		await Promise.allSettled(inFlight);
		input.destroy();
	}
	return read;
}

/** Where an import writes, for the operator: MongoDB's hosts (never the credentials) or DATA_DIR. */
function describeTarget(config: Config): string {
	if (!config.mongoUri) return `the embedded files under ${config.dataDir} (MONGO_URI is unset)`;
	const hosts = /^mongodb(?:\+srv)?:\/\/(?:[^@/]*@)?([^/?]*)/.exec(config.mongoUri)?.[1] ?? "MONGO_URI";
	return `MongoDB at ${hosts} (databases ${config.namespace}-<service>)`;
}

/** Inserts every document of the export in dir into the configured store; throws DataCommandError when a count does not add up. */
export async function importData(config: Config, dir: string, print: Print = console.log): Promise<CollectionReport[]> {
	const manifest = readManifest(dir);
	const planned = Object.entries(manifest.collections).flatMap(([service, counts]) =>
		Object.entries(counts).map(([collection, expected]) => ({ service, collection, expected, file: path.join(dir, service, `${collection}.ndjson`) })),
	);
	for (const { file } of planned) if (!fs.existsSync(file)) throw new DataCommandError(`${file} is missing: the export is incomplete`);
	if (!config.mongoUri) ensurePrivateDataDir(config.dataDir);
	print(`Importing ${dir} into ${describeTarget(config)} (every Mint node must be stopped)`);
	// Every store reachable before anything is written.
	const stores: DbAdapter<StoredDocument>[] = [];
	const reports: CollectionReport[] = [];
	const problems: string[] = [];
	try {
		for (const { service, collection } of planned) stores.push(await openStore(config, service, collection));
		print(`  ${"collection".padEnd(28)} ${"imported".padStart(8)} ${"already there".padStart(13)}`);
		for (const [i, { service, collection, expected, file }] of planned.entries()) {
			const report: CollectionReport = { service, collection, imported: 0, alreadyThere: 0 };
			const read = await importCollection(stores[i], file, report);
			reports.push(report);
			print(`  ${`${service}/${collection}`.padEnd(28)} ${String(report.imported).padStart(8)} ${String(report.alreadyThere).padStart(13)}`);
			const held = await stores[i].count();
			const where = `${service}/${collection}`;
			if (read !== expected) {
				problems.push(`${where}: the export holds ${read} documents, its manifest says ${expected}: the export is damaged`);
			} else if (held !== expected) {
				problems.push(
					`${where}: the target holds ${held} documents, the export ${expected}: it held others already (was a node started on it, or writing to it?)`,
				);
			}
		}
	} finally {
		await Promise.allSettled(stores.map(store => store.disconnect()));
	}
	if (problems.length > 0) throw new DataCommandError(problems.join("\n"));
	const imported = sum(reports.map(r => r.imported));
	const alreadyThere = sum(reports.map(r => r.alreadyThere));
	print(`Imported ${imported} documents, ${alreadyThere} already there; every collection holds its exported count.`);
	return reports;
}

/** The command line: `export <dir>` or `import <dir>`; answers the exit code. */
export async function main(argv: string[], env: Env = process.env): Promise<number> {
	const [command, dir, ...rest] = argv;
	if (command === "help" || command === "--help" || command === "-h") {
		console.log(USAGE);
		return 0;
	}
	if ((command !== "export" && command !== "import") || !dir || rest.length > 0) {
		console.error(USAGE);
		return 2;
	}
	let config: Config;
	try {
		// export reads the embedded files whatever MONGO_URI says.
		config = loadConfig(command === "export" ? { ...env, MONGO_URI: undefined } : env);
	} catch (err) {
		if (!(err instanceof ConfigError)) throw err;
		console.error(err.message);
		return 2;
	}
	try {
		if (command === "export") await exportData(config, path.resolve(dir));
		else await importData(config, path.resolve(dir));
		return 0;
	} catch (err) {
		if (!(err instanceof DataCommandError)) throw err;
		console.error(err.message);
		return 1;
	}
}

if (require.main === module) {
	// What it writes (the export, NeDB files) is readable by its own user only, as a node's data is.
	process.umask(0o077);
	main(process.argv.slice(2)).then(
		code => process.exit(code),
		err => {
			console.error(`Mint data ${process.argv[2] ?? ""} failed:`, err instanceof Error ? err.message : err);
			process.exit(1);
		},
	);
}
