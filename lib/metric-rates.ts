/**
 * Keeps V8 from recompiling Moleculer's metric functions forever.
 *
 * Moleculer's counters and gauges that keep a rate (`rate: true`: requests,
 * events, transporter packets, retries, timeouts...) give each labelled
 * value a MetricRate whose `rate` field starts at 0, a small integer, and
 * whose tick, every 5 s, stores a fraction there. V8 then moves the ticked
 * objects to a new hidden class (the field holds doubles) and deprecates the
 * old one, which the metric functions every request runs (Gauge and Counter
 * `set`, `increment`, `decrement`, Histogram `observe`) have already met and
 * keep in their type feedback. From the first tick on, the optimizing
 * compiler throws each compiled result of those functions away ("Maps became
 * deprecated during optimization", `node --trace-opt`) and starts again,
 * without end. Measured on the embedded node under GET /wallet/user: about
 * 1.5 cores burnt by V8's compiler threads, and 2.5 times fewer requests
 * served (on two cores the load generator starves too). A broker with one
 * action reproduces it (Moleculer 0.15.2, Node 22;
 * test/unit/metric-rates.test.ts).
 *
 * The cure: before any other, one rate is given a fraction, so the field is
 * a double from the first MetricRate on and no class is deprecated later.
 * Done once per load of Moleculer, before a broker is created
 * (lib/metrics-endpoint.ts's metricsOptions); the rate is kept, unticked,
 * so that V8 keeps its class. Reached through Moleculer's public exports.
 */
import { MetricTypes } from "moleculer";

/** What a gauge's labelled value holds, for the part read here (Moleculer's types leave it out). */
interface RatedItem {
	rate: { rate: number; timer: NodeJS.Timeout };
}

let kept: RatedItem["rate"] | undefined;

/** Gives MetricRate's `rate` field its double representation before any broker counts anything. Idempotent. */
export function settleMetricRateShape(): void {
	if (kept) return;
	const registry = { opts: {}, changed() {} };
	const gauge = new MetricTypes.Gauge({ type: "gauge", name: "mint.metric_rate_shape", rate: true }, registry as never);
	gauge.set(0);
	const item = gauge.get() as unknown as RatedItem;
	clearInterval(item.rate.timer);
	item.rate.rate = 0.5;
	item.rate.rate = 0;
	kept = item.rate;
}
