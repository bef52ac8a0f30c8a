import { loadConfig, type Config } from "../../lib/config";
import {
	actionParams,
	bearerTokenOf,
	checkOrigin,
	clearedSessionCookies,
	clientIpOf,
	compileTrustedProxies,
	cookiesOf,
	isTrustedPeer,
	requestIdOf,
	sessionCookies,
	type Req,
} from "../../services/api/http";
import { forbiddenKeyIn } from "../../services/api/json-body";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** A fake incoming request: only what the helpers read. */
const fakeReq = (headers: Record<string, string | undefined> = {}, extra: { remoteAddress?: string; encrypted?: boolean; $params?: unknown } = {}): Req =>
	({
		headers,
		socket: { remoteAddress: "remoteAddress" in extra ? extra.remoteAddress : "10.0.0.1", encrypted: extra.encrypted },
		$params: extra.$params,
	}) as any;

/** The attributes of a Set-Cookie string, keyed by lower-case name. */
function parseSetCookie(header: string) {
	const [pair, ...attrs] = header.split(";").map(s => s.trim());
	const eq = pair.indexOf("=");
	const attributes: Record<string, string | true> = {};
	for (const attr of attrs) {
		const i = attr.indexOf("=");
		if (i === -1) attributes[attr.toLowerCase()] = true;
		else attributes[attr.slice(0, i).toLowerCase()] = attr.slice(i + 1);
	}
	return { name: pair.slice(0, eq), value: pair.slice(eq + 1), attributes };
}

describe("requestIdOf", () => {
	it("keeps a sane caller-supplied id, short ones too", () => {
		expect(requestIdOf(fakeReq({ "x-request-id": "req-1234.abc:DEF_9" }))).toBe("req-1234.abc:DEF_9");
		expect(requestIdOf(fakeReq({ "x-request-id": "abc" }))).toBe("abc");
	});

	it.each([
		["an id with spaces", "bad id with spaces"],
		["a 300-character id", "a".repeat(300)],
		["an empty id", ""],
		["an id with a newline", "abcdefgh\nX-Injected: 1"],
	])("replaces %s with a fresh UUID", (_label, given) => {
		const id = requestIdOf(fakeReq({ "x-request-id": given }));
		expect(id).toMatch(UUID);
		expect(id).not.toBe(given);
	});

	it("generates a different UUID per request when none is given", () => {
		const a = requestIdOf(fakeReq());
		expect(a).toMatch(UUID);
		expect(requestIdOf(fakeReq())).not.toBe(a);
	});
});

describe("clientIpOf", () => {
	const TRUSTED = compileTrustedProxies(["10.0.0.1"]);
	const NONE = compileTrustedProxies([]);

	it("uses the socket peer and ignores X-Forwarded-For from an untrusted peer", () => {
		expect(clientIpOf(fakeReq({ "x-forwarded-for": "1.2.3.4" }, { remoteAddress: "203.0.113.9" }), TRUSTED)).toBe("203.0.113.9");
	});

	it("uses the last X-Forwarded-For hop when the peer is a trusted proxy", () => {
		expect(clientIpOf(fakeReq({ "x-forwarded-for": "6.6.6.6, 198.51.100.7" }), TRUSTED)).toBe("198.51.100.7");
	});

	it("uses the trusted peer itself when it sends no X-Forwarded-For", () => {
		expect(clientIpOf(fakeReq({}), TRUSTED)).toBe("10.0.0.1");
	});

	it("strips the IPv4-mapped IPv6 prefix from the peer and the forwarded hop", () => {
		expect(clientIpOf(fakeReq({}, { remoteAddress: "::ffff:192.0.2.5" }), NONE)).toBe("192.0.2.5");
		expect(clientIpOf(fakeReq({ "x-forwarded-for": "::ffff:192.0.2.6" }, { remoteAddress: "::ffff:10.0.0.1" }), TRUSTED)).toBe("192.0.2.6");
	});

	it("ignores X-Forwarded-For entirely when no proxy is trusted", () => {
		expect(clientIpOf(fakeReq({ "x-forwarded-for": "1.2.3.4" }), NONE)).toBe("10.0.0.1");
	});

	it("trusts a CIDR range such as a compose network's, and walks back over every trusted hop", () => {
		const compose = compileTrustedProxies(["172.16.0.0/12"]);
		expect(clientIpOf(fakeReq({ "x-forwarded-for": "198.51.100.7" }, { remoteAddress: "172.18.0.5" }), compose)).toBe("198.51.100.7");
		// client -> edge proxy 172.20.0.9 -> nginx 172.18.0.5: the client is the first untrusted address from the right.
		expect(clientIpOf(fakeReq({ "x-forwarded-for": "6.6.6.6, 198.51.100.7, 172.20.0.9" }, { remoteAddress: "172.18.0.5" }), compose)).toBe("198.51.100.7");
		expect(clientIpOf(fakeReq({ "x-forwarded-for": "198.51.100.7" }, { remoteAddress: "172.32.0.1" }), compose)).toBe("172.32.0.1");
	});

	it("knows loopback, the default, for IPv4, IPv6 and IPv4-mapped peers", () => {
		const loopback = compileTrustedProxies(["loopback"]);
		for (const peer of ["127.0.0.1", "127.0.0.53", "::1", "::ffff:127.0.0.1"]) expect(isTrustedPeer(fakeReq({}, { remoteAddress: peer }), loopback)).toBe(true);
		for (const peer of ["10.0.0.1", "::ffff:10.0.0.1", "fe80::1"]) expect(isTrustedPeer(fakeReq({}, { remoteAddress: peer }), loopback)).toBe(false);
	});

	it("answers for a request whose socket has already closed", () => {
		expect(clientIpOf(fakeReq({}, { remoteAddress: undefined }), TRUSTED)).toBe("unknown");
	});
});

describe("forbiddenKeyIn", () => {
	it("finds an own __proto__ key created by JSON.parse", () => {
		expect(forbiddenKeyIn(JSON.parse('{"__proto__":{"admin":true}}'))).toBe("__proto__");
	});

	it("finds a nested constructor and reports its path", () => {
		expect(forbiddenKeyIn(JSON.parse('{"a":{"b":{"constructor":{"prototype":{}}}}}'))).toBe("a.b.constructor");
	});

	it("finds prototype inside an array element", () => {
		expect(forbiddenKeyIn(JSON.parse('{"items":[{"ok":1},{"prototype":1}]}'))).toBe("items.1.prototype");
	});

	it.each([[{ amount: 10, note: "constructor", nested: { proto: 1, list: [1, "__proto__"] } }], [null], ["text"], [42], [[]]])(
		"returns undefined for the clean value %p",
		value => {
			expect(forbiddenKeyIn(value)).toBeUndefined();
		},
	);
});

describe("actionParams", () => {
	const $params = { body: { amount: 5, id: "from-body" }, query: { amount: 999, page: "2" }, params: { id: "from-path" } };

	it("a POST takes the body and path params and ignores the query string", () => {
		expect(actionParams(fakeReq({}, { $params }), "POST")).toEqual({ amount: 5, id: "from-path" });
	});

	it("a lower-case delete counts as a body method", () => {
		expect(actionParams(fakeReq({}, { $params }), "delete")).toEqual({ amount: 5, id: "from-path" });
	});

	it("a GET takes the query and path params and ignores any body", () => {
		expect(actionParams(fakeReq({}, { $params }), "GET")).toEqual({ amount: 999, page: "2", id: "from-path" });
	});

	it("a POST without a body yields only the path params", () => {
		expect(actionParams(fakeReq({}, { $params: { query: { a: 1 }, params: { id: "p" } } }), "POST")).toEqual({ id: "p" });
		expect(actionParams(fakeReq(), "GET")).toEqual({});
	});
});

describe("checkOrigin", () => {
	const config: Config = loadConfig({ ALLOWED_ORIGINS: "https://app.example.com" });

	/** The status checkOrigin rejects with, or "allowed". */
	function verdict(headers: Record<string, string>, peerTrusted = false, encrypted = false): number | "allowed" {
		try {
			checkOrigin(fakeReq(headers, { encrypted }), config, peerTrusted);
			return "allowed";
		} catch (err) {
			return (err as { code: number }).code;
		}
	}

	it("allows a request from its own origin according to Host", () => {
		expect(verdict({ host: "localhost:3000", origin: "http://localhost:3000" })).toBe("allowed");
		expect(verdict({ host: "Mint.Example.com", origin: "https://mint.example.com" }, false, true)).toBe("allowed");
	});

	it("allows a listed ALLOWED_ORIGINS origin, case-insensitively", () => {
		expect(verdict({ host: "api.internal:3000", origin: "https://APP.example.com" })).toBe("allowed");
	});

	it("refuses any other origin with 403", () => {
		expect(verdict({ host: "localhost:3000", origin: "https://evil.example" })).toBe(403);
		expect(verdict({ host: "localhost:3000", origin: "null" })).toBe(403);
	});

	it("refuses the same host under the wrong scheme", () => {
		expect(verdict({ host: "localhost:3000", origin: "https://localhost:3000" })).toBe(403);
	});

	it("without Origin, allows only what a browser marks Sec-Fetch-Site: same-origin", () => {
		expect(verdict({ host: "localhost:3000", "sec-fetch-site": "same-origin" })).toBe("allowed");
		expect(verdict({ host: "localhost:3000" })).toBe(403);
		for (const site of ["same-site", "cross-site", "none"]) expect(verdict({ host: "localhost:3000", "sec-fetch-site": site })).toBe(403);
	});

	it("honours X-Forwarded-Host and X-Forwarded-Proto from a trusted proxy", () => {
		const headers = { host: "api.internal:3000", "x-forwarded-host": "shop.example.com", "x-forwarded-proto": "https", origin: "https://shop.example.com" };
		expect(verdict(headers, true)).toBe("allowed");
	});

	it("ignores X-Forwarded-Host from an untrusted peer", () => {
		const headers = { host: "api.internal:3000", "x-forwarded-host": "shop.example.com", "x-forwarded-proto": "https", origin: "https://shop.example.com" };
		expect(verdict(headers, false)).toBe(403);
		const spoof = { host: "localhost:3000", "x-forwarded-host": "evil.example", origin: "http://evil.example" };
		expect(verdict(spoof, false)).toBe(403);
	});
});

describe("sessionCookies / clearedSessionCookies", () => {
	const NOW = 1_700_000_000;
	const session = { accessToken: "acc.tok.en", accessExpiresAt: NOW + 900, refreshToken: "refresh-abc", refreshExpiresAt: NOW + 7 * 86_400 };

	it("sets an HttpOnly, SameSite=Strict access cookie on / and a refresh cookie on /api/v1 with their remaining lifetimes", () => {
		const [access, refresh] = sessionCookies(session, false, NOW).map(parseSetCookie);
		expect(access).toEqual({ name: "access.token", value: "acc.tok.en", attributes: { "max-age": "900", path: "/", httponly: true, samesite: "Strict" } });
		expect(refresh).toEqual({
			name: "refresh.token",
			value: "refresh-abc",
			attributes: { "max-age": String(7 * 86_400), path: "/api/v1", httponly: true, samesite: "Strict" },
		});
	});

	it("adds Secure to both cookies only when secure is true", () => {
		expect(sessionCookies(session, true, NOW).map(c => parseSetCookie(c).attributes.secure)).toEqual([true, true]);
		expect(sessionCookies(session, false, NOW).map(c => parseSetCookie(c).attributes.secure)).toEqual([undefined, undefined]);
	});

	it("never sets a negative Max-Age for an already expired token", () => {
		const [access] = sessionCookies({ ...session, accessExpiresAt: NOW - 10 }, true, NOW).map(parseSetCookie);
		expect(access.attributes["max-age"]).toBe("0");
	});

	it("cleared cookies are empty, expire now, and keep the paths and flags", () => {
		const [access, refresh] = clearedSessionCookies(true).map(parseSetCookie);
		expect(access).toEqual({ name: "access.token", value: "", attributes: { "max-age": "0", path: "/", httponly: true, secure: true, samesite: "Strict" } });
		expect(refresh).toEqual({
			name: "refresh.token",
			value: "",
			attributes: { "max-age": "0", path: "/api/v1", httponly: true, secure: true, samesite: "Strict" },
		});
		expect(clearedSessionCookies(false).map(c => parseSetCookie(c).attributes.secure)).toEqual([undefined, undefined]);
	});
});

describe("cookiesOf / bearerTokenOf", () => {
	it("parses the Cookie header and tolerates its absence", () => {
		expect(cookiesOf(fakeReq({ cookie: "access.token=abc; refresh.token=def" }))).toEqual({ "access.token": "abc", "refresh.token": "def" });
		expect(cookiesOf(fakeReq())).toEqual({});
	});

	it("takes a well-formed Bearer token and refuses other schemes or odd characters", () => {
		expect(bearerTokenOf(fakeReq({ authorization: "Bearer aa.bb.cc" }))).toBe("aa.bb.cc");
		expect(bearerTokenOf(fakeReq({ authorization: "Basic dXNlcjpwYXNz" }))).toBeUndefined();
		expect(bearerTokenOf(fakeReq({ authorization: "Bearer aa.bb.cc extra" }))).toBeUndefined();
		expect(bearerTokenOf(fakeReq())).toBeUndefined();
	});
});
