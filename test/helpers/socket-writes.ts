import type { Socket } from "node:net";

/** Counts the write calls a socket makes into the kernel from now on (a writev of many chunks is one); `stop` puts them back. */
export function countSocketWrites(socket: Socket): { count: () => number; reset: () => void; stop: () => void } {
	let writes = 0;
	const own = { write: socket._write, writev: socket._writev };
	socket._write = function (this: Socket, ...args: Parameters<Socket["_write"]>) {
		writes++;
		return own.write.apply(this, args);
	};
	if (own.writev) {
		const writev = own.writev;
		socket._writev = function (this: Socket, ...args: Parameters<NonNullable<Socket["_writev"]>>) {
			writes++;
			return writev.apply(this, args);
		};
	}
	return {
		count: () => writes,
		reset: () => {
			writes = 0;
		},
		stop: () => {
			socket._write = own.write;
			socket._writev = own.writev;
		},
	};
}
