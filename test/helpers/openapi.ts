/**
 * Checks HTTP answers against Mint's OpenAPI document: the operation (by
 * method and path template), the status, the required headers, the content
 * type and the JSON body, with ajv (JSON Schema 2020-12, as OpenAPI 3.1
 * uses). A test calls `conforms(res)` on supertest responses; the validator
 * remembers which operations and statuses it saw, so a test can check it
 * exercised them all.
 *
 * `validOpenApi31` checks the document itself with
 * @seriousme/openapi-schema-validator (an ES module: run in a child Node).
 */
import { execFileSync } from "node:child_process";
import Ajv2020 from "ajv/dist/2020";
import addFormats from "ajv-formats";
import type { Response } from "supertest";

type Json = Record<string, any>;

const METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
const SCHEMA_ID = "mint-openapi.json";

/** A JSON pointer segment inside a URI fragment. */
const pointerSegment = (segment: string) => encodeURIComponent(segment.replace(/~/g, "~0").replace(/\//g, "~1"));

export interface Operation {
	method: string;
	/** The path template, e.g. /api/v1/users/{id}. */
	path: string;
	spec: Json;
}

export interface OpenApiValidator {
	readonly document: Json;
	/** Every documented operation. */
	operations(): Operation[];
	/** The documented operation a request hits, literal paths before templated ones. */
	operationFor(method: string, urlPath: string): Operation | undefined;
	/** What in this answer the document does not describe ([] when it conforms). */
	problems(res: Response): string[];
	/** Fails the test (naming the request) unless the answer conforms; returns it for chaining. */
	conforms(res: Response): Response;
	/** "GET /api/v1/users/{id} 200" for every answer checked so far. */
	readonly seen: Set<string>;
}

export function openApiValidator(document: Json): OpenApiValidator {
	const ajv = new Ajv2020({ allErrors: true, strict: false });
	addFormats(ajv);
	ajv.addSchema(document, SCHEMA_ID);

	/** Follows a local $ref; returns the object and the JSON pointer it lives at. */
	const deref = (value: Json, pointer: string[]): [Json, string[]] => {
		if (typeof value?.$ref !== "string") return [value, pointer];
		const target = value.$ref.replace(/^#\//, "").split("/");
		return deref(
			target.reduce((node: Json, key: string) => node?.[key.replace(/~1/g, "/").replace(/~0/g, "~")], document),
			target,
		);
	};

	const validators = new Map<string, ReturnType<typeof ajv.compile>>();
	const validatorAt = (pointer: string[]) => {
		const key = pointer.map(pointerSegment).join("/");
		let validate = validators.get(key);
		if (!validate) {
			validate = ajv.getSchema(`${SCHEMA_ID}#/${key}`);
			if (!validate) throw new Error(`no schema at #/${pointer.join("/")}`);
			validators.set(key, validate);
		}
		return validate;
	};

	const templates = Object.keys(document.paths).map(path => {
		const params = path.match(/\{[^}]+\}/g)?.length ?? 0;
		const pattern = new RegExp(`^${path.replace(/[.*+?^$()|[\]\\]/g, "\\$&").replace(/\\?\{[^}]+\\?\}/g, "[^/]+")}$`);
		return { path, params, pattern };
	});
	templates.sort((a, b) => a.params - b.params);

	const operations = (): Operation[] =>
		Object.entries(document.paths as Json).flatMap(([path, item]) => METHODS.filter(m => item[m]).map(method => ({ method, path, spec: item[method] })));

	const operationFor = (method: string, urlPath: string): Operation | undefined => {
		const trimmed = urlPath.length > 1 ? urlPath.replace(/\/$/, "") : urlPath;
		const m = method.toLowerCase();
		const template = templates.find(t => t.pattern.test(trimmed) && document.paths[t.path][m]);
		return template && { method: m, path: template.path, spec: document.paths[template.path][m] };
	};

	const seen = new Set<string>();

	function problems(res: Response): string[] {
		const method = res.request.method;
		const urlPath = new URL(res.request.url).pathname;
		const operation = operationFor(method, urlPath);
		if (!operation) return [`${method} ${urlPath} is not in the document`];
		const name = `${operation.method.toUpperCase()} ${operation.path}`;
		const responsePointer = ["paths", operation.path, operation.method, "responses", String(res.status)];
		const documented = operation.spec.responses[String(res.status)];
		if (!documented) return [`${name}: status ${res.status} is not documented (documented: ${Object.keys(operation.spec.responses).join(", ")})`];
		seen.add(`${name} ${res.status}`);
		const [response, pointer] = deref(documented, responsePointer);
		const found: string[] = [];

		for (const [headerName, headerRef] of Object.entries((response.headers ?? {}) as Json)) {
			const [headerSpec, headerPointer] = deref(headerRef, [...pointer, "headers", headerName]);
			const raw = res.headers[headerName.toLowerCase()] as string | string[] | undefined;
			if (raw === undefined) {
				if (headerSpec.required) found.push(`${name} ${res.status}: header ${headerName} is missing`);
				continue;
			}
			const validate = validatorAt([...headerPointer, "schema"]);
			for (const value of Array.isArray(raw) ? raw : [raw]) {
				if (!validate(value)) found.push(`${name} ${res.status}: header ${headerName} "${value}" ${ajv.errorsText(validate.errors)}`);
			}
		}

		const contentType = String(res.headers["content-type"] ?? "");
		const mediaType = contentType.split(";")[0].trim().toLowerCase();
		const content = response.content as Json | undefined;
		if (!content) {
			if (res.text || contentType)
				found.push(`${name} ${res.status}: documented without a body, got ${contentType || "no type"} "${String(res.text).slice(0, 80)}"`);
			return found;
		}
		if (!content[mediaType]) {
			found.push(`${name} ${res.status}: content type "${contentType}" is not documented (documented: ${Object.keys(content).join(", ")})`);
			return found;
		}
		if (mediaType === "application/json") {
			let body: unknown;
			try {
				body = JSON.parse(res.text);
			} catch {
				found.push(`${name} ${res.status}: the body is not JSON: ${String(res.text).slice(0, 80)}`);
				return found;
			}
			const validate = validatorAt([...pointer, "content", mediaType, "schema"]);
			if (!validate(body)) found.push(`${name} ${res.status}: body ${ajv.errorsText(validate.errors)}: ${JSON.stringify(body).slice(0, 300)}`);
		} else if ((res.text ?? res.body)?.length === 0) {
			found.push(`${name} ${res.status}: empty ${mediaType} body`);
		}
		return found;
	}

	return {
		document,
		operations,
		operationFor,
		problems,
		seen,
		conforms(res) {
			const found = problems(res);
			if (found.length) throw new Error(`${res.request.method} ${res.request.url} answered ${res.status}, not as documented:\n${found.join("\n")}`);
			return res;
		},
	};
}

/** Validates the document as OpenAPI 3.1 (@seriousme/openapi-schema-validator): valid, or the validator's errors. */
export function validOpenApi31(document: Json): { valid: boolean; errors?: unknown } {
	const script = `
		import { Validator } from "@seriousme/openapi-schema-validator";
		let text = "";
		for await (const chunk of process.stdin) text += chunk;
		const validator = new Validator();
		const result = await validator.validate(JSON.parse(text));
		process.stdout.write(JSON.stringify({ valid: result.valid, version: validator.version, errors: result.errors }));
	`;
	const out = execFileSync(process.execPath, ["--input-type=module", "-e", script], { input: JSON.stringify(document), cwd: process.cwd(), encoding: "utf8" });
	const result = JSON.parse(out) as { valid: boolean; version: string; errors?: unknown };
	if (result.version !== "3.1") return { valid: false, errors: `validated as OpenAPI ${result.version}, not 3.1` };
	return result.valid ? { valid: true } : { valid: false, errors: result.errors };
}
