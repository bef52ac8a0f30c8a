/**
 * auth's background work: the user outbox relay, the hourly purge of expired
 * records, and the key-rotation schedule (KEY_ROTATION_DAYS > 0).
 */
import type { ServiceThis } from "../../lib/define-service";
import { OutboxRelay, type OutboxVars } from "../../mixins/outbox.mixin";
import { PeriodicJobs, type PeriodicVars } from "../../mixins/periodic.mixin";
import type { SigningKey } from "./keys";
import type { AuthParts } from "./parts";
import { purgeExpired, type AuthDbVars } from "./stores";
import type { UserEntity } from "./users";

/** How long an outbox event may wait before the relay sends it again (and how often the relay looks). */
const OUTBOX_RELAY_MS = 5000;
/** How often expired records are purged, and the rotation schedule checks the signing key's age. */
const HOURLY_MS = 3_600_000;

/** `this` of the auth service; `signingKey` is the key that signs now, a read-only view of `keys` for tests and tools. */
export type AuthVars = AuthDbVars & PeriodicVars & OutboxVars & AuthParts & { readonly signingKey: SigningKey };
type AuthThis = ServiceThis<AuthVars, Record<never, never>>;

export function authJobs(keyRotationDays: number) {
	return [
		OutboxRelay<AuthThis, UserEntity>({
			intervalMs: OUTBOX_RELAY_MS,
			quietMs: OUTBOX_RELAY_MS,
			pending(quietBefore) {
				return this.outbox.pending(quietBefore);
			},
			relay(user) {
				return this.outbox.relay(this.broker, user, new Date(Date.now() - OUTBOX_RELAY_MS));
			},
		}),
		PeriodicJobs<AuthThis>([
			{
				name: "purge-expired",
				intervalMs: HOURLY_MS,
				runAtStart: true,
				run() {
					return purgeExpired(this.db);
				},
			},
			{
				name: "key-rotation",
				intervalMs: HOURLY_MS,
				enabled: keyRotationDays > 0,
				run() {
					return this.keys.rotateIfDue(this.broker);
				},
			},
		]),
	];
}
