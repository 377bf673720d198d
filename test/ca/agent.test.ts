/**
 * `mtls agent` against a real `mtls ca serve` (issue 15): it keeps its certificate while the CA is down and says so
 * in its health, renews when the CA is back, and ends with the CA's code when an expired certificate cannot renew.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { TLSSocket } from 'node:tls';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { CertificateAuthority } from '../../src/ca/authority.js';
import { parseCsr } from '../../src/pki/csr.js';
import { exchange } from '../../src/io/http-exchange.js';
import { exportPrivateKey } from '../../src/pki/keys.js';
import { freePort, listen, until } from '../helpers/endpoints.js';
import { api, csr, enroll, startCa, token } from '../helpers/ca-service.js';
import { BIN, mtlsAsync, tempDir } from '../helpers/pki.js';
import { startProcess, startProxy, stopAll } from '../helpers/process.js';
import { loadCredentials } from '../../src/tls/credentials.js';
import { clientTlsOptions } from '../../src/tls/options.js';

after(stopAll);

/** `mtls agent` against the CA at `url`, trusting `root`, writing to `out`. */
const agentArgs = (url: string, root: string, out: string) => ['agent', '--ca-url', url, '--root', root, '--out', out];

describe('mtls agent: renewal before expiry, the CA down, the grace window', () => {
  it('keeps the old certificate while the CA is down, says so in its health, then renews when it is back', async () => {
    const ca = await startCa('Down');
    const dir = path.join(ca.dir, 'svc');
    const t = token(ca, ['svc', '--spiffe-id', 'spiffe://svc.example/svc', '--validity', '20s']);
    const healthPort = await freePort();
    const hookFile = path.join(ca.dir, 'hook.log');
    const agent = await startProcess(
      process.execPath,
      [
        BIN,
        ...agentArgs(ca.url, ca.rootFile, dir),
        '--token',
        t,
        '--health',
        `127.0.0.1:${healthPort}`,
        '--exec',
        `echo rotated >> ${hookFile}`,
      ],
      /"event":"enrolled"/,
    );
    const health = async () =>
      JSON.parse(
        (
          await exchange(new URL(`http://127.0.0.1:${healthPort}/healthz`), { timeoutMs: 3000, maxBytes: 4096 })
        ).body.toString(),
      ) as { status: string; serial: string };
    assert.equal((await health()).status, 'ok');
    const first = fs.readFileSync(path.join(dir, 'svc.crt'), 'utf8');
    ca.stop();
    // Renewal falls due at about 13 s; the CA is down, the certificate stays, and health says so.
    await until(() => /"event":"retry"/.test(agent.output()), 20_000, 'a retry while the CA is down');
    const h = await health();
    assert.equal(h.status, 'expiring');
    assert.equal(fs.readFileSync(path.join(dir, 'svc.crt'), 'utf8'), first, 'the working certificate is kept');
    await ca.restart();
    await until(() => /"event":"renewed"/.test(agent.output()), 15_000, 'the renewal once the CA is back');
    assert.notEqual(fs.readFileSync(path.join(dir, 'svc.crt'), 'utf8'), first);
    assert.equal((await health()).status, 'ok');
    await until(
      () => (fs.existsSync(hookFile) ? fs.readFileSync(hookFile, 'utf8') : '').split('\n').length >= 3,
      5000,
      'two hook runs',
    );
    agent.child.kill('SIGTERM');
    ca.stop();
  });

  it('an expired certificate outside the grace window makes the agent exit non-zero; inside it, the newest renews', async () => {
    const ca = await startCa('Grace', ['--renew-grace', '1h']);
    const authority = await CertificateAuthority.open(ca.home);
    const old = async (name: string) => {
      const i = await authority.issue({
        profile: 'spiffe',
        name,
        names: { spiffeId: `spiffe://svc.example/${name}` },
        validityMs: 60_000,
        now: new Date(Date.now() - 3 * 60_000),
      });
      const dir = path.join(ca.dir, name);
      fs.mkdirSync(dir);
      fs.writeFileSync(path.join(dir, `${name}.crt`), i.chainPem);
      fs.writeFileSync(path.join(dir, `${name}.key`), exportPrivateKey(i.privateKey!), { mode: 0o600 });
      return { dir, i };
    };
    try {
      const a = await old('lapsed');
      const r = await mtlsAsync([...agentArgs(ca.url, ca.rootFile, a.dir), '--name', 'lapsed', '--once']);
      assert.equal(r.status, 0, `inside the grace window the newest renews: ${r.stderr}`);
      // The expired one was superseded: presenting it again (a stolen copy) is refused.
      const again = await api(ca, '/v1/renew', {
        body: { csr: csr('lapsed').csr },
        as: { cert: a.i.chainPem, key: exportPrivateKey(a.i.privateKey!) },
      });
      assert.equal(again.json.error!.code, 'RENEWAL_REFUSED');
    } finally {
      await authority.close();
      ca.stop();
    }
    const strict = await startCa('Strict');
    const authority2 = await CertificateAuthority.open(strict.home);
    try {
      const i = await authority2.issue({
        profile: 'spiffe',
        name: 'late',
        names: { spiffeId: 'spiffe://svc.example/late' },
        validityMs: 60_000,
        now: new Date(Date.now() - 3 * 60_000),
      });
      const dir = path.join(strict.dir, 'late');
      fs.mkdirSync(dir);
      fs.writeFileSync(path.join(dir, 'late.crt'), i.chainPem);
      fs.writeFileSync(path.join(dir, 'late.key'), exportPrivateKey(i.privateKey!), { mode: 0o600 });
      const healthPort = await freePort();
      const r = await mtlsAsync([
        ...agentArgs(strict.url, strict.rootFile, dir),
        '--name',
        'late',
        '--health',
        `127.0.0.1:${healthPort}`,
      ]);
      assert.equal(r.status, 1, 'the loop ends instead of retrying for ever');
      assert.match(r.stdout, /"event":"refused","code":"CERT_EXPIRED".*"health":"expired"/);
      assert.match(r.stderr, /CERT_EXPIRED/);
      assert.equal(fs.readFileSync(path.join(dir, 'late.crt'), 'utf8'), i.chainPem, 'never deleted');
    } finally {
      await authority2.close();
      strict.stop();
    }
  });
});

describe('mtls agent against a hostile CA answer', () => {
  it('refuses a certificate that does not verify against --root, and writes nothing', async () => {
    const dir = tempDir('mtls-agent-hostile-');
    const trusted = await CertificateAuthority.init({ home: path.join(dir, 'a'), name: 'Trusted' });
    const other = await CertificateAuthority.init({ home: path.join(dir, 'b'), name: 'Other' });
    try {
      // A server under the trusted root that answers /v1/sign with a certificate for the agent's key, from another CA.
      const tlsCert = await trusted.issue({ profile: 'server', name: 'fake', names: { ip: ['127.0.0.1'] } });
      const server = https.createServer(
        { cert: tlsCert.chainPem, key: exportPrivateKey(tlsCert.privateKey!) },
        (req, res) => {
          const chunks: Buffer[] = [];
          req.on('data', (d: Buffer) => chunks.push(d));
          req.on('end', () => {
            const body = JSON.parse(Buffer.concat(chunks).toString()) as { csr: string };
            void other
              .issue({
                profile: 'spiffe',
                name: 'victim',
                names: { spiffeId: 'spiffe://x.example/victim' },
                publicKey: parseCsr(Buffer.from(body.csr)).publicKey,
              })
              .then((i) => {
                res.writeHead(201, { 'content-type': 'application/json' });
                res.end(JSON.stringify({ certificate: i.chainPem, ca: other.bundlePem }));
              });
          });
        },
      );
      const port = await listen(server);
      const root = path.join(dir, 'root.crt');
      fs.writeFileSync(root, trusted.bundlePem);
      const out = path.join(dir, 'out');
      const r = await mtlsAsync([
        ...agentArgs(`https://127.0.0.1:${port}`, root, out),
        '--token',
        'x.eyJzdWIiOiJ2aWN0aW0ifQ.y',
        '--once',
      ]);
      server.close();
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr, /does not verify against --root/);
      assert.deepEqual(fs.existsSync(out) ? fs.readdirSync(out) : [], []);
    } finally {
      await trusted.close();
      await other.close();
    }
  });
});

describe('mtls proxy server --ca-url --token', () => {
  it('serves with a certificate enrolled from the CA service and renews it in place with no failed request', async () => {
    const ca = await startCa('ProxyAgent');
    const t = token(ca, [
      'edge',
      '--profile',
      'server',
      '--dns',
      'localhost',
      '--ip',
      '127.0.0.1',
      '--validity',
      '15s',
    ]);
    const web = await enroll(ca, 'web');
    const backend = http.createServer((_req, res) => res.end('ok'));
    const backendPort = await listen(backend);
    const port = await freePort();
    const args = ['server', '--http', '--listen', `127.0.0.1:${port}`, '--target', `127.0.0.1:${backendPort}`];
    await startProxy([
      ...args,
      '--ca-url',
      ca.url,
      '--token',
      t,
      '--ca',
      ca.rootFile,
      '--allow',
      'spiffe://svc.example/web',
    ]);
    const creds = loadCredentials({ cert: web.cert, key: web.key, ca: ca.root });
    const serials = new Set<string>();
    const failures: string[] = [];
    const end = Date.now() + 25_000;
    while (Date.now() < end) {
      await new Promise<void>((resolve) => {
        const req = https.get(
          { ...clientTlsOptions(creds, ca.root), host: '127.0.0.1', port, path: '/', agent: false, timeout: 5000 },
          (res) => {
            serials.add((res.socket as TLSSocket).getPeerCertificate().serialNumber);
            res.resume();
            res.on('end', () => {
              if (res.statusCode !== 200) failures.push(`HTTP ${res.statusCode}`);
              resolve();
            });
          },
        );
        req.on('error', (err) => {
          failures.push(err.message);
          resolve();
        });
      });
      await new Promise((r) => setTimeout(r, 100));
    }
    backend.close();
    ca.stop();
    assert.deepEqual(failures.slice(0, 3), [], `${failures.length} requests failed`);
    assert.ok(serials.size >= 2, `the proxy's certificate was renewed ${serials.size - 1} times`);
  });
});
