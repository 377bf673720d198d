import { Duplex } from 'node:stream';
import net from 'node:net';

/** The raw bytes of one TLS connection, both ways, and the key log lines Node emitted for it. */
export class Capture {
  readonly client: Buffer[] = [];
  readonly server: Buffer[] = [];
  readonly keylog: string[] = [];

  get clientBytes(): Buffer {
    return Buffer.concat(this.client);
  }

  get serverBytes(): Buffer {
    return Buffer.concat(this.server);
  }
}

/**
 * A byte tap: a Duplex to hand to `tls.connect({ socket })`, backed by a real TCP connection, that copies every
 * byte into `capture` before passing it on. Nothing is changed or delayed beyond the copy.
 */
export function tappedSocket(host: string, port: number, capture: Capture): Duplex {
  return tap(net.connect({ host, port }), capture, 'client');
}

/**
 * The same tap around a socket we already have; `we` is the side our TLS plays, so that what we write is
 * recorded as that side's bytes and what we read as the peer's.
 */
export function tap(tcp: net.Socket, capture: Capture, we: 'client' | 'server'): Duplex {
  const written = we === 'client' ? capture.client : capture.server;
  const read = we === 'client' ? capture.server : capture.client;
  const duplex = new Duplex({
    read() { tcp.resume(); },
    write(chunk: Buffer, _enc, cb) {
      written.push(Buffer.from(chunk));
      tcp.write(chunk, cb);
    },
    final(cb) { tcp.end(); cb(); },
    destroy(err, cb) { tcp.destroy(); cb(err); },
  });
  tcp.on('data', (d: Buffer) => {
    read.push(d);
    if (!duplex.push(d)) tcp.pause();
  });
  tcp.on('end', () => duplex.push(null));
  tcp.on('error', (err) => duplex.destroy(err));
  tcp.on('close', () => { if (!duplex.destroyed) duplex.push(null); });
  return duplex;
}
