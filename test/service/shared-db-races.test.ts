/**
 * Two auth nodes on one database: what each does alone, both do at once, on
 * the same collections, with random yields before every store call so their
 * steps interleave differently each round.
 *
 * - NeDB: always (both nodes on the same collections in this process).
 * - MongoDB (test/helpers/mongo.ts): each node on its own client, as on two
 *   machines; skipped with the reason when there is no MongoDB.
 */
import fs from "node:fs";
import { createAdapter, type DbAdapter, type Store } from "../../mixins/db.mixin";
import type { StoredKey } from "../../services/auth/keys";
import { Sessions, type SessionSettings } from "../../services/auth/sessions";
import { SigningKeys } from "../../services/auth/signing-keys";
import { EXTRA_COLLECTIONS, USERS, type AuthStores } from "../../services/auth/stores";
import { newUser } from "../../services/auth/users";
import { describeWithInfra } from "../helpers/infra";
import { testConfig } from "../helpers/mint";
import { MONGO_NEED, startMongo, type TestMongo } from "../helpers/mongo";
import { makeTestKey, QUIET_LOG, TEST_SECRET, TEST_SECRETS, TEST_SESSION_SETTINGS } from "../unit/helpers/signing";

const ROUNDS = 8;
const KEY_SETTINGS = { keyBits: 2048, accessTokenTtlSec: 900, keyRotationDays: 0 };
const SESSION_SETTINGS = TEST_SESSION_SETTINGS;
const secrets = TEST_SECRETS;
const quiet = QUIET_LOG;

/** Yields the event loop a random number of times (up to `most`). */
const jitter = async (most = 4) => {
	for (let i = Math.floor(Math.random() * (most + 1)); i > 0; i--) await new Promise(r => setImmediate(r));
};

/** The store as one node sees it: every call starts after a random number of yields. */
function jittery<T>(store: Store<T>): Store<T> {
	return new Proxy(store, {
		get(target, prop, receiver) {
			const value = Reflect.get(target, prop, receiver);
			if (typeof value !== "function") return value;
			return async (...args: unknown[]) => {
				await jitter();
				return value.apply(target, args);
			};
		},
	});
}

/** The store, where `hook` runs after every call of `method` (before its caller sees the answer). */
function pausedAfter<T>(store: Store<T>, method: keyof Store<T>, hook: () => Promise<void>): Store<T> {
	return new Proxy(store, {
		get(target, prop, receiver) {
			const value = Reflect.get(target, prop, receiver);
			if (prop !== method || typeof value !== "function") return value;
			return async (...args: unknown[]) => {
				const answer = await value.apply(target, args);
				await hook();
				return answer;
			};
		},
	});
}

/** Every auth store as one node sees it. */
const nodeView = (db: AuthStores): AuthStores => ({
	users: jittery(db.users),
	sessions: jittery(db.sessions),
	families: jittery(db.families),
	oneTimeTokens: jittery(db.oneTimeTokens),
	signingKeys: jittery(db.signingKeys),
	revocations: jittery(db.revocations),
});

/** A node's emitter: what it announced. */
function recorder() {
	const emitted: { name: string; payload: Record<string, unknown> }[] = [];
	return { emitted, emit: (name: string, payload: unknown) => void emitted.push({ name, payload: payload as Record<string, unknown> }) };
}

const keySet = async (db: AuthStores) => (await db.signingKeys.find({})) as StoredKey[];
const statesOf = (keys: StoredKey[]) => keys.map(k => k.state).sort();

/** One database as two nodes reach it (empty at the start). */
interface SharedDatabase {
	/** The stores of node 0 and of node 1. */
	nodes: [AuthStores, AuthStores];
	close(): Promise<void>;
}

/** The scenarios, on auth's collections opened by `open`. */
function sharedDatabaseRaces(open: () => Promise<SharedDatabase>): void {
	let shared: SharedDatabase;
	/** Node 0's stores, for setting up and checking. */
	let db: AuthStores;
	beforeAll(async () => {
		shared = await open();
		db = shared.nodes[0];
	}, 120_000);
	afterAll(() => shared?.close(), 60_000);
	const keysNode = (node: 0 | 1) => new SigningKeys(nodeView(shared.nodes[node]), KEY_SETTINGS, secrets, quiet);

	describe("signing keys", () => {
		// Two nodes: new ones for every boot, as a restart makes.
		let a: SigningKeys;
		let b: SigningKeys;
		const bootBoth = async () => {
			a = keysNode(0);
			b = keysNode(1);
			await Promise.all([jitter(20).then(() => a.ensure()), jitter(20).then(() => b.ensure())]);
		};

		it("two nodes booting on an empty key set create one current and one next key between them, and sign with the same one", async () => {
			for (let round = 0; round < ROUNDS; round++) {
				await db.signingKeys.removeMany({});
				await bootBoth();
				const keys = await keySet(db);
				expect([round, statesOf(keys)]).toEqual([round, ["current", "next"]]);
				const current = keys.find(k => k.state === "current");
				expect([round, a.current.kid, b.current.kid]).toEqual([round, current?._id, current?._id]);
			}
		}, 120_000);

		it("after such a boot, a due rotation on both nodes at once happens once, frees the bootstrap's slots, and both sign with the new key", async () => {
			const emitter = recorder();
			const before = await keySet(db);
			const next = before.find(k => k.state === "next");
			// As the schedule rotates: only if the current key is still the one found due.
			const due = a.current.kid;
			const results = await Promise.all([a.rotate(emitter, due), b.rotate(emitter, due)]);
			expect(results.map(r => r.rotated).sort()).toEqual([false, true]);
			expect([a.current.kid, b.current.kid]).toEqual([next?._id, next?._id]);
			const after = await keySet(db);
			expect(statesOf(after)).toEqual(["current", "next", "retired"]);
			// Only the new next key holds a slot: the bootstrap's current one left it when it retired.
			expect(after.filter(k => k.slot !== undefined).map(k => [k.state, k.slot])).toEqual([["next", "next"]]);
			expect(emitter.emitted.map(e => e.payload.currentKid)).toEqual([next?._id]);
		});

		it("a later bootstrap still works: a lost current key is replaced once, however many nodes start", async () => {
			await db.signingKeys.removeMany({ state: "current" });
			await bootBoth();
			const keys = await keySet(db);
			expect(statesOf(keys)).toEqual(["current", "next", "retired"]);
			const current = keys.find(k => k.state === "current");
			expect([a.current.kid, b.current.kid]).toEqual([current?._id, current?._id]);
		});

		it("a node booting while another rotates leaves one current and one next key", async () => {
			for (let round = 0; round < ROUNDS; round++) {
				const booting = keysNode(1);
				await Promise.all([jitter(20).then(() => a.rotate(recorder())), jitter(20).then(() => booting.ensure())]);
				const keys = await keySet(db);
				expect([round, keys.filter(k => k.state === "current").map(k => k._id), keys.filter(k => k.state === "next").length]).toEqual([
					round,
					[a.current.kid],
					1,
				]);
			}
		}, 120_000);

		it("a node booting in the middle of a rotation (its next key promoted, the new one not yet written) leaves one next key", async () => {
			const booting = keysNode(1);
			const rotating = new SigningKeys({ signingKeys: pausedAfter(db.signingKeys, "updateOne", () => booting.ensure()) }, KEY_SETTINGS, secrets, quiet);
			expect((await rotating.rotate(recorder())).rotated).toBe(true);
			const keys = await keySet(db);
			expect([keys.filter(k => k.state === "current").map(k => k._id), keys.filter(k => k.state === "next").length]).toEqual([[rotating.current.kid], 1]);
		});
	});

	describe("session revocations", () => {
		let counter = 0;
		async function aSession(sessions: Sessions) {
			const id = `00000000-0000-4000-9000-${String(++counter).padStart(12, "0")}`;
			const welcome = { eventId: id, occurredAt: new Date().toISOString(), name: "user.signedUp" as const, sealedPayload: "" };
			const user = newUser(id, { firstName: "Ada", lastName: "Lovelace", email: `race${counter}@example.com` }, "hash", welcome);
			await db.users.insert(user);
			return sessions.start(user);
		}
		const sessionsNode = async (node: 0 | 1, emitter: ReturnType<typeof recorder>, settings: Partial<SessionSettings> = {}) =>
			new Sessions({
				db: nodeView(shared.nodes[node]),
				settings: { ...SESSION_SETTINGS, ...settings },
				signer: { current: (await makeTestKey()).signing },
				secret: TEST_SECRET,
				emitter,
				log: quiet,
			});

		it("concurrent logouts and revocations of one family all succeed and leave one revocation, with the latest end", async () => {
			const emitter = recorder();
			// Node 1 runs with a longer access-token lifetime (a configuration change rolling out): its revocations end later.
			const [a, b] = [await sessionsNode(0, emitter), await sessionsNode(1, emitter, { accessTokenTtlSec: 1800 })];
			for (let round = 0; round < ROUNDS; round++) {
				emitter.emitted.length = 0;
				const session = await aSession(a);
				const results = await Promise.allSettled([
					jitter(20).then(() => a.logOut(session.sessionId, session.refreshToken, emitter)),
					jitter(20).then(() => b.logOut(session.sessionId, undefined, emitter)),
					jitter(20).then(() => a.revokeFamilies([session.sessionId])),
					jitter(20).then(() => b.revokeFamilies([session.sessionId])),
				]);
				expect([round, results.filter(r => r.status === "rejected")]).toEqual([round, []]);
				const revocations = await db.revocations.find({ query: { _id: session.sessionId } });
				const latest = Math.max(...emitter.emitted.map(e => e.payload.expiresAt as number));
				expect([round, revocations]).toEqual([round, [{ _id: session.sessionId, expiresAt: latest }]]);
				expect([round, (await db.families.findOne({ _id: session.sessionId }))?.revokedAt]).toEqual([round, expect.any(Number)]);
				expect([round, await db.sessions.count({ query: { familyId: session.sessionId, revokedAt: null } })]).toEqual([round, 0]);
			}
		}, 60_000);

		it("a later revocation with a shorter end does not shorten the one in force", async () => {
			const emitter = recorder();
			const long = await sessionsNode(0, emitter, { accessTokenTtlSec: 1800 });
			const short = await sessionsNode(1, emitter, { accessTokenTtlSec: 60 });
			const session = await aSession(long);
			await long.revokeFamilies([session.sessionId]);
			const inForce = (await db.revocations.findOne({ _id: session.sessionId }))?.expiresAt;
			await short.revokeFamilies([session.sessionId]);
			expect((await db.revocations.findOne({ _id: session.sessionId }))?.expiresAt).toBe(inForce);
		});
	});
}

/** auth's collections for a configuration: every store connected, as DbMixin does. */
async function openAuthStores(config: ReturnType<typeof testConfig>): Promise<{ db: AuthStores; disconnect(): Promise<void> }> {
	const adapters: DbAdapter<unknown>[] = [USERS, ...EXTRA_COLLECTIONS].map(spec => createAdapter<unknown>(config, "auth", spec));
	for (const adapter of adapters) {
		adapter.init({}, { logger: quiet });
		await adapter.connect();
	}
	const [users, sessions, families, oneTimeTokens, signingKeys, revocations] = adapters;
	return {
		db: { users, sessions, families, oneTimeTokens, signingKeys, revocations } as AuthStores,
		async disconnect() {
			for (const adapter of adapters) await adapter.disconnect();
		},
	};
}

describe("two auth nodes on one NeDB data directory", () => {
	sharedDatabaseRaces(async () => {
		const config = testConfig();
		const { db, disconnect } = await openAuthStores(config);
		return {
			nodes: [db, db],
			async close() {
				await disconnect();
				fs.rmSync(config.dataDir, { recursive: true, force: true });
			},
		};
	});
});

describeWithInfra("two auth nodes on one MongoDB database", MONGO_NEED, () => {
	let mongo: TestMongo;
	sharedDatabaseRaces(async () => {
		mongo = await startMongo();
		const namespace = mongo.namespace();
		// Two URIs that differ only in appName: two MongoDB clients in this process, as on two nodes.
		const uriOf = (appName: string) => `${mongo.uri}${mongo.uri.includes("?") ? "&" : "?"}appName=${appName}`;
		const nodes = await Promise.all(["auth-0", "auth-1"].map(appName => openAuthStores(testConfig({ MONGO_URI: uriOf(appName), NAMESPACE: namespace }))));
		return {
			nodes: [nodes[0].db, nodes[1].db],
			async close() {
				for (const node of nodes) await node.disconnect();
				await mongo.stop();
			},
		};
	});
});
