/**
 * Users: the stored document, how it is shown (to its owner, to others, in a
 * search, to notifications), and the reads and writes on the users
 * collection: signup, profile changes, verification, password, listing and
 * search.
 */
import type { Contact, DirectoryEntry, PublicProfile, PublicUser, Role } from "../../contracts/users";
import { conflict, notFound, validationError } from "../../lib/errors";
import { isDuplicateKeyError, type Store } from "../../mixins/db.mixin";
import type { OutboxRecord } from "./user-outbox";

export interface UserEntity {
	_id: string;
	firstName: string;
	middleName?: string;
	lastName: string;
	email: string;
	passwordHash: string;
	role: Role;
	emailVerifiedAt: string | null;
	createdAt: string;
	updatedAt: string;
	/** Incremented by logout-all and password reset: families started under an older epoch are dead. */
	sessionEpoch?: number;
	/** The one live password-reset token (its hash): issuing another replaces it, using it clears it. */
	resetTokenId?: string;
	/** The outbox: events about this user not yet confirmed published (payload sealed: it carries tokens). */
	outbox?: OutboxRecord[];
	/** How many of them: present only while there are some (user-outbox.ts, under a sparse index). */
	unpublished?: number;
	/** An older Mint's count, kept at 0 once spent: unindexed; a positive one is moved to `unpublished` at start. */
	pendingEvents?: number;
}

export function toPublicUser(user: UserEntity): PublicUser {
	return {
		id: user._id,
		firstName: user.firstName,
		...(user.middleName ? { middleName: user.middleName } : {}),
		lastName: user.lastName,
		email: user.email,
		emailVerifiedAt: user.emailVerifiedAt ?? null,
		role: user.role,
		createdAt: user.createdAt,
		updatedAt: user.updatedAt,
	};
}

const names = (user: UserEntity) => ({ firstName: user.firstName, ...(user.middleName ? { middleName: user.middleName } : {}), lastName: user.lastName });
export const toPublicProfile = (user: UserEntity): PublicProfile => ({ id: user._id, ...names(user), createdAt: user.createdAt });
export const toDirectoryEntry = (user: UserEntity): DirectoryEntry => ({ id: user._id, ...names(user), email: user.email });
export const toContact = (user: UserEntity): Contact => ({ id: user._id, email: user.email, firstName: user.firstName, lastName: user.lastName });

export const EMAIL_TAKEN = "An account with this email already exists";
const SEARCH_RESULTS = 10;

export interface SignupFields {
	firstName: string;
	middleName?: string;
	lastName: string;
	email: string;
}

export type NameChanges = Partial<Pick<UserEntity, "firstName" | "middleName" | "lastName">>;

/** A new user document; its first outbox record (the welcome) is written with it, in the same insert. */
export function newUser(userId: string, fields: SignupFields, passwordHash: string, welcome: OutboxRecord, now = new Date().toISOString()): UserEntity {
	return {
		_id: userId,
		firstName: fields.firstName,
		...(fields.middleName ? { middleName: fields.middleName } : {}),
		lastName: fields.lastName,
		email: fields.email,
		passwordHash,
		role: "user",
		emailVerifiedAt: null,
		createdAt: now,
		updatedAt: now,
		outbox: [welcome],
		unpublished: 1,
	};
}

/** The update PUT /users/me makes: `middleName: ""` removes the middle name; at least one field is needed. */
export function nameUpdate(changes: NameChanges, now = new Date().toISOString()): object {
	const { firstName, middleName, lastName } = changes;
	if (firstName === undefined && middleName === undefined && lastName === undefined) {
		throw validationError([{ path: "", message: "Send at least one of firstName, middleName, lastName" }]);
	}
	const set: Record<string, string> = { updatedAt: now };
	const unset: Record<string, true> = {};
	if (firstName !== undefined) set.firstName = firstName;
	if (lastName !== undefined) set.lastName = lastName;
	if (middleName !== undefined) {
		if (middleName === "") unset.middleName = true;
		else set.middleName = middleName;
	}
	return Object.keys(unset).length ? { $set: set, $unset: unset } : { $set: set };
}

/** The users collection. */
export class Users {
	constructor(private readonly db: { users: Store<UserEntity> }) {}

	private get store(): Store<UserEntity> {
		return this.db.users;
	}

	byId(id: string): Promise<UserEntity | null> {
		return this.store.findOne({ _id: id });
	}

	byEmail(email: string): Promise<UserEntity | null> {
		return this.store.findOne({ email });
	}

	/** A user that must exist (404 otherwise). */
	async get(id: string): Promise<UserEntity> {
		const user = await this.byId(id);
		if (!user) throw notFound("User not found");
		return user;
	}

	async getByEmail(email: string): Promise<UserEntity> {
		const user = await this.byEmail(email);
		if (!user) throw notFound("User not found");
		return user;
	}

	async exists(id: string): Promise<boolean> {
		return (await this.store.count({ query: { _id: id } })) === 1;
	}

	/** The new user; a unique-index clash (a signup racing another with the same email) is 409. */
	async insert(user: UserEntity): Promise<void> {
		try {
			await this.store.insert(user);
		} catch (err) {
			if (isDuplicateKeyError(err)) throw conflict(EMAIL_TAKEN);
			throw err;
		}
	}

	list(limit: number, offset: number): Promise<UserEntity[]> {
		return this.store.find({ sort: ["createdAt", "_id"], limit, offset });
	}

	/** Emails are stored lower-cased: a range on the text is a literal, case-insensitive prefix match (no pattern). */
	searchByEmailPrefix(text: string, exceptId: string): Promise<UserEntity[]> {
		const prefix = text.toLowerCase();
		return this.store.find({
			query: { email: { $gte: prefix, $lt: `${prefix}\uffff` }, _id: { $ne: exceptId } },
			sort: ["email"],
			limit: SEARCH_RESULTS,
		});
	}

	async updateNames(id: string, changes: NameChanges): Promise<UserEntity> {
		await this.store.updateOne({ _id: id }, nameUpdate(changes));
		return this.get(id);
	}

	/** A verification token's effect; a repeat changes nothing. */
	async markEmailVerified(id: string): Promise<UserEntity> {
		const now = new Date().toISOString();
		await this.store.updateOne({ _id: id, emailVerifiedAt: null }, { $set: { emailVerifiedAt: now, updatedAt: now } });
		return this.get(id);
	}

	/**
	 * A reset token's effect, in one write: the new password, the end of the
	 * reset token (one-time-tokens.ts), and a new session epoch, so no session
	 * from before can refresh even if the process dies before its families are
	 * revoked and announced (sessions.ts revokeAllOf, which moves the epoch again).
	 */
	async setPasswordHash(id: string, passwordHash: string): Promise<void> {
		await this.store.updateOne(
			{ _id: id },
			{ $set: { passwordHash, updatedAt: new Date().toISOString() }, $unset: { resetTokenId: true }, $inc: { sessionEpoch: 1 } },
		);
	}
}
