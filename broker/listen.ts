/**
 * Opening the broker's listeners, with start-up failures turned into one
 * clear sentence (which listener, which address, why) instead of a bare
 * `listen EADDRINUSE`, so an operator or a supervisor log says what to fix.
 */
import type { Server as NetServer } from 'node:net';
import type { Server as HttpServer } from 'node:http';

/** A listener the broker could not open; `code` is the system error code. */
export class ListenError extends Error {
  constructor(
    readonly what: string,
    readonly host: string,
    readonly port: number,
    readonly code: string | undefined,
    detail: string,
  ) {
    super(`cannot listen for ${what} on ${host}:${port}: ${detail}`);
    this.name = 'ListenError';
  }
}

function reason(e: NodeJS.ErrnoException): string {
  switch (e.code) {
    case 'EADDRINUSE':
      return 'address already in use (another process holds this port)';
    case 'EADDRNOTAVAIL':
      return 'address not available (no interface of this machine has it)';
    case 'EACCES':
      return 'permission denied (ports below 1024 need privileges)';
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return 'host name not found';
    default:
      return e.message;
  }
}

/** Listens on host:port (0 = a free port); resolves with the bound port. */
export function listenOn(server: NetServer | HttpServer, port: number, host: string, what: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException) => reject(new ListenError(what, host, port, e.code, reason(e)));
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      const addr = server.address();
      resolve(typeof addr === 'object' && addr ? addr.port : port);
    });
  });
}

/** Closes a listening server (and, for HTTP, its keep-alive connections). */
export function closeServer(server: NetServer | HttpServer): Promise<void> {
  if ('closeAllConnections' in server) server.closeAllConnections();
  return new Promise((r) => server.close(() => r()));
}
