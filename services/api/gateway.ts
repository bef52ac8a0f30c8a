/**
 * Where moleculer-web's loose types meet ours: the meta the gateway puts on
 * every call, what the moleculer-web mixin adds to the service, and the two
 * calls into moleculer-web's own methods that its typings cannot express.
 */
import type { Server } from "node:http";
import type { Context } from "moleculer";
import ApiGateway, { type ContextResponseMeta } from "moleculer-web";
import type { CallMeta } from "../../contracts/gateway";
import type { Req, Res } from "./http";

/**
 * The meta of a call through the gateway: what it tells the services
 * (contracts/gateway.ts), and the moleculer-web response fields ($statusCode,
 * $location, $responseHeaders, $responseType) actions and the gateway set.
 */
export interface GatewayMeta extends ContextResponseMeta, CallMeta {}

export type GatewayContext<TParams = unknown> = Context<TParams, GatewayMeta>;

/** What the moleculer-web mixin adds to the api service (its typings declare none of it). */
export interface GatewayVars {
	/** The HTTP server, created in the mixin's created() and listening from its started(). */
	server: Server;
	/** moleculer-web's error answer: it hands the error to settings.onError. */
	sendError(req: Req, res: Res, err: unknown): void;
}

/** moleculer-web's route, as far as its writeCorsHeaders reads it. */
export interface CorsRoute {
	cors?: unknown;
}

type WriteCorsHeaders = (this: unknown, route: CorsRoute, req: Req, res: Res, isPreFlight: boolean) => void;

/**
 * moleculer-web's own writeCorsHeaders, which Mint's override calls for the
 * allowed origins. The one cast: the mixin's schema types its methods as
 * optional and untyped (`ServiceMethods`), while this method exists and has
 * exactly this signature in moleculer-web 0.11.
 */
const moleculerWebWriteCorsHeaders = (ApiGateway.methods as { writeCorsHeaders: WriteCorsHeaders }).writeCorsHeaders;

export function writeMoleculerWebCorsHeaders(service: unknown, route: CorsRoute, req: Req, res: Res, isPreFlight: boolean): void {
	moleculerWebWriteCorsHeaders.call(service, route, req, res, isPreFlight);
}

type HttpHandler = (this: unknown, req: Req, res: Res, next?: unknown) => Promise<void>;

/** moleculer-web's own httpHandler (the server's request listener), which Mint's override hands every request but the wallet stream. Same cast as above. */
const moleculerWebHttpHandler = (ApiGateway.methods as { httpHandler: HttpHandler }).httpHandler;

export function routeThroughMoleculerWeb(service: unknown, req: Req, res: Res, next?: unknown): Promise<void> {
	return moleculerWebHttpHandler.call(service, req, res, next);
}
