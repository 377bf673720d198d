/**
 * The floor of a proxy written on Node's TLS socket, for `bench/proxy.ts`: Node's own TLS server with the same
 * certificates and the same client-certificate verification, piping each connection to the backend with
 * `stream.pipe`. No identity, policy, metrics, limits or logs. Not a product: it tells mtlskit's own cost per
 * connection and per message apart from the cost of Node's TLS socket, which any Node proxy pays.
 *
 * node node-relay.js PORT BACKEND_PORT CERT KEY CA
 */
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';

const [port, backend, cert, key, ca] = process.argv.slice(2) as [string, string, string, string, string];
tls
  .createServer(
    {
      cert: fs.readFileSync(cert),
      key: fs.readFileSync(key),
      ca: fs.readFileSync(ca),
      requestCert: true,
      rejectUnauthorized: true,
      allowHalfOpen: true,
    },
    (s) => {
      const t = net.connect({ port: Number(backend), host: '127.0.0.1', allowHalfOpen: true });
      s.setNoDelay(true);
      t.setNoDelay(true);
      s.pipe(t).on('error', () => s.destroy());
      t.pipe(s).on('error', () => t.destroy());
    },
  )
  .listen(Number(port), '127.0.0.1', () => process.stdout.write('up\n'));
