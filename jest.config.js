/** Jest with ts-jest. jose is ESM-only, so it is transformed too. */
module.exports = {
	testEnvironment: "node",
	roots: ["<rootDir>/test"],
	testMatch: ["**/*.test.ts"],
	transform: {
		"^.+\\.[tj]s$": ["ts-jest", { tsconfig: "tsconfig.test.json", diagnostics: false }],
	},
	transformIgnorePatterns: ["/node_modules/(?!(jose)/)"],
	testTimeout: 30000,
	maxWorkers: 2,
	setupFiles: ["<rootDir>/test/helpers/setup-env.ts"],
};
