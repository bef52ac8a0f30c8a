/** Jest with ts-jest. jose and cookie are ESM-only, so they are transformed too. */
module.exports = {
	testEnvironment: "node",
	roots: ["<rootDir>/test"],
	testMatch: ["**/*.test.ts"],
	transform: {
		"^.+\\.[tj]s$": ["ts-jest", { tsconfig: "tsconfig.test.json", diagnostics: false }],
	},
	transformIgnorePatterns: ["/node_modules/(?!(jose|cookie)/)"],
	testTimeout: 30000,
	maxWorkers: 2,
	setupFiles: ["<rootDir>/test/helpers/setup-env.ts"],
};
