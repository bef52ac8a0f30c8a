/**
 * Mint's business metrics, defined here once: what the wallet did (signups,
 * logins, transactions, money moved, emails) and what is waiting (stuck
 * transactions, the outbox, dead letters). Each is counted where it happens,
 * by the node that does it; Prometheus sums the nodes.
 *
 * Moleculer names metrics with dots and its Prometheus reporter writes them
 * with underscores: `mint.signups.total` is scraped as `mint_signups_total`.
 * Prometheus conventions: counters end in `_total`, a unit is in the name
 * (`_minor` for minor units of money), gauges are counts of what is there.
 *
 * Counters whose labels are known in advance start at 0 on the node that
 * counts them, so a rate over a fresh node is 0, not missing. Gauges stay
 * absent until first measured: absent means unknown, 0 means none.
 *
 * A count is made after the fact it counts is recorded; a node that dies in
 * between loses that count (never the fact): the metrics are for watching,
 * the stores are the record.
 *
 * Mint's other metrics are defined beside what they count:
 * `mint.cache.lookups.total` and `mint.cache.errors.total` (lib/cacher.ts),
 * `mint.http.unexpected.errors.total` (services/api/responses.ts),
 * `mint.mongo.connection.events.total` (mixins/db/mongo-adapter.ts), the
 * event loop's lag (lib/metrics-endpoint.ts). One operational metric is
 * defined here because both store adapters count it alike:
 * `mint.store.operations.total` (STORE_OPERATIONS, below).
 */
import type { ServiceBroker } from "moleculer";
import { TRANSACTION_STATUSES, TRANSACTION_TYPES, type TransactionStatus, type TransactionType } from "../contracts/money";

type Registry = ServiceBroker["metrics"];

interface MetricDefinition {
	type: "counter" | "gauge";
	name: string;
	labelNames?: readonly string[];
	description: string;
}

export const LOGIN_RESULTS = ["ok", "failed", "throttled"] as const;
/** ok: signed in; failed: wrong email or password (401); throttled: refused by the login guard before the check (429). */
export type LoginResult = (typeof LOGIN_RESULTS)[number];

/** How one attempt to send an email ended: sent, failed (will retry), dead (no retry left: a dead letter). */
export type EmailResult = "sent" | "failed" | "dead";

export const BUSINESS_METRICS = {
	signups: { type: "counter", name: "mint.signups.total", description: "Accounts created" },
	logins: {
		type: "counter",
		name: "mint.logins.total",
		labelNames: ["result"],
		description: "Login attempts by result: ok, failed (wrong email or password), throttled (refused by the login guard)",
	},
	transactions: {
		type: "counter",
		name: "mint.transactions.total",
		labelNames: ["type", "status"],
		description: "Transactions reaching each status, by type: every transaction counts once as Pending, once as Processing, once as Completed or Failed",
	},
	moneyMoved: {
		type: "counter",
		name: "mint.money.moved.minor.total",
		labelNames: ["type", "currency"],
		description: "Money moved by completed transactions, in minor units of the currency (cents)",
	},
	transactionsStuck: {
		type: "gauge",
		name: "mint.transactions.stuck",
		description: "Transactions still Pending or Processing longer than TX_STUCK_AFTER_MS after their last change, after the sweeper's last run",
	},
	outboxPending: {
		type: "gauge",
		name: "mint.outbox.pending",
		labelNames: ["service"],
		description: "Records whose events were not confirmed published within the relay's quiet time (the outbox relay's backlog)",
	},
	emails: { type: "counter", name: "mint.emails.total", labelNames: ["template", "result"], description: "Emails by template and result" },
	deadLetters: {
		type: "gauge",
		name: "mint.emails.dead.letters",
		description: "Emails left undelivered after every retry, waiting for an operator (REPL: notifications.deadLetters / replay)",
	},
} as const satisfies Record<string, MetricDefinition>;

/** Registers each definition once per broker (registering a name again would replace the metric and its values). */
function register(registry: Registry, ...definitions: MetricDefinition[]): void {
	for (const { type, labelNames, ...definition } of definitions) {
		if (registry.hasMetric(definition.name)) continue;
		const options = { ...definition, labelNames: labelNames ? [...labelNames] : undefined };
		// Two calls: Moleculer types register() once per metric type.
		if (type === "counter") registry.register({ type, ...options });
		else registry.register({ type, ...options });
	}
}

/** auth: signups and logins. */
export class AuthMetrics {
	constructor(private readonly registry: Registry) {
		const { signups, logins } = BUSINESS_METRICS;
		register(registry, signups, logins);
		registry.increment(signups.name, {}, 0);
		for (const result of LOGIN_RESULTS) registry.increment(logins.name, { result }, 0);
	}

	signedUp(): void {
		this.registry.increment(BUSINESS_METRICS.signups.name);
	}

	loggedIn(result: LoginResult): void {
		this.registry.increment(BUSINESS_METRICS.logins.name, { result });
	}
}

/** transactions: every recorded state change, the money completed transactions moved, and what waits. */
export class TransactionMetrics {
	constructor(
		private readonly registry: Registry,
		currency: string,
	) {
		const { transactions, moneyMoved, transactionsStuck, outboxPending } = BUSINESS_METRICS;
		register(registry, transactions, moneyMoved, transactionsStuck, outboxPending);
		for (const type of TRANSACTION_TYPES) {
			for (const status of TRANSACTION_STATUSES) registry.increment(transactions.name, { type, status }, 0);
			registry.increment(moneyMoved.name, { type, currency }, 0);
		}
	}

	/** A transaction reached `status` (counted once, by the writer that recorded the move). */
	recorded(tx: { type: TransactionType; amountMinor: number; currency: string }, status: TransactionStatus): void {
		this.registry.increment(BUSINESS_METRICS.transactions.name, { type: tx.type, status });
		if (status === "Completed") this.registry.increment(BUSINESS_METRICS.moneyMoved.name, { type: tx.type, currency: tx.currency }, tx.amountMinor);
	}

	stuck(count: number): void {
		this.registry.set(BUSINESS_METRICS.transactionsStuck.name, count);
	}

	outboxPending(count: number): void {
		this.registry.set(BUSINESS_METRICS.outboxPending.name, count, { service: "transactions" });
	}
}

/** notifications: every attempt to send an email, and the dead letters. */
export class EmailMetrics {
	constructor(private readonly registry: Registry) {
		register(registry, BUSINESS_METRICS.emails, BUSINESS_METRICS.deadLetters);
	}

	emailed(template: string, result: EmailResult): void {
		this.registry.increment(BUSINESS_METRICS.emails.name, { template, result });
	}

	deadLetters(count: number): void {
		this.registry.set(BUSINESS_METRICS.deadLetters.name, count);
	}
}

/** The metrics of each service, on its broker: `authMetrics(this.broker)` where the service builds its parts. */
export const authMetrics = (broker: Pick<ServiceBroker, "metrics">): AuthMetrics => new AuthMetrics(broker.metrics);
export const transactionMetrics = (broker: Pick<ServiceBroker, "metrics">, currency: string): TransactionMetrics =>
	new TransactionMetrics(broker.metrics, currency);
export const emailMetrics = (broker: Pick<ServiceBroker, "metrics">): EmailMetrics => new EmailMetrics(broker.metrics);

/**
 * The store adapters' (mixins/db/): every operation on a collection, counted
 * when it is asked for (failed ones too), on either backend. Operators read
 * the store's load per service and collection from it; `npm run bench`
 * divides it by the requests served.
 */
export const STORE_OPERATIONS = {
	type: "counter",
	name: "mint.store.operations.total",
	labelNames: ["service", "collection", "operation"],
	description:
		"Store operations by service, collection and operation (the adapter's method: find, findOne, insert, updateOne, updateById, removeMany...), on either backend",
} as const satisfies MetricDefinition;

/**
 * Counts one collection's operations on the broker's metrics; counts nothing
 * without a broker (scripts/data.ts opens stores without one).
 */
export function storeOperationCounter(broker: unknown, service: string, collection: string): (operation: string) => void {
	const registry = (broker as Partial<Pick<ServiceBroker, "metrics">> | null | undefined)?.metrics;
	if (!registry) return () => undefined;
	register(registry, STORE_OPERATIONS);
	return operation => registry.increment(STORE_OPERATIONS.name, { service, collection, operation });
}
