/** The operator's REPL commands against a whole Mint. */
import { mintReplCommands } from "../../lib/repl-commands";
import { newPerson, signup } from "../helpers/http";
import { startTestMint, type TestMint } from "../helpers/mint";
import { topUp } from "../helpers/money";

let mint: TestMint;
const printed: string[] = [];
const commands = mintReplCommands(line => void printed.push(line));
const run = async (name: string, args: Record<string, unknown> = {}) => {
	printed.length = 0;
	const command = commands.find(c => c.command.split(" ")[0] === name)!;
	await command.action(mint.broker, { options: {}, ...args });
	return printed.join("\n");
};

beforeAll(async () => {
	mint = await startTestMint();
});
afterAll(() => mint.stop());

it("user <email> shows the user and their balance", async () => {
	const session = await signup(mint, newPerson({ email: "Operator.Lookup@example.com" }));
	await topUp(mint, session, 4.25);
	const out = JSON.parse(await run("user", { email: "operator.lookup@EXAMPLE.com" }));
	expect(out).toEqual({ user: expect.objectContaining({ id: session.user.id, email: "operator.lookup@example.com" }), wallet: { balanceMinor: 425 } });
	expect(await run("user", { email: "nobody@example.com" })).toBe("error: User not found");
});

it("tx <id> shows the transaction with its history; invariants, sweep and rotate-keys answer", async () => {
	const session = await signup(mint);
	const res = await topUp(mint, session, 1);
	const tx = JSON.parse(await run("tx", { id: res.body.id }));
	expect(tx).toMatchObject({ id: res.body.id, status: "Completed", unpublishedEvents: 0 });
	expect(tx.history.map((h: any) => h.status)).toEqual(["Pending", "Processing", "Completed"]);
	expect(JSON.parse(await run("invariants"))).toMatchObject({ ok: true, violations: [] });
	expect(JSON.parse(await run("sweep"))).toEqual({ redriven: [] });
	expect(JSON.parse(await run("redrive", { id: res.body.id }))).toMatchObject({ redriven: false, transaction: { status: "Completed" } });
	expect(JSON.parse(await run("dead-letters"))).toEqual([]);
	expect(JSON.parse(await run("replay", { id: "all" }))).toEqual({ replayed: 0 });
	const rotated = JSON.parse(await run("rotate-keys"));
	expect(rotated.rotated).toBe(true);
	expect(rotated.published).toContain(rotated.currentKid);
});
