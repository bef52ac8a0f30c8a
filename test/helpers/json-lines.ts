/** The JSON lines of a process's output or a log file (pino's lines, nginx's JSON access log), parsed; other lines left out. */
export function jsonLines<T = any>(text: string): T[] {
	return text
		.split("\n")
		.filter(line => line.startsWith("{"))
		.map(line => JSON.parse(line) as T);
}
