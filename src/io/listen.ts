import type net from 'node:net';
import { MtlsError } from '../errors.js';
import { formatAddress, type Address } from './address.js';

/** Listens on a TCP address or a unix socket; a failure is one line naming `what`, the address and the cause. */
export function listenOn(server: net.Server, a: Address, what: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new MtlsError('IO', `${what} cannot listen on ${formatAddress(a)} (${err.code}); choose another address`)),
    );
    if ('path' in a) server.listen(a.path, resolve);
    else server.listen(a.port, a.host, resolve);
  });
}
