/**
 * The operator's REPL commands (`npm run repl`), on top of Moleculer's own
 * (`call`, `services`, `nodes`...). Each one is a thin wrapper over a
 * service action, so the same operations are callable from code and tests.
 */
import type { ServiceBroker } from "moleculer";

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

/** The commands; `print` is where their output goes (the terminal, or a test). */
export function mintReplCommands(print: Print = line => console.log(line)): ReplCommand[] {
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
				return { user, wallet: { balanceMinor } };
			}),
		},
		{
			command: "tx <id>",
			description: "Show a transaction and its recorded history",
			action: run((broker, args) => broker.call("transactions.inspect", { id: args.id })),
		},
		{
			command: "redrive <id>",
			description: "Re-drive a transaction stuck past its lease",
			action: run((broker, args) => broker.call("transactions.redrive", { id: args.id })),
		},
		{
			command: "sweep",
			description: "Re-drive every transaction stuck past its lease, now",
			action: run(broker => broker.call("transactions.sweep")),
		},
		{
			command: "invariants",
			description: "Check the ledger invariants (money conserved, no negative balance, each movement once...)",
			action: run(broker => broker.call("wallet.checkInvariants")),
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
