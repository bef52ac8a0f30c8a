/**
 * The docs page in a real browser (Debian's Chromium through
 * playwright-core): Swagger UI, served from this node, runs under the page's
 * CSP, loads the document and lists every operation, calls this node
 * from "Try it out", and asks nothing of any other origin.
 */
import fs from "node:fs";
import { type Browser, chromium } from "playwright-core";
import { openApiDocument } from "../../services/api/openapi";
import { describeWithInfra } from "../helpers/infra";
import { startTestMint, type TestMint } from "../helpers/mint";

const CHROMIUM = "/usr/bin/chromium";
/** Without these flags Chromium floods this closed network (and cannot sandbox as root). */
const CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"];

describeWithInfra("the API docs page, in a real browser", { name: `Chromium at ${CHROMIUM}`, available: fs.existsSync(CHROMIUM) }, () => {
	let mint: TestMint;
	let browser: Browser;

	beforeAll(async () => {
		mint = await startTestMint();
		browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
	}, 60_000);

	afterAll(async () => {
		await browser?.close();
		await mint?.stop();
	});

	it("runs Swagger UI under its CSP: every operation of the document listed, Try it out works, nothing asked of another origin", async () => {
		const base = `http://127.0.0.1:${(mint.server.address() as { port: number }).port}`;
		const problems: string[] = [];
		const page = await browser.newPage();
		page.on("console", message => {
			if (message.type() === "error" || /Content Security Policy/i.test(message.text())) problems.push(`console: ${message.text()}`);
		});
		page.on("pageerror", err => problems.push(`page error: ${err.message}`));
		page.on("request", request => {
			if (!request.url().startsWith(`${base}/`) && !request.url().startsWith("data:")) problems.push(`request to another origin: ${request.url()}`);
		});
		const answer = await page.goto(`${base}/api/docs`);
		expect(answer?.status()).toBe(200);

		const spec = openApiDocument(mint.config) as { info: { title: string }; paths: Record<string, object> };
		const operations = Object.values(spec.paths).reduce<number>((sum, item) => sum + Object.keys(item).length, 0);
		await page
			.locator(".opblock")
			.nth(operations - 1)
			.waitFor({ timeout: 15_000 });
		expect(await page.locator(".opblock").count()).toBe(operations);
		expect(await page.locator(".info .title").textContent()).toContain(spec.info.title);
		expect(await page.locator(".opblock-summary-path", { hasText: "/api/v1/transactions/transfer" }).count()).toBe(1);
		// An operation opens with its schema rendered from the document.
		await page.locator(".opblock-summary", { hasText: "/api/v1/auth/signup" }).click();
		await page.locator(".opblock.is-open .model-box, .opblock.is-open .body-param__example").first().waitFor();
		// "Try it out" calls this node from the page (connect-src 'self').
		const health = page.locator(".opblock", { has: page.locator(".opblock-summary-path", { hasText: /^\/api\/v1\/health$/ }) });
		await health.locator(".opblock-summary").click();
		await health.getByRole("button", { name: "Try it out" }).click();
		await health.getByRole("button", { name: "Execute" }).click();
		expect(await health.locator(".live-responses-table tr.response .response-col_status").first().textContent()).toBe("200");
		expect(await health.locator(".live-responses-table tr.response .microlight").first().textContent()).toContain('"status": "ok"');
		expect(problems).toEqual([]);
		await page.close();
	}, 60_000);
});
