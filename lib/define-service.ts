/**
 * Typed service schemas without hand-written `this` types: `this` inside
 * actions, methods, events and lifecycle handlers is the Moleculer Service,
 * plus the service's vars (what it sets on itself and what its mixins add),
 * plus its methods, inferred from the `methods` object. An identity function
 * at run time, as treatwell/moleculer-essentials' wrapService.
 *
 *   export default defineService<WalletVars>()({ name: "wallet", methods: {...}, actions: {...} });
 */
import type { Context, Service, ServiceSchema, ServiceSettingSchema } from "moleculer";

type AnyMethods = Record<string, (...args: never[]) => unknown>;
type NoMethods = Record<never, never>;

export type ServiceThis<TVars, TMethods> = Service<ServiceSettingSchema> & TVars & TMethods;

/**
 * Handlers are declared as methods: their parameter is checked bivariantly,
 * so a handler may take the exact Context it is called with (its params and
 * meta types) where the schema only knows a Context.
 */
interface HandlerFn<TThis> {
	handle(this: TThis, ctx: Context<unknown, object>): unknown;
}
type Handler<TThis> = HandlerFn<TThis>["handle"];

export interface ActionDef<TThis> {
	auth?: "required";
	visibility?: "published" | "public" | "protected" | "private";
	params?: Record<string, unknown>;
	cache?: boolean | Record<string, unknown>;
	handler(this: TThis, ctx: Context<unknown, object>): unknown;
}

export interface EventDef<TThis> {
	params?: Record<string, unknown>;
	group?: string;
	handler(this: TThis, ctx: Context<unknown, object>): unknown;
}

export interface TypedSchema<TVars, TMethods> {
	name: string;
	settings?: ServiceSettingSchema & Record<string, unknown>;
	mixins?: Partial<ServiceSchema>[];
	dependencies?: ServiceSchema["dependencies"];
	methods?: TMethods & ThisType<ServiceThis<TVars, TMethods>>;
	actions?: Record<string, ActionDef<ServiceThis<TVars, TMethods>> | Handler<ServiceThis<TVars, TMethods>> | false>;
	events?: Record<string, EventDef<ServiceThis<TVars, TMethods>> | Handler<ServiceThis<TVars, TMethods>>>;
	created?(this: ServiceThis<TVars, TMethods>): void;
	started?(this: ServiceThis<TVars, TMethods>): Promise<void> | void;
	stopped?(this: ServiceThis<TVars, TMethods>): Promise<void> | void;
}

export function defineService<TVars = object>() {
	return <TMethods extends AnyMethods = NoMethods>(schema: TypedSchema<TVars, TMethods>): ServiceSchema => schema as unknown as ServiceSchema;
}

/** The same for a mixin: a partial schema whose `this` is typed. */
export function defineMixin<TVars = object>() {
	return <TMethods extends AnyMethods = NoMethods>(schema: Partial<TypedSchema<TVars, TMethods>>): Partial<ServiceSchema> =>
		schema as unknown as Partial<ServiceSchema>;
}
