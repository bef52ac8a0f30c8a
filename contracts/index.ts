/**
 * Everything that crosses a service boundary: callers and users, money,
 * events. A service imports contracts, lib/ and its own folder, never
 * another service's files.
 */
export * from "./events";
export * from "./gateway";
export * from "./money";
export * from "./users";
