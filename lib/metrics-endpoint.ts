/**
 * Where Prometheus reads a node's metrics (METRICS_PORT): Moleculer's own
 * Prometheus reporter, with four changes.
 *
 * - It listens on METRICS_HOST (default HOST), not on every interface: the
 *   reporter binds 0.0.0.0 unless given a host.
 * - It publishes nothing that identifies the machine. Moleculer's process
 *   metrics include the network interfaces' IP and MAC addresses
 *   (os.network.address, os.network.mac), the host name (os.hostname), the
 *   user's name, ids and home directory (os.user.*) and the command line
 *   (process.arguments): left out (HOST_IDENTIFYING). The node's id is a
 *   label of every series; set NODE_ID, or it is `<hostname>-<pid>`.
 * - Label names are snake_case as Prometheus names them: Moleculer's
 *   `nodeID`, `errorCode`, `affectedNodeID` are scraped as `node_id`,
 *   `error_code`, `affected_node_id`.
 * - It adds the event loop's lag, which Moleculer 0.15 does not measure:
 *   `mint_event_loop_lag_{p50,p99,max}_seconds`: how late the loop ran a
 *   10 ms timer, since the previous scrape. (Measured here rather than with
 *   monitorEventLoopDelay, whose reset drops the interval it falls in: a stall
 *   just after a scrape would go unseen.)
 *
 * A port that cannot be bound is logged and the node serves on without its
 * metrics (Prometheus then reports it down): a metrics clash never stops money.
 */
import { createHistogram, performance, type RecordableHistogram } from "node:perf_hooks";
import { type BrokerOptions, MetricReporters, type MetricRegistry } from "moleculer";
import type { Config } from "./config";
import { settleMetricRateShape } from "./metric-rates";

/** Moleculer's metrics that identify the host or its user (patterns as Moleculer matches them: `**` is any suffix). */
export const HOST_IDENTIFYING = ["os.network.**", "os.hostname", "os.user.**", "process.arguments"];

export const EVENT_LOOP_LAG = {
	p50: "mint.event.loop.lag.p50.seconds",
	p99: "mint.event.loop.lag.p99.seconds",
	max: "mint.event.loop.lag.max.seconds",
} as const;

/** nodeID -> node_id, errorCode -> error_code, affectedNodeID -> affected_node_id. */
export const snakeCase = (name: string): string =>
	name
		.replace(/([a-z0-9])([A-Z])/g, "$1_$2")
		.replace(/([A-Z])([A-Z][a-z])/g, "$1_$2")
		.toLowerCase();

/** How often the event loop's lag is sampled. */
const LAG_INTERVAL_MS = 10;

/** How late a timer of LAG_INTERVAL_MS runs, each time, in a histogram read and emptied at each scrape. */
class EventLoopLag {
	private readonly histogram: RecordableHistogram = createHistogram();
	private last = performance.now();
	private readonly timer = setInterval(() => {
		const now = performance.now();
		// In nanoseconds, at least 1 (what the histogram records).
		this.histogram.record(Math.max(1, Math.round((now - this.last - LAG_INTERVAL_MS) * 1e6)));
		this.last = now;
	}, LAG_INTERVAL_MS).unref();

	/** p50, p99 and max in seconds since the previous read, or nothing when no sample was taken. */
	read(): { p50: number; p99: number; max: number } | undefined {
		const { histogram } = this;
		if (histogram.count === 0) return undefined;
		const seconds = (ns: number) => (ns <= 1 ? 0 : ns / 1e9);
		const read = { p50: seconds(histogram.percentile(50)), p99: seconds(histogram.percentile(99)), max: seconds(histogram.max) };
		histogram.reset();
		return read;
	}

	stop(): void {
		clearInterval(this.timer);
	}
}

export class MintPrometheusReporter extends MetricReporters.Prometheus {
	private lag?: EventLoopLag;

	constructor(opts: { host: string; port: number }) {
		super({ host: opts.host, port: opts.port, path: "/metrics", excludes: HOST_IDENTIFYING, labelNameFormatter: snakeCase });
	}

	init(registry: MetricRegistry): void {
		super.init(registry);
		this.server.on("error", (err: Error) => {
			this.logger.error({ err, host: this.opts.host, port: this.opts.port }, "metrics endpoint cannot listen; this node serves on without it");
		});
		for (const [which, name] of Object.entries(EVENT_LOOP_LAG)) {
			registry.register({ type: "gauge", name, description: `Event loop delay since the previous scrape: ${which === "max" ? "the longest" : which}` });
		}
		this.lag = new EventLoopLag();
	}

	/** The lag since the previous scrape, then Moleculer's exposition of every metric. */
	generatePrometheusResponse(): string {
		const lag = this.lag?.read();
		if (lag) for (const which of ["p50", "p99", "max"] as const) this.registry.set(EVENT_LOOP_LAG[which], lag[which]);
		return super.generatePrometheusResponse();
	}

	stop(): Promise<void> {
		this.lag?.stop();
		return super.stop();
	}
}

/**
 * Metrics are always counted (business metrics, Moleculer's request and
 * circuit-breaker metrics); with METRICS_PORT they are served, and the
 * process and OS metrics are collected too (only then: nothing reads them otherwise).
 * Settles the shape of Moleculer's metric rates first (lib/metric-rates.ts says why).
 */
export function metricsOptions(config: Config): BrokerOptions["metrics"] {
	settleMetricRateShape();
	const served = config.metricsPort > 0;
	return {
		enabled: true,
		collectProcessMetrics: served,
		// Moleculer takes a reporter instance too, but types only the named ones.
		reporter: served ? [new MintPrometheusReporter({ host: config.metricsHost, port: config.metricsPort }) as unknown as { type: "Prometheus" }] : [],
	};
}
