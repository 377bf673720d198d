/**
 * Issue 15, end to end: agents enroll a server and a client with tokens and keep renewing 20-second certificates;
 * `mtls serve --http` and `mtls proxy server` use the server's files, a client uses the client's, and traffic over
 * new connections goes on through several rotations on both sides with no failed request.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { after, it } from 'node:test';
import { MtlsError } from '../../src/errors.js';
import { loadCredentials, type Credentials } from '../../src/tls/credentials.js';
import { clientTlsOptions } from '../../src/tls/options.js';
import { startCa, token } from '../helpers/ca-service.js';
import { freePort, listen, until } from '../helpers/endpoints.js';
import { BIN } from '../helpers/pki.js';
import { proxyArgs, startProcess, startProxy, stopAll } from '../helpers/process.js';

after(stopAll);

it('servers, a proxy and a client rotate 20-second certificates under continuous traffic with no failed request', async () => {
  const ca = await startCa('Rotation');
  const agent = async (name: string, args: string[]) => {
    const dir = path.join(ca.dir, name);
    const t = token(ca, [name, ...args, '--validity', '20s']);
    const p = await startProcess(
      process.execPath,
      [BIN, 'agent', '--ca-url', ca.url, '--root', ca.rootFile, '--out', dir, '--token', t],
      /"event":"enrolled"/,
    );
    return { dir, output: p.output };
  };
  const api = await agent('api', ['--profile', 'server', '--dns', 'localhost', '--ip', '127.0.0.1']);
  const web = await agent('web', ['--spiffe-id', 'spiffe://svc.example/web']);
  const files = ['--cert', `${api.dir}/api.crt`, '--key', `${api.dir}/api.key`, '--ca', `${api.dir}/ca.crt`];
  const allow = ['--allow', 'spiffe://svc.example/web'];

  const servePort = await freePort();
  await startProcess(
    process.execPath,
    [BIN, 'serve', '--http', '--port', String(servePort), ...files, ...allow],
    /listening on/,
  );
  const backend = http.createServer((_req, res) => res.end('backend'));
  const backendPort = await listen(backend);
  const proxyPort = await freePort();
  const pem = { cert: `${api.dir}/api.crt`, key: `${api.dir}/api.key`, ca: `${api.dir}/ca.crt` };
  await startProxy(proxyArgs('server', proxyPort, `127.0.0.1:${backendPort}`, pem, '--http', ...allow));

  // The client reads its files before each request, as a reloading client would; a certificate read in the
  // moment between the agent's two renames (new certificate, old key) keeps the previous pair.
  let creds: Credentials | undefined;
  const current = () => {
    try {
      creds = loadCredentials({
        cert: fs.readFileSync(`${web.dir}/web.crt`),
        key: fs.readFileSync(`${web.dir}/web.key`),
        ca: fs.readFileSync(`${web.dir}/ca.crt`),
      });
    } catch (err) {
      if (!(err instanceof MtlsError && err.code === 'KEY_MISMATCH') || !creds) throw err;
    }
    return creds!;
  };
  const serverSerials = new Set<string>();
  const clientSerials = new Set<string>();
  const failures: string[] = [];
  let requests = 0;
  const get = (port: number) =>
    new Promise<void>((resolve) => {
      const c = current();
      clientSerials.add(c.leaf.serialHex);
      const req = https.get(
        { ...clientTlsOptions(c, c.ca), host: '127.0.0.1', port, path: '/', agent: false, timeout: 5000 },
        (res) => {
          const cert = (res.socket as import('node:tls').TLSSocket).getPeerCertificate();
          serverSerials.add(cert.serialNumber.toLowerCase());
          res.resume();
          res.on('end', () => {
            if (res.statusCode !== 200) failures.push(`port ${port}: HTTP ${res.statusCode}`);
            resolve();
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', (err) => {
        failures.push(`port ${port}: ${err.message}`);
        resolve();
      });
    });
  const end = Date.now() + 45_000;
  while (Date.now() < end) {
    await Promise.all([get(servePort), get(proxyPort)]);
    requests += 2;
    await new Promise((r) => setTimeout(r, 50));
  }
  backend.close();
  assert.deepEqual(
    failures.slice(0, 3),
    [],
    `${failures.length} of ${requests} requests failed; api agent: ${api.output()}`,
  );
  assert.ok(serverSerials.size >= 3, `the server certificate rotated ${serverSerials.size - 1} times`);
  assert.ok(clientSerials.size >= 3, `the client certificate rotated ${clientSerials.size - 1} times`);
  await until(() => (api.output().match(/"event":"renewed"/g) ?? []).length >= 2, 1000, 'renewals in the log');
  ca.stop();
});
