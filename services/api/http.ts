/**
 * What the gateway does to every HTTP request before and after an action
 * runs: request ids, client IPs behind trusted proxies, cookies, JSON body
 * params, the Origin check and security headers.
 */
import crypto from "node:crypto";
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import { parseCookie, stringifySetCookie } from "cookie";
import proxyaddr from "proxy-addr";
import type { Config } from "../../lib/config";
import { forbidden } from "../../lib/errors";
import { toHttpError } from "./http-errors";

export const ACCESS_COOKIE = "access.token";
export const REFRESH_COOKIE = "refresh.token";
const REFRESH_COOKIE_PATH = "/api/v1";

/** An incoming request as the gateway sees it: what moleculer-web and our own hooks put on it. */
export type Req = IncomingMessage & {
	/** moleculer-web: the path without the query string. */
	parsedUrl?: string;
	/** moleculer-web: the request's params (body, query, path), replaced by actionParams() before the call. */
	$params?: Record<string, unknown>;
	/** moleculer-web: the matched action's schema. */
	$action?: { name: string; auth?: "required" };
	/** jsonBody(): the parsed JSON body. */
	body?: unknown;
	/** rootCallOptions: the request id and the client IP. */
	$requestId?: string;
	$clientIp?: string;
	/** onBeforeCall: the parsed Cookie header. */
	$cookies?: Record<string, string | undefined>;
};

/** A request that moleculer-web has routed to an alias: its params are set before any route hook runs. */
export type RoutedReq = Req & { $params: Record<string, unknown> };

export type Res = ServerResponse;

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * The caller's X-Request-Id when it is sane; else the trace-id of a valid W3C
 * traceparent, so the request joins the caller's trace; else a fresh one.
 */
export function requestIdOf(req: Req): string {
	const given = req.headers["x-request-id"];
	if (typeof given === "string" && REQUEST_ID.test(given)) return given;
	return traceParentOf(req)?.traceId ?? crypto.randomUUID();
}

/** version-traceid-parentid-flags, lower-case hex (https://www.w3.org/TR/trace-context/#traceparent-header). */
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}(-.*)?$/;

/** A valid W3C traceparent header's trace-id and the caller's span id (parent-id). */
export function traceParentOf(req: Req): { traceId: string; parentId: string } | undefined {
	const header = req.headers.traceparent;
	const match = typeof header === "string" ? TRACEPARENT.exec(header.trim()) : null;
	if (!match) return undefined;
	const [, version, traceId, parentId, more] = match;
	// Version ff is invalid; version 00 has exactly four fields; all-zero ids are invalid.
	if (version === "ff" || (version === "00" && more !== undefined) || /^0+$/.test(traceId) || /^0+$/.test(parentId)) return undefined;
	return { traceId, parentId };
}

/** Which socket peers are proxies whose X-Forwarded-* headers we believe (TRUSTED_PROXIES: addresses, CIDR ranges, names). */
export type TrustProxy = (address: string, hop: number) => boolean;
export const compileTrustedProxies = (list: string[]): TrustProxy => proxyaddr.compile(list);

/** The client IP: the first address, from the socket peer back along X-Forwarded-For, that is not a trusted proxy. */
export function clientIpOf(req: Req, trust: TrustProxy): string {
	// proxy-addr starts from the socket's address, which is gone once the socket closes.
	return normalizeIp(proxyaddr(req, trust) ?? "unknown");
}

const normalizeIp = (ip: string) => (ip.startsWith("::ffff:") ? ip.slice(7) : ip);

/** Is the socket peer a proxy whose X-Forwarded-* headers we believe? */
export const isTrustedPeer = (req: Req, trust: TrustProxy) => trust(req.socket.remoteAddress ?? "", 0);

export function cookiesOf(req: Req): Record<string, string | undefined> {
	const header = req.headers.cookie;
	if (!header) return {};
	try {
		return parseCookie(header);
	} catch {
		return {};
	}
}

export function bearerTokenOf(req: Req): string | undefined {
	const header = req.headers.authorization;
	if (typeof header !== "string") return undefined;
	const match = /^Bearer ([A-Za-z0-9_.-]+)$/.exec(header.trim());
	return match?.[1];
}

export function appendSetCookie(res: Res, cookies: string[]): void {
	const existing = res.getHeader("Set-Cookie");
	const list = existing === undefined ? [] : Array.isArray(existing) ? existing : [String(existing)];
	res.setHeader("Set-Cookie", [...list, ...cookies]);
}

export function sessionCookies(
	session: { accessToken: string; accessExpiresAt: number; refreshToken: string; refreshExpiresAt: number },
	secure: boolean,
	nowSec = Math.floor(Date.now() / 1000),
): string[] {
	return [
		stringifySetCookie({
			name: ACCESS_COOKIE,
			value: session.accessToken,
			httpOnly: true,
			secure,
			sameSite: "strict",
			path: "/",
			maxAge: Math.max(0, session.accessExpiresAt - nowSec),
		}),
		stringifySetCookie({
			name: REFRESH_COOKIE,
			value: session.refreshToken,
			httpOnly: true,
			secure,
			sameSite: "strict",
			path: REFRESH_COOKIE_PATH,
			maxAge: Math.max(0, session.refreshExpiresAt - nowSec),
		}),
	];
}

export function clearedSessionCookies(secure: boolean): string[] {
	return [
		stringifySetCookie({ name: ACCESS_COOKIE, value: "", httpOnly: true, secure, sameSite: "strict", path: "/", maxAge: 0 }),
		stringifySetCookie({ name: REFRESH_COOKIE, value: "", httpOnly: true, secure, sameSite: "strict", path: REFRESH_COOKIE_PATH, maxAge: 0 }),
	];
}

export function setSecurityHeaders(res: Res, secure: boolean): void {
	res.setHeader("X-Content-Type-Options", "nosniff");
	res.setHeader("X-Frame-Options", "DENY");
	res.setHeader("Referrer-Policy", "no-referrer");
	res.setHeader("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'");
	res.setHeader("Cross-Origin-Resource-Policy", "same-origin");
	res.setHeader("Cache-Control", "no-store");
	if (secure) res.setHeader("Strict-Transport-Security", "max-age=31536000; includeSubDomains");
}

const UNSAFE_METHODS = new Set(["POST", "PUT", "PATCH", "DELETE"]);
export const isUnsafeMethod = (method = "GET") => UNSAFE_METHODS.has(method.toUpperCase());

/**
 * Replaces moleculer-web's merged params: a request body is never
 * overridden by the query string. Body methods get body + path params; other
 * methods get query + path params.
 */
export function actionParams(req: Req, method: string): Record<string, unknown> {
	const merged = (req.$params ?? {}) as { body?: unknown; query?: Record<string, unknown>; params?: Record<string, unknown> };
	const source = isUnsafeMethod(method) ? (merged.body ?? {}) : (merged.query ?? {});
	return { ...(source as object), ...(merged.params ?? {}) };
}

/** The request's own origin: from Host, or the forwarded host and proto behind a trusted proxy. */
export function ownOriginOf(req: Req, trusted: boolean): string | undefined {
	const host = (trusted && firstHeader(req, "x-forwarded-host")) || firstHeader(req, "host");
	if (!host) return undefined;
	const proto = (trusted && firstHeader(req, "x-forwarded-proto")) || ((req.socket as { encrypted?: boolean }).encrypted ? "https" : "http");
	return `${proto}://${host}`.toLowerCase();
}

const firstHeader = (req: Req, name: string) => {
	const value = req.headers[name];
	return typeof value === "string" ? value.split(",")[0].trim() : undefined;
};

/**
 * Cookie-authenticated unsafe requests must come from our own origin or an
 * allowed one (Origin), or, without Origin, say `Sec-Fetch-Site: same-origin`.
 * Anything else (a cross-site form, a client that sends neither) is 403.
 */
export function checkOrigin(req: Req, config: Config, peerTrusted: boolean): void {
	const origin = req.headers.origin;
	if (typeof origin !== "string") {
		// Without Origin, only a browser's own word that the request is same-origin will do.
		if (req.headers["sec-fetch-site"] === "same-origin") return;
		throw forbidden("Origin not allowed");
	}
	const normalized = origin.toLowerCase();
	if (normalized === ownOriginOf(req, peerTrusted)) return;
	if (config.http.allowedOrigins.includes(normalized)) return;
	throw forbidden("Origin not allowed");
}

/**
 * Node's HTTP parser refused a request before any handler saw it (a CR or LF
 * in a header, headers over 16 kB, a malformed request line): answer in the
 * SPEC error format with a request id instead of Node's bare 400.
 */
export function answerClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
	if (err.code === "ECONNRESET" || !socket.writable) {
		socket.destroy();
		return;
	}
	const status = err.code === "HPE_HEADER_OVERFLOW" ? 431 : err.code === "ERR_HTTP_REQUEST_TIMEOUT" ? 408 : 400;
	const body = JSON.stringify(toHttpError({ code: status }).body);
	socket.end(
		[
			`HTTP/1.1 ${status} ${STATUS_CODES[status]}`,
			"Content-Type: application/json; charset=utf-8",
			`Content-Length: ${Buffer.byteLength(body)}`,
			`X-Request-Id: ${crypto.randomUUID()}`,
			"Connection: close",
			"",
			body,
		].join("\r\n"),
	);
}
