/**
 * The `health` action every service answers (the gateway's /ready asks it,
 * and /api/v1/<service>/health as v1 had): it touches the service's own
 * database, so a service whose store is down is reported down.
 */
import { defineMixin } from "../lib/define-service";
import type { Store } from "./db.mixin";

export function HealthMixin(serviceName: string) {
	return defineMixin<{ adapter: Store<{ _id: string }> }>()({
		actions: {
			health: {
				async handler() {
					await this.adapter.count({ query: { _id: "health-check" } });
					return { status: "ok", service: serviceName };
				},
			},
		},
	});
}
