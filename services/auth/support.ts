/** Small shapes auth's modules share, so they take what they need rather than a whole service. */
import type { publish } from "../../lib/events";

/** What events are published through: the broker, or an action's context (which carries its meta and trace). */
export type Emitter = Parameters<typeof publish>[0];

/** The part of a Moleculer logger the modules use. */
export interface Log {
	info(obj: object, msg: string): void;
	warn(obj: object, msg: string): void;
	error(obj: object, msg: string): void;
}
