/**
 * The plaintext backend behind the proxies in `bench/proxy.ts`, in its own process. The first byte of a
 * connection picks the mode: 'E' echoes everything (the 'E' too); 'S' swallows everything until the client's
 * half-close, then answers with the byte count.
 */
import net from 'node:net';

const port = Number(process.argv[2]);
net
  .createServer({ allowHalfOpen: true }, (s) => {
    s.setNoDelay(true);
    s.once('data', (first: Buffer) => {
      if (first[0] === 0x45) {
        s.write(first);
        s.pipe(s);
        return;
      }
      let n = first.length - 1;
      s.on('data', (d: Buffer) => {
        n += d.length;
      });
      s.on('end', () => s.end(`${n}\n`));
    });
    s.on('error', () => undefined);
  })
  .listen(port, '127.0.0.1', () => process.stdout.write('up\n'));
