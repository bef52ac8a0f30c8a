/** Broker options from the config: the Redis cacher's connection options come from REDIS_URL. */
import { redisOptionsOf } from "../../moleculer.config";

describe("redisOptionsOf", () => {
	it.each([
		["redis://127.0.0.1:6379", { host: "127.0.0.1", port: 6379 }],
		["redis://cache", { host: "cache", port: 6379 }],
		["redis://:s%40cret@cache:6380/2", { host: "cache", port: 6380, password: "s@cret", db: 2 }],
		["rediss://mint:pw@cache.example.com:6390", { host: "cache.example.com", port: 6390, username: "mint", password: "pw", tls: {} }],
	])("%s", (url, options) => {
		expect(redisOptionsOf(url)).toEqual(options);
	});
});
