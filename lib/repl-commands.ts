/**
 * The operator's REPL commands (`npm run repl`), on top of Moleculer's own
 * (`call`, `services`, `nodes`...). Each one is a thin wrapper over a
 * service action, so the same operations are callable from code and tests.
 */
import type { ServiceBroker } from "moleculer";
import type { TransactionView } from "../contracts/money";
import { formatMoney, parseMajorAmount } from "./money";

export interface ReplCommand {
	command: string;
	description: string;
	alias?: string[];
	action(broker: ServiceBroker, args: { options: Record<string, unknown>; [arg: string]: unknown }, helpers?: unknown): Promise<void>;
}

type Print = (line: string) => void;

/** What moleculer-repl hands a command: its positional arguments by name, and its options. */
type ReplArgs = { options: Record<string, unknown>; [arg: string]: unknown };

const json = (value: unknown) => JSON.stringify(value, null, 2);

interface InvariantTotals {
	balancesMinor: number;
	completedTopUpsMinor: number;
	[count: string]: number;
}

/**
 * The commands. Amounts show as people read them, with their currency
 * ("4.25 USD"): a transaction's own, else `currency`, the deployment's
 * CURRENCY. `print` is where the output goes (the terminal, or a test).
 */
export function mintReplCommands({ currency, print = line => console.log(line) }: { currency: string; print?: Print }): ReplCommand[] {
	const money = (minor: number) => formatMoney(minor, currency);
	/** A transaction's amount (major units on the wire) with its currency. */
	const transaction = <T extends TransactionView>(tx: T) => {
		const amount = parseMajorAmount(tx.amount, Number.MAX_SAFE_INTEGER);
		return amount.ok ? { ...tx, amount: formatMoney(amount.minor, tx.currency) } : tx;
	};
	const run = (body: (broker: ServiceBroker, args: ReplArgs) => Promise<unknown>) => async (broker: ServiceBroker, args: ReplArgs) => {
		try {
			print(json(await body(broker, args)));
		} catch (err) {
			print(`error: ${(err as Error).message}`);
		}
	};
	return [
		{
			command: "user <email>",
			description: "Find a user by email, with their wallet balance",
			action: run(async (broker, args) => {
				const user = await broker.call<{ id: string }, object>("auth.findByEmail", { email: args.email });
				const balanceMinor = await broker.call<number, object>("wallet.balanceOf", { userId: user.id });
				return { user, wallet: { balance: money(balanceMinor) } };
			}),
		},
		{
			command: "tx <id>",
			description: "Show a transaction and its recorded history",
			action: run(async (broker, args) => transaction(await broker.call<TransactionView, object>("transactions.inspect", { id: args.id }))),
		},
		{
			command: "redrive <id>",
			description: "Re-drive a transaction stuck past its lease",
			action: run(async (broker, args) => {
				const result = await broker.call<{ redriven: boolean; transaction: TransactionView }, object>("transactions.redrive", { id: args.id });
				return { ...result, transaction: transaction(result.transaction) };
			}),
		},
		{
			command: "sweep",
			description: "Re-drive every transaction stuck past its lease, now",
			action: run(broker => broker.call("transactions.sweep")),
		},
		{
			command: "invariants",
			description: "Check the ledger invariants (money conserved, no negative balance, each movement once...)",
			action: run(async broker => {
				const report = await broker.call<{ totals: InvariantTotals }>("wallet.checkInvariants");
				const { balancesMinor, completedTopUpsMinor, ...counts } = report.totals;
				return { ...report, totals: { balances: money(balancesMinor), completedTopUps: money(completedTopUpsMinor), ...counts } };
			}),
		},
		{
			command: "dead-letters",
			description: "List the emails that could not be delivered",
			action: run(broker => broker.call("notifications.deadLetters", {})),
		},
		{
			command: "replay <id>",
			description: "Send a dead-lettered email again (`replay all` for every one)",
			action: run((broker, args) => (args.id === "all" ? broker.call("notifications.replayAll") : broker.call("notifications.replay", { id: args.id }))),
		},
		{
			command: "rotate-keys",
			description: "Rotate the access-token signing keys (no session is logged out)",
			action: run(broker => broker.call("auth.rotateKeys")),
		},
	];
}
