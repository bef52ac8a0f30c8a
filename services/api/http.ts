/**
 * What the gateway does to every HTTP request before and after an action
 * runs: request ids, client IPs behind trusted proxies, cookies, JSON body
 * rules, the Origin check and security headers.
 */
import crypto from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { parseCookie, stringifySetCookie } from "cookie";
import type { Config } from "../../lib/config";
import { MintError, forbidden, validationError } from "../../lib/errors";

export const ACCESS_COOKIE = "access.token";
export const REFRESH_COOKIE = "refresh.token";
const REFRESH_COOKIE_PATH = "/api/v1";

export type Req = IncomingMessage & { body?: unknown; $params?: Record<string, unknown>; [key: string]: any };
export type Res = ServerResponse;

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** The caller's X-Request-Id when it is sane, else a fresh one. */
export function requestIdOf(req: Req): string {
	const given = req.headers["x-request-id"];
	return typeof given === "string" && REQUEST_ID.test(given) ? given : crypto.randomUUID();
}

/** The client IP: the socket peer, or the last X-Forwarded-For hop when the peer is a trusted proxy. */
export function clientIpOf(req: Req, trustedProxies: string[]): string {
	const peer = normalizeIp(req.socket.remoteAddress ?? "unknown");
	if (!isTrustedPeer(req, trustedProxies)) return peer;
	const forwarded = String(req.headers["x-forwarded-for"] ?? "")
		.split(",")
		.map(s => s.trim())
		.filter(Boolean);
	return forwarded.length ? normalizeIp(forwarded[forwarded.length - 1]) : peer;
}

const normalizeIp = (ip: string) => (ip.startsWith("::ffff:") ? ip.slice(7) : ip);

/** Is the socket peer a proxy whose X-Forwarded-* headers we believe? */
export const isTrustedPeer = (req: Req, trustedProxies: string[]) => trustedProxies.includes(normalizeIp(req.socket.remoteAddress ?? ""));

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

const FORBIDDEN_KEYS = new Set(["__proto__", "constructor", "prototype"]);

/** The path of the first prototype-polluting key in a parsed JSON value, if any. */
export function forbiddenKeyIn(value: unknown, path = ""): string | undefined {
	if (value === null || typeof value !== "object") return undefined;
	for (const key of Object.keys(value)) {
		const here = path ? `${path}.${key}` : key;
		if (FORBIDDEN_KEYS.has(key)) return here;
		const inner = forbiddenKeyIn((value as Record<string, unknown>)[key], here);
		if (inner) return inner;
	}
	return undefined;
}

const hasBody = (req: Req) =>
	req.headers["transfer-encoding"] !== undefined || (req.headers["content-length"] !== undefined && req.headers["content-length"] !== "0");

/** Route middleware after the JSON body parser: JSON only, objects only, no prototype keys. */
export function jsonBodyRules(req: Req, _res: Res, next: (err?: unknown) => void): void {
	if (hasBody(req)) {
		const type = String(req.headers["content-type"] ?? "");
		if (!/^application\/json\s*(;|$)/i.test(type)) {
			return next(new MintError("Content-Type must be application/json", 415, "UNSUPPORTED_MEDIA_TYPE"));
		}
		if (req.body === null || typeof req.body !== "object" || Array.isArray(req.body)) {
			return next(validationError([{ path: "", message: "The body must be a JSON object" }]));
		}
		const bad = forbiddenKeyIn(req.body);
		if (bad) return next(validationError([{ path: bad, message: "This key is not allowed" }]));
	}
	next();
}

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

/** Cookie-authenticated unsafe requests must come from our own origin or an allowed one. */
export function checkOrigin(req: Req, config: Config, peerTrusted: boolean): void {
	const origin = req.headers.origin;
	if (typeof origin !== "string") return;
	const normalized = origin.toLowerCase();
	if (normalized === ownOriginOf(req, peerTrusted)) return;
	if (config.http.allowedOrigins.includes(normalized)) return;
	throw forbidden("Origin not allowed");
}
