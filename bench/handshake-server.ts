/**
 * A benchmark server process: `node handshake-server.js mtlskit|plain PORT CERT KEY CA`. Prints "ready" once
 * listening. `mtlskit`: createMtlsHttpsServer with a SPIFFE policy (identity parsed from DER, decision per
 * request). `plain`: Node's https with requestCert + rejectUnauthorized, nothing else.
 */
import fs from 'node:fs';
import https from 'node:https';
import { createMtlsHttpsServer } from '../src/adapters/http.js';
import { compilePolicy } from '../src/identity/policy.js';
import { loadCredentials } from '../src/tls/credentials.js';
import { identityOf } from '../src/identity/identity.js';
import { serverTlsOptions } from '../src/tls/options.js';

const [mode, port, cert, key, ca] = process.argv.slice(2) as [string, string, string, string, string];
const timed = { ns: 0, n: 0 };
const creds = () => loadCredentials({ certFile: cert, keyFile: key, caFile: ca });
// Diagnostic modes isolate where the server's time goes: our TLS options alone, then identity extraction.
const server =
  mode === 'options'
    ? https.createServer(serverTlsOptions(creds()), (_req, res) => res.end('ok'))
    : mode === 'identity'
      ? https.createServer(serverTlsOptions(creds()), (req, res) => {
          if (req.url === '/__stats')
            return res.end(JSON.stringify({ identityUs: timed.n ? timed.ns / timed.n / 1000 : 0, n: timed.n }));
          // Time what mtlskit adds per connection, in place: reading the certificate from the socket and parsing it.
          const t0 = process.hrtime.bigint();
          const id = identityOf(req);
          timed.ns += Number(process.hrtime.bigint() - t0);
          timed.n++;
          res.end(id?.spiffeId?.uri ?? 'none');
        })
      : mode === 'mtlskit'
        ? createMtlsHttpsServer(
            {
              credentials: loadCredentials({ certFile: cert, keyFile: key, caFile: ca }),
              policy: compilePolicy({ allow: ['spiffe://bench.example/ns/*/sa/client'] }),
            },
            (req, res) => res.end(req.mtls?.identity?.spiffeId?.uri ?? 'none'),
          )
        : https.createServer(
            {
              cert: fs.readFileSync(cert),
              key: fs.readFileSync(key),
              ca: fs.readFileSync(ca),
              requestCert: true,
              rejectUnauthorized: true,
            },
            (_req, res) => res.end('ok'),
          );
server.keepAliveTimeout = 1000;
server.listen(Number(port), '127.0.0.1', () => process.stdout.write('ready\n'));
process.on('SIGTERM', () => process.exit(0));
