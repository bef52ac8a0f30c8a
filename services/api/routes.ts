/**
 * The gateway's HTTP surface: explicit aliases only (no autoAliases, no
 * $node or CRUD actions), and the few actions the gateway treats specially:
 * those that issue or end sessions, submit money, read the refresh cookie,
 * or answer with a status other than 200.
 */
import type { Config } from "../../lib/config";

export const V1_ALIASES = {
	"POST /auth/signup": "auth.signup",
	"POST /auth/login": "auth.login",
	"POST /auth/logout": "auth.logout",
	"POST /auth/logout-all": "auth.logoutAll",
	"POST /auth/refresh": "auth.refresh",
	"GET /auth/user": "auth.me",
	"POST /auth/verify-email": "auth.verifyEmail",
	"POST /auth/password/forgot": "auth.forgotPassword",
	"POST /auth/password/reset": "auth.resetPassword",
	"GET /auth/health": "auth.health",
	"GET /users": "auth.listUsers",
	"GET /users/search": "auth.searchUsers",
	"PUT /users/me": "auth.updateMe",
	"GET /users/:id": "auth.getUser",
	"GET /wallet/user": "wallet.mine",
	"GET /wallet/health": "wallet.health",
	"POST /transactions/topup": "transactions.topup",
	"POST /transactions/transfer": "transactions.transfer",
	"GET /transactions": "transactions.list",
	"GET /transactions/health": "transactions.health",
	"GET /transactions/:id": "transactions.get",
	"GET /transactions/:id/history": "transactions.history",
	"GET /notifications/health": "notifications.health",
	"GET /health": "api.health",
	"GET /ready": "api.ready",
};

/**
 * Served beside the aliases, not as one (api/wallet-stream.ts): a stream is
 * a connection, not an action call. GET only; like the aliases, in any case
 * and with an optional trailing slash.
 */
export const WALLET_STREAM_PATH = "/api/v1/wallet/stream";

export const ROOT_ALIASES = {
	"GET /.well-known/jwks.json": "auth.jwks",
	"GET /health": "api.health",
	"GET /ready": "api.ready",
};

/** Actions that answer with a new session: the gateway turns it into cookies and answers the user. */
export const SESSION_ISSUING: ReadonlySet<string> = new Set(["auth.signup", "auth.login", "auth.refresh"]);
/** Actions that end sessions: the gateway clears the cookies. */
export const SESSION_ENDING: ReadonlySet<string> = new Set(["auth.logout", "auth.logoutAll", "auth.resetPassword"]);
/** Actions that submit money movements: 201 final, 202 still running, 200 an idempotent replay. */
export const MONEY_SUBMITTING: ReadonlySet<string> = new Set(["transactions.topup", "transactions.transfer"]);
/** Actions that take the refresh token from its cookie rather than doing a silent refresh. */
export const USES_REFRESH_COOKIE: ReadonlySet<string> = new Set(["auth.refresh", "auth.logout"]);
/** Actions whose success is not a plain 200 (money submissions choose theirs per answer, in responses.ts). */
export const STATUS_BY_ACTION: Readonly<Record<string, number>> = { "auth.signup": 201, "auth.logout": 204, "auth.logoutAll": 204, "auth.forgotPassword": 202 };

/** Where a new user finds themselves (the Location of a 201 signup). */
export const SIGNUP_LOCATION = "/api/v1/auth/user";
/** Where a submitted transaction is read or polled. */
export const transactionLocation = (id: string) => `/api/v1/transactions/${id}`;

/** A web client served from another origin (ALLOWED_ORIGINS) may call with credentials; otherwise no CORS at all. */
export function corsOptions(config: Config) {
	if (!config.http.allowedOrigins.length) return undefined;
	return {
		origin: config.http.allowedOrigins,
		credentials: true,
		methods: ["GET", "POST", "PUT", "DELETE"],
		allowedHeaders: ["Content-Type", "Authorization", "Idempotency-Key", "X-Request-Id"],
		exposedHeaders: ["X-Request-Id", "Idempotent-Replayed", "Retry-After"],
		maxAge: 600,
	};
}
