/**
 * `npm run data -- export|import <dir>` (scripts/data.ts): an embedded
 * deployment with people, top-ups and a transfer, stopped, exported and
 * imported into a fresh DATA_DIR (MongoDB in the gated variant), then served
 * by a Mint started there with the same AUTH_SECRET: the same people log in,
 * a session from before still works, balances, transactions and their
 * histories are the same, the ledger's invariants hold, and a second import
 * finds everything already there and changes nothing.
 *
 * The operator's path runs as they would run it: the built command
 * (test/helpers/dist.ts) in a child process; the rest calls its functions.
 */
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { DataCommandError, MANIFEST_FILE, STATEFUL_SERVICES, embeddedCollections, exportData, importData, type Manifest } from "../../scripts/data";
import { buildMint, type BuiltMint } from "../helpers/dist";
import { login, newPerson, signup, type Person, type Session } from "../helpers/http";
import { describeWithInfra } from "../helpers/infra";
import { MONGO_NEED, startMongo, type TestMongo } from "../helpers/mongo";
import { startTestMint, testConfig, type TestMint } from "../helpers/mint";
import { balanceOf, expectInvariants, topUp, transfer } from "../helpers/money";

const tmpDir = (label: string) => fs.mkdtempSync(path.join(os.tmpdir(), `mint-data-${label}-`));
const quiet = () => undefined;

/** What a person sees of their account: themselves, their wallet, their transactions and each one's history. */
async function accountOf(mint: TestMint, session: Session) {
	const get = async (url: string) => {
		const res = await mint.http.get(url).set("Cookie", session.cookie);
		expect([url, res.status]).toEqual([url, 200]);
		return res.body;
	};
	const transactions = await get("/api/v1/transactions?limit=100");
	const histories = [];
	for (const tx of transactions.transactions) histories.push(await get(`/api/v1/transactions/${tx.id}/history`));
	return { user: await get("/api/v1/auth/user"), wallet: await get("/api/v1/wallet/user"), transactions, histories };
}

type Account = Awaited<ReturnType<typeof accountOf>>;

/** The deployment before the move: its DATA_DIR (stopped), its generated secret, and what each person saw. */
interface Source {
	dataDir: string;
	secret: string;
	people: { person: Person; session: Session; account: Account }[];
}

let source: Source;

beforeAll(async () => {
	// The deployment is on the default engine, NeDB, whatever engine the suite runs on (EMBEDDED_STORE).
	const mint = await startTestMint({ EMBEDDED_STORE: "nedb" });
	const alice = await signup(mint, newPerson({ firstName: "Alice" }));
	const bob = await signup(mint, newPerson({ firstName: "Bob" }));
	expect((await topUp(mint, alice, 100, "data-first-topup")).status).toBe(201);
	expect((await transfer(mint, alice, 30.25, bob.user.id)).status).toBe(201);
	expect((await topUp(mint, bob, 5)).status).toBe(201);
	expect([await balanceOf(mint, alice), await balanceOf(mint, bob)]).toEqual([69.75, 35.25]);
	await expectInvariants(mint);
	const people = [];
	for (const { person, ...session } of [alice, bob]) people.push({ person, session, account: await accountOf(mint, session) });
	await mint.stop({ keepData: true });
	// AUTH_SECRET was unset: the node generated one into its DATA_DIR.
	source = { dataDir: mint.dataDir, secret: fs.readFileSync(path.join(mint.dataDir, "auth-secret"), "utf8").trim(), people };
});

afterAll(() => fs.rmSync(source.dataDir, { recursive: true, force: true }));

/** Every file of an export folder, path -> content, the manifest without its time. */
function exportContents(dir: string): Record<string, unknown> {
	const out: Record<string, unknown> = {};
	for (const service of fs.readdirSync(dir)) {
		if (service === MANIFEST_FILE) continue;
		for (const file of fs.readdirSync(path.join(dir, service))) out[`${service}/${file}`] = fs.readFileSync(path.join(dir, service, file), "utf8");
	}
	const { exportedAt: _time, ...manifest } = JSON.parse(fs.readFileSync(path.join(dir, MANIFEST_FILE), "utf8")) as Manifest;
	out[MANIFEST_FILE] = manifest;
	return out;
}

/** The embedded data under a DATA_DIR as an export would write it (through a throw-away export). */
async function exportedFrom(dataDir: string): Promise<Record<string, unknown>> {
	const dir = tmpDir("reexport");
	try {
		await exportData(testConfig({ DATA_DIR: dataDir }), dir, quiet);
		return exportContents(dir);
	} finally {
		fs.rmSync(dir, { recursive: true, force: true });
	}
}

const totals = (manifest: Manifest) => Object.values(manifest.collections).flatMap(counts => Object.values(counts));
const sum = (counts: number[]) => counts.reduce((a, b) => a + b, 0);

/** A Mint on the moved data, with the exported deployment's secret, serves the same people as before. */
async function expectSamePeople(mint: TestMint): Promise<void> {
	for (const { person, session, account } of source.people) {
		// A session from before the move: its access token verifies against the moved signing keys.
		expect((await mint.http.get("/api/v1/wallet/user").set("Cookie", session.cookie)).status).toBe(200);
		const fresh = await login(mint, person);
		expect(await accountOf(mint, fresh)).toEqual(account);
	}
	await expectInvariants(mint);
	// And money still moves.
	const [alice, bob] = source.people;
	const sent = await transfer(mint, await login(mint, bob.person), 1, alice.session.user.id);
	expect([sent.status, sent.body.status]).toEqual([201, "Completed"]);
	await expectInvariants(mint);
}

type Run = { status: number | null; stdout: string; stderr: string };

describe("npm run data: an embedded deployment moved to a fresh DATA_DIR", () => {
	let build: BuiltMint;
	let exportDir: string;
	let target: string;
	let manifest: Manifest;

	/** The built command as an operator runs it (`npm run data -- ...` ends in this). */
	const runData = (args: string[], env: Record<string, string>): Promise<Run> =>
		new Promise(resolve => {
			const script = path.join(build.dist, "scripts/data.js");
			execFile(
				process.execPath,
				[script, ...args],
				{ env: { PATH: process.env.PATH ?? "", NODE_ENV: "test", LOG_LEVEL: "warn", ...env } },
				(err, stdout, stderr) => resolve({ status: err ? (typeof err.code === "number" ? err.code : null) : 0, stdout, stderr }),
			);
		});

	beforeAll(() => {
		build = buildMint("data");
		exportDir = path.join(tmpDir("export"), "export");
		target = tmpDir("target");
	});
	afterAll(() => {
		build.remove();
		fs.rmSync(path.dirname(exportDir), { recursive: true, force: true });
		fs.rmSync(target, { recursive: true, force: true });
	});

	it("exports every collection under DATA_DIR, one JSON document a line, with a manifest of the counts, and nothing else", async () => {
		const run = await runData(["export", exportDir], { DATA_DIR: source.dataDir, EMBEDDED_STORE: "nedb" });
		expect([run.status, run.stderr]).toEqual([0, ""]);
		// It tells where the generated secret is: the nodes on MongoDB need it.
		expect(run.stdout).toContain(path.join(source.dataDir, "auth-secret"));

		manifest = JSON.parse(fs.readFileSync(path.join(exportDir, MANIFEST_FILE), "utf8"));
		const onDisk = embeddedCollections(source.dataDir, "nedb").map(c => `${c.service}/${c.collection}`);
		expect(Object.entries(manifest.collections).flatMap(([service, counts]) => Object.keys(counts).map(c => `${service}/${c}`))).toEqual(onDisk);
		expect(Object.keys(manifest.collections)).toEqual([...STATEFUL_SERVICES]);
		// Neither the mail folder nor the secret: only the collections and the manifest.
		expect(Object.keys(exportContents(exportDir)).sort()).toEqual([...onDisk.map(c => `${c}.ndjson`), MANIFEST_FILE].sort());
		for (const [service, counts] of Object.entries(manifest.collections)) {
			for (const [collection, count] of Object.entries(counts)) {
				const file = path.join(exportDir, service, `${collection}.ndjson`);
				const docs = fs
					.readFileSync(file, "utf8")
					.split("\n")
					.filter(Boolean)
					.map(line => JSON.parse(line));
				expect([`${service}/${collection}`, docs.length]).toEqual([`${service}/${collection}`, count]);
				// Private to its user: it holds password hashes and sealed keys.
				expect(fs.statSync(file).mode & 0o077).toBe(0);
			}
		}
		expect(manifest.collections.auth.users).toBe(2);
		expect(manifest.collections.wallet.wallets).toBe(2);
		expect(manifest.collections.transactions.transactions).toBe(3);
		const users = fs.readFileSync(path.join(exportDir, "auth/users.ndjson"), "utf8");
		for (const { person } of source.people) expect(users).toContain(`"email":"${person.email}"`);
	});

	it("refuses to export into a folder that is not empty, and changes nothing there", async () => {
		const before = exportContents(exportDir);
		const run = await runData(["export", exportDir], { DATA_DIR: source.dataDir, EMBEDDED_STORE: "nedb" });
		expect(run.status).toBe(1);
		expect(run.stderr).toContain(`${exportDir} is not empty`);
		expect(exportContents(exportDir)).toEqual(before);
	});

	it("imports every document into a fresh DATA_DIR, which then holds exactly what was exported", async () => {
		const lines: string[] = [];
		const reports = await importData(testConfig({ DATA_DIR: target }), exportDir, line => lines.push(line));
		expect(sum(reports.map(r => r.imported))).toBe(sum(totals(manifest)));
		expect(reports.every(r => r.alreadyThere === 0)).toBe(true);
		expect(lines.at(-1)).toBe(`Imported ${sum(totals(manifest))} documents, 0 already there; every collection holds its exported count.`);
		expect(await exportedFrom(target)).toEqual(exportContents(exportDir));
	});

	it("a second import, run as an operator would, finds every document already there and changes nothing", async () => {
		const run = await runData(["import", exportDir], { DATA_DIR: target, EMBEDDED_STORE: testConfig({ DATA_DIR: target }).embeddedStore });
		expect([run.status, run.stderr]).toEqual([0, ""]);
		expect(run.stdout).toContain(`Imported 0 documents, ${sum(totals(manifest))} already there`);
		expect(run.stdout).toMatch(/auth\/users\s+0\s+2\n/);
		expect(await exportedFrom(target)).toEqual(exportContents(exportDir));
	});

	it("a Mint started on the imported data with the same AUTH_SECRET serves the same people: logins, sessions, balances, history, invariants", async () => {
		const mint = await startTestMint({ DATA_DIR: target, AUTH_SECRET: source.secret });
		try {
			await expectSamePeople(mint);
		} finally {
			await mint.stop({ keepData: true });
		}
	});

	it("an import that does not add up fails, naming the collection: a target that holds more, an export that holds less", async () => {
		// The Mint above wrote sessions of its own: the target now holds documents the export does not.
		const refused = await importData(testConfig({ DATA_DIR: target }), exportDir, quiet).catch(err => err);
		expect(refused).toBeInstanceOf(DataCommandError);
		expect(refused.message).toMatch(/^auth\/sessions: the target holds \d+ documents, the export 2:/m);
		const damaged = tmpDir("damaged");
		try {
			fs.cpSync(exportDir, damaged, { recursive: true });
			const users = path.join(damaged, "auth/users.ndjson");
			fs.writeFileSync(users, fs.readFileSync(users, "utf8").split("\n").slice(1).join("\n"));
			const fresh = tmpDir("fresh");
			await expect(importData(testConfig({ DATA_DIR: fresh }), damaged, quiet)).rejects.toThrow(
				/auth\/users: the export holds 1 documents, its manifest says 2/,
			);
			fs.rmSync(fresh, { recursive: true, force: true });
		} finally {
			fs.rmSync(damaged, { recursive: true, force: true });
		}
	});

	it("says how to use it, and that every node must be stopped, when the command is missing (exit 2)", async () => {
		const run = await runData([], {});
		expect(run.status).toBe(2);
		expect(run.stderr).toContain("npm run data -- export <dir>");
		expect(run.stderr).toContain("Stop every Mint node first");
	});
});

describe("npm run data: an embedded deployment moved from NeDB to SQLite (EMBEDDED_STORE=sqlite)", () => {
	let work: string;
	beforeAll(() => {
		work = tmpDir("to-sqlite");
	});
	afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

	it("imports every document into SQLite files, exports them back unchanged, and a Mint on them serves the same people", async () => {
		const exportDir = path.join(work, "export");
		const manifest = await exportData(testConfig({ DATA_DIR: source.dataDir, EMBEDDED_STORE: "nedb" }), exportDir, quiet);
		const env = { DATA_DIR: path.join(work, "data"), EMBEDDED_STORE: "sqlite" };
		const reports = await importData(testConfig(env), exportDir, quiet);
		expect([sum(reports.map(r => r.imported)), sum(reports.map(r => r.alreadyThere))]).toEqual([sum(totals(manifest)), 0]);
		expect(embeddedCollections(env.DATA_DIR, "sqlite")).toEqual(embeddedCollections(source.dataDir, "nedb"));
		expect(embeddedCollections(env.DATA_DIR, "nedb")).toEqual([]);

		const back = path.join(work, "back");
		await exportData(testConfig(env), back, quiet);
		expect(exportContents(back)).toEqual(exportContents(exportDir));

		const mint = await startTestMint({ ...env, AUTH_SECRET: source.secret });
		try {
			await expectSamePeople(mint);
		} finally {
			await mint.stop({ keepData: true });
		}
	}, 60_000);
});

describeWithInfra("npm run data: an embedded deployment moved to MongoDB", MONGO_NEED, () => {
	let mongo: TestMongo;
	let exportDir: string;
	let manifest: Manifest;

	beforeAll(async () => {
		mongo = await startMongo();
		exportDir = path.join(tmpDir("export-mongo"), "export");
		manifest = await exportData(testConfig({ DATA_DIR: source.dataDir, EMBEDDED_STORE: "nedb" }), exportDir, quiet);
	}, 60_000);

	afterAll(async () => {
		await mongo?.stop();
		if (exportDir) fs.rmSync(path.dirname(exportDir), { recursive: true, force: true });
	}, 60_000);

	it("imports into the <namespace>-<service> databases; a Mint on them serves the same people; a second import changes nothing", async () => {
		const scratch = tmpDir("mongo-node");
		// A namespace of its own: its databases are this test's alone, dropped by mongo.stop().
		const env = { MONGO_URI: mongo.uri, NAMESPACE: mongo.namespace(), DATA_DIR: scratch };
		try {
			const first = await importData(testConfig(env), exportDir, quiet);
			expect([sum(first.map(r => r.imported)), sum(first.map(r => r.alreadyThere))]).toEqual([sum(totals(manifest)), 0]);
			const second = await importData(testConfig(env), exportDir, quiet);
			expect([sum(second.map(r => r.imported)), sum(second.map(r => r.alreadyThere))]).toEqual([0, sum(totals(manifest))]);
			const mint = await startTestMint({ ...env, AUTH_SECRET: source.secret });
			try {
				await expectSamePeople(mint);
			} finally {
				await mint.stop({ keepData: true });
			}
		} finally {
			fs.rmSync(scratch, { recursive: true, force: true });
		}
	}, 60_000);
});
