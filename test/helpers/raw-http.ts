/** Raw HTTP/1.1 over a socket, for requests no HTTP client will send (CR in a header, 20 kB of headers). */
import net from "node:net";

export interface RawResponse {
	status: number;
	headers: Record<string, string>;
	body: string;
}

/** Sends the bytes as they are and reads until the server closes the connection. */
export function rawRequest(port: number, bytes: string | Buffer, timeoutMs = 5000): Promise<RawResponse> {
	return new Promise((resolve, reject) => {
		const socket = net.connect(port, "127.0.0.1");
		const chunks: Buffer[] = [];
		socket.setTimeout(timeoutMs, () => socket.destroy(new Error("raw request timed out")));
		socket.on("connect", () => socket.write(bytes));
		socket.on("data", chunk => chunks.push(chunk));
		socket.on("error", reject);
		socket.on("close", () => {
			const text = Buffer.concat(chunks).toString("utf8");
			const split = text.indexOf("\r\n\r\n");
			const [statusLine, ...headerLines] = text.slice(0, split).split("\r\n");
			const headers = Object.fromEntries(
				headerLines.map(line => {
					const colon = line.indexOf(":");
					return [line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim()];
				}),
			);
			resolve({ status: Number(statusLine.split(" ")[1]), headers, body: text.slice(split + 4) });
		});
	});
}
