/**
 * The links in Mint's emails, followed in a real browser (Debian's
 * Chromium through playwright-core): the .eml a signup writes is opened,
 * its link clicked, the page's button verifies the address; a reset email's
 * link leads to a form that sets the new password, and the API then logs in
 * with it and not with the old one. Opening a link (as mail scanners do)
 * changes nothing.
 */
import fs from "node:fs";
import path from "node:path";
import { simpleParser } from "mailparser";
import { type Browser, type Page, chromium } from "playwright-core";
import { newPerson, signup, type Session } from "../helpers/http";
import { describeWithInfra } from "../helpers/infra";
import { startTestMint, waitFor, type TestMint } from "../helpers/mint";
import { freePort } from "../helpers/ports";

const CHROMIUM = "/usr/bin/chromium";
/** Without these flags Chromium floods this closed network (and cannot sandbox as root). */
const CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"];

interface Mail {
	to: string;
	subject: string;
	html: string;
	text: string;
}

const parsedMails = new Map<string, Mail>();

/** The .eml files Mint wrote to DATA_DIR/mail (no SMTP_URL), parsed (each once). */
async function mailbox(mint: TestMint): Promise<Mail[]> {
	const dir = path.join(mint.dataDir, "mail");
	if (!fs.existsSync(dir)) return [];
	for (const file of fs.readdirSync(dir).filter(f => f.endsWith(".eml") && !parsedMails.has(f))) {
		const parsed = await simpleParser(fs.readFileSync(path.join(dir, file)));
		const to = Array.isArray(parsed.to) ? parsed.to[0] : parsed.to;
		parsedMails.set(file, {
			to: to?.value[0]?.address ?? "",
			subject: parsed.subject ?? "",
			html: typeof parsed.html === "string" ? parsed.html : "",
			text: parsed.text ?? "",
		});
	}
	return [...parsedMails.values()];
}

const pathOf = (url: string) => {
	const { pathname, search } = new URL(url);
	return pathname + search;
};

const mailTo = (mint: TestMint, address: string, subject: RegExp) =>
	waitFor(async () => (await mailbox(mint)).find(m => m.to === address && subject.test(m.subject)), 10_000);

describeWithInfra("the links in emails, in a real browser", { name: `Chromium at ${CHROMIUM}`, available: fs.existsSync(CHROMIUM) }, () => {
	let mint: TestMint;
	let base: string;
	let browser: Browser;
	/** What the pages did that they should not: CSP refusals, console errors, requests to another origin, a Referer on an API call. */
	const misconduct: string[] = [];

	beforeAll(async () => {
		const port = await freePort();
		base = `http://127.0.0.1:${port}`;
		mint = await startTestMint({ PORT: String(port), PUBLIC_URL: base });
		browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
	}, 60_000);

	afterAll(async () => {
		await browser?.close();
		await mint?.stop();
	});

	afterEach(() => {
		const seen = misconduct.splice(0);
		expect(seen).toEqual([]);
	});

	async function newPage(): Promise<Page> {
		const page = await browser.newPage();
		page.on("console", message => {
			// The API's refusals the page handles (a used token's 400) are logged by Chromium as errors too.
			if (message.type() === "error" && !/^Failed to load resource: the server responded with a status of 400/.test(message.text())) {
				misconduct.push(`console: ${message.text()}`);
			}
		});
		page.on("pageerror", err => misconduct.push(`page error: ${err.message}`));
		page.on("request", request => {
			const url = request.url();
			if (url.startsWith("about:")) return;
			if (!url.startsWith(`${base}/`)) misconduct.push(`request to another origin: ${url}`);
			if (url.startsWith(`${base}/api/`) && request.headers().referer) misconduct.push(`Referer sent to ${url}: ${request.headers().referer}`);
		});
		return page;
	}

	/** Opens an email as its reader would and clicks its button-link: the browser lands on the page it points to. */
	async function followLink(page: Page, mail: Mail, linkText: string): Promise<string> {
		await page.setContent(mail.html);
		await Promise.all([page.waitForURL(url => url.href.startsWith(base)), page.getByRole("link", { name: linkText }).click()]);
		return page.url();
	}

	const currentUser = async (session: Session) => (await mint.http.get("/api/v1/auth/user").set("Cookie", session.cookie)).body;

	it("verify-email: opening the link changes nothing; the button verifies; the link then says it was used", async () => {
		const person = newPerson();
		const session = await signup(mint, person);
		const mail = await mailTo(mint, person.email, /Welcome to Mint/);
		const link = mail.text.match(/http:\/\/\S+\/verify-email\?token=[A-Za-z0-9_-]+/)?.[0];
		expect(link?.startsWith(`${base}/verify-email?token=`)).toBe(true);

		// A mail scanner's prefetch: the page, twice, and nothing happens.
		for (let i = 0; i < 2; i++) {
			const prefetch = await mint.http.get(pathOf(link!));
			expect([prefetch.status, prefetch.headers["content-type"]]).toEqual([200, "text/html; charset=utf-8"]);
		}
		const page = await newPage();
		const landed = await followLink(page, mail, "Verify my email");
		expect(landed).toBe(link);
		const button = page.getByRole("button", { name: "Verify my email" });
		await button.waitFor();
		expect((await currentUser(session)).emailVerifiedAt).toBeNull();

		await button.click();
		const status = page.locator("#status[data-state=success]");
		await status.waitFor();
		expect(await status.textContent()).toBe("Thank you: your email address is verified. You can close this page.");
		expect(await button.isVisible()).toBe(false);
		const verifiedAt = (await currentUser(session)).emailVerifiedAt;
		expect(Date.parse(verifiedAt)).toBeGreaterThan(Date.now() - 60_000);

		// The same link again: the token was used.
		await page.goto(link!);
		await page.getByRole("button", { name: "Verify my email" }).click();
		await page.locator("#status[data-state=error]").waitFor();
		expect(await page.locator("#status").textContent()).toBe("This verification link is invalid, has expired or was already used.");
		expect((await currentUser(session)).emailVerifiedAt).toBe(verifiedAt);
		await page.close();
	}, 60_000);

	it("reset-password: opening the link changes nothing; the form sets the new password; log in with it, not with the old one", async () => {
		const person = newPerson();
		const session = await signup(mint, person);
		expect((await mint.http.post("/api/v1/auth/password/forgot").send({ email: person.email })).status).toBe(202);
		const mail = await mailTo(mint, person.email, /Reset your Mint password/);
		const link = mail.text.match(/http:\/\/\S+\/reset-password\?token=[A-Za-z0-9_-]+/)?.[0];
		expect(link?.startsWith(`${base}/reset-password?token=`)).toBe(true);

		expect((await mint.http.get(pathOf(link!))).status).toBe(200);
		const page = await newPage();
		await followLink(page, mail, "Choose a new password");
		await page.getByLabel("New password", { exact: true }).waitFor();
		// Opening it changed nothing: the old password and the session still work.
		expect((await currentUser(session))?.id).toBe(session.user.id);

		const newPassword = "a much better passphrase";
		await page.getByLabel("New password", { exact: true }).fill(newPassword);
		await page.getByLabel("Confirm the new password").fill("something else entirely");
		await page.getByRole("button", { name: "Set my new password" }).click();
		expect(await page.locator("#status[data-state=error]").textContent()).toBe("The two passwords are not the same.");

		await page.getByLabel("Confirm the new password").fill(newPassword);
		await page.getByRole("button", { name: "Set my new password" }).click();
		const status = page.locator("#status[data-state=success]");
		await status.waitFor();
		expect(await status.textContent()).toBe("Your password has been changed and every device was signed out. Log in to Mint with your new password.");

		const login = (password: string) => mint.http.post("/api/v1/auth/login").send({ email: person.email, password });
		const withNew = await login(newPassword);
		expect([withNew.status, withNew.body.id]).toEqual([200, session.user.id]);
		expect((await login(person.password)).status).toBe(401);
		// Every session ended with the reset.
		expect(await currentUser(session)).toBeNull();

		// The link again: used.
		await page.goto(link!);
		await page.getByLabel("New password", { exact: true }).fill("yet another passphrase");
		await page.getByLabel("Confirm the new password").fill("yet another passphrase");
		await page.getByRole("button", { name: "Set my new password" }).click();
		await page.locator("#status[data-state=error]").waitFor();
		expect(await page.locator("#status").textContent()).toMatch(/^This reset link is invalid, has expired or was already used\./);
		expect((await login(newPassword)).status).toBe(200);
		await page.close();
	}, 60_000);

	it("a plain GET of either page with a valid token leaves the user unverified and the token working", async () => {
		const person = newPerson();
		const session = await signup(mint, person);
		const welcome = await mailTo(mint, person.email, /Welcome to Mint/);
		const verifyToken = welcome.text.match(/verify-email\?token=([A-Za-z0-9_-]+)/)![1];
		await mint.http.post("/api/v1/auth/password/forgot").send({ email: person.email });
		const reset = await mailTo(mint, person.email, /Reset your Mint password/);
		const resetToken = reset.text.match(/reset-password\?token=([A-Za-z0-9_-]+)/)![1];

		for (const url of [`${base}/verify-email?token=${verifyToken}`, `${base}/reset-password?token=${resetToken}`]) {
			expect((await mint.http.get(pathOf(url))).status).toBe(200);
			await mint.http.head(pathOf(url));
			const page = await newPage();
			await page.goto(url);
			await page.locator("form:not([hidden]) button").waitFor();
			await page.close();
		}
		expect((await currentUser(session)).emailVerifiedAt).toBeNull();
		expect((await mint.http.post("/api/v1/auth/verify-email").send({ token: verifyToken })).status).toBe(200);
		const password = "the token still works";
		expect((await mint.http.post("/api/v1/auth/password/reset").send({ token: resetToken, password, passwordConfirm: password })).status).toBe(200);
	}, 60_000);

	it("a link without a usable token says so at once and offers no button", async () => {
		const page = await newPage();
		await page.goto(`${base}/verify-email`);
		expect(await page.locator("#status[data-state=error]").textContent()).toBe(
			"This verification link is incomplete or invalid. Open the link from your email again.",
		);
		expect(await page.getByRole("button").count()).toBe(0);
		await page.goto(`${base}/reset-password?token=${encodeURIComponent("<img src=x>")}`);
		expect(await page.locator("#status[data-state=error]").textContent()).toMatch(/^This reset link is invalid/);
		expect(await page.locator("img").count()).toBe(0);
		// Well-formed but unknown: the API's 400 becomes the same message.
		await page.goto(`${base}/verify-email?token=${"A".repeat(43)}`);
		await page.getByRole("button", { name: "Verify my email" }).click();
		expect(await page.locator("#status[data-state=error]").textContent()).toBe("This verification link is invalid, has expired or was already used.");
		await page.close();
	}, 60_000);
});
