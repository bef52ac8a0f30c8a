/**
 * The signing key set as the auth service keeps it: a current key (signs)
 * and a next one (published, not yet signing) always exist; rotation moves
 * next to current, retires the old current until its last token has expired
 * and publishes a new next key. Every auth node shares the set through the
 * store and reloads it when another node rotates. The key states and slots
 * themselves are in keys.ts.
 *
 * Nodes share one store, so every write that creates or moves a key is one
 * they can race: creating a key takes its slot (a unique index: one insert
 * wins, the others discard their key), moving one is a compare-and-set on
 * its state that also frees its slot.
 */
import type { JWK } from "jose";
import { publish } from "../../lib/events";
import type { NodeSecrets } from "../../lib/secrets";
import { isDuplicateKeyError, type Store } from "../../mixins/db.mixin";
import { currentKey, generateKey, openSigningKey, publishedKeys, type SigningKey, type StoredKey } from "./keys";
import type { Emitter, Log } from "./support";

export interface KeySettings {
	keyBits: number;
	accessTokenTtlSec: number;
	/** Rotate the signing key when it is this old (0: only by hand). */
	keyRotationDays: number;
}

export interface RotationResult {
	rotated: boolean;
	currentKid: string;
	/** The kids in the JWKS after the rotation. */
	published: string[];
}

export class SigningKeys {
	private key?: SigningKey;

	constructor(
		private readonly db: { signingKeys: Store<StoredKey> },
		private readonly settings: KeySettings,
		private readonly secrets: Pick<NodeSecrets, "current" | "unsealWith">,
		private readonly log: Log,
	) {}

	/** The key that signs now (loaded at start, reloaded on every rotation). */
	get current(): SigningKey {
		if (!this.key) throw new Error("Signing keys are not loaded");
		return this.key;
	}

	/** The JWKS's keys: next, current, and retired ones whose tokens may still be alive. */
	async published(): Promise<JWK[]> {
		return publishedKeys(await this.db.signingKeys.find({}));
	}

	/** Makes sure a current and a next key exist, then loads the signing key (the same one on every node, however many start at once). */
	async ensure(): Promise<void> {
		if (!currentKey(await this.db.signingKeys.find({}))) {
			await this.insertInSlot({ ...(await this.generate()), state: "current", activatedAt: Date.now(), slot: "current" });
		}
		if (!(await this.db.signingKeys.find({})).some(k => k.state === "next")) await this.insertInSlot({ ...(await this.generate()), slot: "next" });
		await this.load();
	}

	async load(): Promise<void> {
		const current = currentKey(await this.db.signingKeys.find({}));
		if (!current) throw new Error("No current signing key");
		this.key = openSigningKey(current, this.secrets.unsealWith);
	}

	/**
	 * Rotation is a compare-and-set on the next key's state, so nodes
	 * (or a schedule and an operator) rotating at once cannot leave two
	 * signing keys: the loser of the race reloads and reports the winner's key.
	 * With `onlyIfCurrentIs`, a rotation already done by someone else is not repeated.
	 */
	async rotate(emitter: Emitter, onlyIfCurrentIs?: string): Promise<RotationResult> {
		const fresh = await this.generate(); // slow: before the critical step
		const now = Date.now();
		const keys = await this.db.signingKeys.find({ sort: ["createdAt"] });
		const previous = currentKey(keys);
		const stillDue = onlyIfCurrentIs === undefined || previous?._id === onlyIfCurrentIs;
		const next = stillDue ? keys.find(k => k.state === "next") : undefined;
		const won = next
			? await this.db.signingKeys.updateOne({ _id: next._id, state: "next" }, { $set: { state: "current", activatedAt: now }, $unset: { slot: true } })
			: 0;
		if (next && won === 1) {
			// Every other current key (one, or more in a set from before key slots); safe to repeat: a retired key no longer matches.
			await this.db.signingKeys.updateMany(
				{ state: "current", _id: { $ne: next._id } },
				{ $set: { state: "retired", expiresAt: now + (this.settings.accessTokenTtlSec + 60) * 1000 }, $unset: { slot: true } },
			);
			await this.insertInSlot({ ...fresh, slot: "next" });
			await this.db.signingKeys.removeMany({ state: "retired", expiresAt: { $lte: now } });
		}
		await this.load();
		if (won === 1) {
			this.log.info({ currentKid: this.current.kid, retiredKid: previous?._id }, "signing keys rotated");
			await publish(emitter, "auth.keysRotated", { retiredKid: previous?._id ?? null, currentKid: this.current.kid });
		}
		return { rotated: won === 1, currentKid: this.current.kid, published: (await this.published()).flatMap(k => (k.kid ? [k.kid] : [])) };
	}

	/** The schedule (KEY_ROTATION_DAYS > 0): rotates when the signing key is that old; safe on several nodes. */
	async rotateIfDue(emitter: Emitter): Promise<void> {
		const current = currentKey(await this.db.signingKeys.find({}));
		if (current && Date.now() - (current.activatedAt ?? Date.now()) >= this.settings.keyRotationDays * 86_400_000) {
			await this.rotate(emitter, current._id);
		}
	}

	/** Creates a key in its slot; when another node filled the slot first, its key stands and this one is dropped. */
	private async insertInSlot(key: StoredKey): Promise<void> {
		try {
			await this.db.signingKeys.insert(key);
		} catch (err) {
			if (!isDuplicateKeyError(err)) throw err;
		}
	}

	private generate(): Promise<StoredKey> {
		return generateKey(this.settings.keyBits, this.secrets.current);
	}
}
