// Tests build their config explicitly; nothing here reads the developer's environment.
process.env.LOG_LEVEL ??= "warn";
