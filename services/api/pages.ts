/**
 * What the gateway serves that is not an action: the pages the links in
 * emails open (/verify-email, /reset-password), the API docs (/api/docs,
 * Swagger UI from swagger-ui-dist, no CDN) and the OpenAPI document
 * (/api/v1/openapi.json, built once from openapi.ts).
 *
 * Every file comes from a fixed list, read when the gateway is created (a
 * missing file stops the node at start, not a visitor later): a URL only
 * ever selects an entry of that list, it is never joined into a path.
 * Opening a page changes nothing: mail scanners prefetch links, so only the
 * page's button or form changes state, by POSTing to the JSON API.
 *
 * The route takes the starting gate (503 while the node starts) like every
 * other; request ids and the default security headers come from
 * beginRequest (requests.ts); pages replace the Content-Security-Policy with
 * their own, which allows their own scripts and nothing inline.
 */
import fs from "node:fs";
import path from "node:path";
import type { Config } from "../../lib/config";
import { notFound } from "../../lib/errors";
import { projectRoot } from "../../lib/project-root";
import type { Res, RoutedReq } from "./http";
import { DOCS_ASSETS, PAGE_ASSETS, openApiDocument } from "./openapi";
import { whileStarting } from "./requests";

/** The email-link pages: scripts, styles and fetch to this origin only; no form posts natively, no framing, no referrer. */
export const PAGE_CSP =
	"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'";
/** Swagger UI: its own scripts and styles, the document and "try it out" on this origin, and the data: icons of its stylesheet. */
export const DOCS_CSP =
	"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

const CONTENT_TYPES: Record<string, string> = {
	".html": "text/html; charset=utf-8",
	".js": "text/javascript; charset=utf-8",
	".css": "text/css; charset=utf-8",
	".svg": "image/svg+xml",
	".json": "application/json; charset=utf-8",
};

interface ServedFile {
	body: Buffer;
	headers: Record<string, string>;
}

/** public/ (found when the gateway's route is built: a node without the gateway never looks for it). */
const publicFile = (name: string) => path.join(projectRoot(), "public", name);

/** Where each served file name is read from (the docs page's own files are in public/, Swagger UI's in its package). */
function docsFile(name: (typeof DOCS_ASSETS)[number]): string {
	const swaggerUi = path.dirname(require.resolve("swagger-ui-dist/package.json"));
	return name === "api-docs.js" ? publicFile(name) : path.join(swaggerUi, name);
}

const ASSET_HEADERS = { "Cache-Control": "public, max-age=3600" };

function read(file: string, headers: Record<string, string> = {}): ServedFile {
	const type = CONTENT_TYPES[path.extname(file)];
	if (!type) throw new Error(`no content type for ${file}`);
	return { body: fs.readFileSync(file), headers: { ...headers, "Content-Type": type } };
}

function page(name: string, csp: string): ServedFile {
	// Cache-Control no-store and Referrer-Policy no-referrer are every response's (http.ts); stated again here because the pages need them.
	return read(publicFile(name), {
		"Content-Security-Policy": csp,
		"Cache-Control": "no-store",
		"Referrer-Policy": "no-referrer",
		"Cross-Origin-Opener-Policy": "same-origin",
	});
}

function send(res: Res, file: ServedFile): void {
	res.statusCode = 200;
	for (const [name, value] of Object.entries(file.headers)) res.setHeader(name, value);
	res.setHeader("Content-Length", file.body.length);
	res.end(file.body);
}

/** An alias that answers one file. moleculer-web's custom alias handlers answer themselves and never call next on success. */
const serve = (file: ServedFile) =>
	function serveFile(_req: RoutedReq, res: Res): void {
		send(res, file);
	};

/** An alias `.../:name` that answers the file of that name in a fixed map, or 404. */
const serveNamed = (files: Map<string, ServedFile>) =>
	function serveNamedFile(req: RoutedReq, res: Res, next: (err?: unknown) => void): void {
		const name = (req.$params.params as Record<string, unknown> | undefined)?.name;
		const file = typeof name === "string" ? files.get(name) : undefined;
		if (file) send(res, file);
		else next(notFound());
	};

/** The aliases of the pages route, every file read now. */
export function pageAliases(config: Config) {
	const docsAssets = new Map<string, ServedFile>(DOCS_ASSETS.map(name => [name, read(docsFile(name), ASSET_HEADERS)]));
	const pageAssets = new Map<string, ServedFile>(PAGE_ASSETS.map(name => [name, read(publicFile(name), ASSET_HEADERS)]));
	const document: ServedFile = {
		body: Buffer.from(JSON.stringify(openApiDocument(config))),
		headers: { "Content-Type": CONTENT_TYPES[".json"] },
	};
	return {
		"GET /api/v1/openapi.json": serve(document),
		"GET /api/docs": serve(page("api-docs.html", DOCS_CSP)),
		"GET /api/docs/:name": serveNamed(docsAssets),
		"GET /verify-email": serve(page("verify-email.html", PAGE_CSP)),
		"GET /reset-password": serve(page("reset-password.html", PAGE_CSP)),
		"GET /assets/:name": serveNamed(pageAssets),
	};
}

/**
 * The moleculer-web route of the pages: no session (a page needs none, and a
 * GET must not refresh one), no body, the starting gate first.
 */
export function pagesRoute(config: Config) {
	return {
		name: "pages",
		path: "/",
		mappingPolicy: "restrict",
		autoAliases: false,
		mergeParams: false,
		authentication: false,
		authorization: false,
		logging: false,
		bodyParsers: false,
		use: [whileStarting],
		aliases: pageAliases(config),
	};
}
