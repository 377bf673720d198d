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
  const tcp = net.connect({ host, port });
  const tap = new Duplex({
    read() { tcp.resume(); },
    write(chunk: Buffer, _enc, cb) {
      capture.client.push(Buffer.from(chunk));
      tcp.write(chunk, cb);
    },
    final(cb) { tcp.end(); cb(); },
    destroy(err, cb) { tcp.destroy(); cb(err); },
  });
  tcp.on('data', (d: Buffer) => {
    capture.server.push(d);
    if (!tap.push(d)) tcp.pause();
  });
  tcp.on('end', () => tap.push(null));
  tcp.on('error', (err) => tap.destroy(err));
  tcp.on('close', () => { if (!tap.destroyed) tap.push(null); });
  return tap;
}
