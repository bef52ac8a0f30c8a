/** The operator's REPL commands against a whole Mint (in euros: no amount may come out in a hard-coded currency). */
import { mintReplCommands } from "../../lib/repl-commands";
import { newPerson, signup } from "../helpers/http";
import { startTestMint, type TestMint } from "../helpers/mint";
import { topUp, transfer } from "../helpers/money";

let mint: TestMint;
const printed: string[] = [];
let commands: ReturnType<typeof mintReplCommands>;
const run = async (name: string, args: Record<string, unknown> = {}) => {
	printed.length = 0;
	const command = commands.find(c => c.command.split(" ")[0] === name)!;
	await command.action(mint.broker, { options: {}, ...args });
	return printed.join("\n");
};

beforeAll(async () => {
	mint = await startTestMint({ CURRENCY: "EUR" });
	commands = mintReplCommands({ currency: mint.config.currency, print: line => void printed.push(line) });
});
afterAll(() => mint.stop());

it("user <email> shows the user and their balance with its currency", async () => {
	const session = await signup(mint, newPerson({ email: "Operator.Lookup@example.com" }));
	await topUp(mint, session, 4.25);
	const out = JSON.parse(await run("user", { email: "operator.lookup@EXAMPLE.com" }));
	expect(out).toEqual({ user: expect.objectContaining({ id: session.user.id, email: "operator.lookup@example.com" }), wallet: { balance: "4.25 EUR" } });
	expect(await run("user", { email: "nobody@example.com" })).toBe("error: User not found");
});

it("tx <id> and redrive show the amount with its currency, to the cent", async () => {
	const ada = await signup(mint);
	const grace = await signup(mint);
	await topUp(mint, ada, 1000.1);
	const sent = await transfer(mint, ada, 0.05, grace.user.id);
	expect(sent.status).toBe(201);
	const tx = JSON.parse(await run("tx", { id: sent.body.id }));
	expect(tx).toMatchObject({ id: sent.body.id, type: "Transfer", amount: "0.05 EUR", status: "Completed", unpublishedEvents: 0 });
	expect(JSON.parse(await run("redrive", { id: sent.body.id }))).toMatchObject({ redriven: false, transaction: { amount: "0.05 EUR", status: "Completed" } });
	expect(JSON.parse(await run("user", { email: ada.person.email })).wallet).toEqual({ balance: "1000.05 EUR" });
	expect(JSON.parse(await run("user", { email: grace.person.email })).wallet).toEqual({ balance: "0.05 EUR" });
});

it("invariants shows the money totals with the currency; sweep, dead-letters, replay and rotate-keys answer", async () => {
	const session = await signup(mint);
	const res = await topUp(mint, session, 1);
	const tx = JSON.parse(await run("tx", { id: res.body.id }));
	expect(tx).toMatchObject({ id: res.body.id, amount: "1.00 EUR", status: "Completed", unpublishedEvents: 0 });
	expect(tx.history.map((h: any) => h.status)).toEqual(["Pending", "Processing", "Completed"]);
	const invariants = JSON.parse(await run("invariants"));
	expect(invariants).toMatchObject({ ok: true, violations: [] });
	// Every top-up of this file so far: 4.25 + 1000.10 + 1.00.
	expect(invariants.totals).toMatchObject({ balances: "1005.35 EUR", completedTopUps: "1005.35 EUR", wallets: expect.any(Number) });
	expect(JSON.parse(await run("sweep"))).toEqual({ redriven: [] });
	expect(JSON.parse(await run("dead-letters"))).toEqual([]);
	expect(JSON.parse(await run("replay", { id: "all" }))).toEqual({ replayed: 0 });
	const rotated = JSON.parse(await run("rotate-keys"));
	expect(rotated.rotated).toBe(true);
	expect(rotated.published).toContain(rotated.currentKid);
});
