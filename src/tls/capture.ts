import { Duplex } from 'node:stream';
import net from 'node:net';

/** The raw bytes of one TLS connection, both ways, and the key log lines Node emitted for it. */
export class Capture {
  readonly client: Buffer[] = [];
  readonly server: Buffer[] = [];
  readonly keylog: string[] = [];
  /** Bytes kept both ways; past `limit` the connection is cut (a handshake is a few KiB; a peer decides the rest). */
  bytes = 0;
  truncated = false;

  constructor(readonly limit = 4 << 20) {}

  /** Keeps `chunk`; false once the limit is passed. */
  keep(list: Buffer[], chunk: Buffer): boolean {
    this.bytes += chunk.length;
    if (this.bytes > this.limit) {
      this.truncated = true;
      return false;
    }
    list.push(chunk);
    return true;
  }

  get clientBytes(): Buffer {
    return Buffer.concat(this.client);
  }

  get serverBytes(): Buffer {
    return Buffer.concat(this.server);
  }
}

/**
 * A byte tap around a TCP socket, to hand to `tls.connect({ socket })` or a TLS server: it copies every byte into
 * `capture` before passing it on, changing and delaying nothing; `we` is the side our TLS plays, so that what we write is
 * recorded as that side's bytes and what we read as the peer's.
 */
export function tap(tcp: net.Socket, capture: Capture, we: 'client' | 'server'): Duplex {
  const written = we === 'client' ? capture.client : capture.server;
  const read = we === 'client' ? capture.server : capture.client;
  const duplex = new Duplex({
    read() {
      tcp.resume();
    },
    write(chunk: Buffer, _enc, cb) {
      if (!capture.keep(written, Buffer.from(chunk))) return void tcp.destroy();
      tcp.write(chunk, cb);
    },
    final(cb) {
      tcp.end();
      cb();
    },
    destroy(err, cb) {
      tcp.destroy();
      cb(err);
    },
  });
  tcp.on('data', (d: Buffer) => {
    if (!capture.keep(read, d)) return void tcp.destroy();
    if (!duplex.push(d)) tcp.pause();
  });
  tcp.on('end', () => duplex.push(null));
  tcp.on('error', (err) => duplex.destroy(err));
  tcp.on('close', () => {
    if (!duplex.destroyed) duplex.push(null);
  });
  return duplex;
}
