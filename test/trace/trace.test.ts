import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseKeyLog, suiteOf, trafficKeys } from '../../src/tls13/key-schedule.js';
import { traceConnection } from '../../src/trace/trace.js';
import { keyBlock, TLS12_SUITES } from '../../src/tls12/prf.js';
import { freePort, testPki, until, type TestPki } from '../helpers/endpoints.js';
import { mtls } from '../helpers/pki.js';

let pki: TestPki;
const children: ChildProcess[] = [];
before(async () => { pki = await testPki(); });
after(async () => { for (const c of children) c.kill(); await pki.ca.close(); });

/** openssl s_server that demands a client certificate and writes its own key log. */
async function sServer(extra: string[]): Promise<{ port: number; keylog: string }> {
  const port = await freePort();
  const keylog = path.join(pki.dir, `server-${port}.keylog`);
  const child = spawn('openssl', ['s_server', '-accept', `127.0.0.1:${port}`, '-naccept', '1', '-cert', pki.file('server.crt'), '-cert_chain', pki.file('server.crt'),
    '-key', pki.file('server.key'), '-CAfile', pki.file('ca.crt'), '-Verify', '1', '-verify_return_error', '-keylogfile', keylog, ...extra], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  await until(() => out.includes('ACCEPT'), 10_000, 's_server');
  return { port, keylog };
}

describe('mtls trace against openssl s_server, each TLS 1.3 AEAD forced in turn', () => {
  for (const suite of ['TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256']) {
    it(`${suite}: every step is present and our keys equal those from the server's own key log`, async () => {
      const s = await sServer(['-tls1_3', '-ciphersuites', suite]);
      const report = await traceConnection({ host: 'localhost', port: s.port, ca: pki.bundle, credentials: pki.creds('billing') });
      assert.equal(report.ok, true, JSON.stringify(report.error));
      assert.equal(report.cipherSuite, suite);
      const titles = report.steps.map((x) => x.title);
      for (const t of ['ClientHello', 'ServerHello, EncryptedExtensions', "The server's Certificate and CertificateVerify", 'CertificateRequest: the server asks for a client certificate', 'Our Certificate and CertificateVerify, both Finished', 'Key exchange and key schedule (RFC 8446 7.1, 7.3)']) {
        assert.ok(titles.includes(t), `missing step ${t}: ${titles.join(' | ')}`);
      }
      const text = report.steps.flatMap((x) => x.lines).join('\n');
      assert.match(text, /CertificateVerify: ecdsa_secp256r1_sha256, signature valid/);
      assert.match(text, /our CertificateVerify: ecdsa_secp256r1_sha256, signature valid/);
      assert.match(text, /server Finished: verify_data matches/);
      assert.match(text, /client Finished: verify_data matches/);
      assert.match(text, /acceptable CAs: CN=Endpoint Test Root, O=Endpoint Test/);
      // Independent check: the server's key log (written by OpenSSL) gives the same secrets, hence the same keys.
      await until(() => fs.existsSync(s.keylog) && fs.readFileSync(s.keylog, 'utf8').includes('SERVER_TRAFFIC_SECRET_0'), 5000, 'the server key log');
      const theirs = parseKeyLog(fs.readFileSync(s.keylog, 'utf8'));
      const random = report.view.clientHello!.random.toString('hex');
      const ts = suiteOf(report.view.serverHello!.cipherSuite);
      const pairs = [['CLIENT_HANDSHAKE_TRAFFIC_SECRET', 'clientHandshake'], ['SERVER_HANDSHAKE_TRAFFIC_SECRET', 'serverHandshake'], ['CLIENT_TRAFFIC_SECRET_0', 'clientApplication'], ['SERVER_TRAFFIC_SECRET_0', 'serverApplication']] as const;
      for (const [label, name] of pairs) {
        const fromServer = trafficKeys(ts, theirs.get(label)!.get(random)!);
        assert.deepEqual(report.view.keys[name], fromServer, `${label} keys differ`);
      }
      // Secrets are masked unless asked for.
      assert.ok(!text.includes(report.view.keys.serverApplication!.key.toString('hex')));
    });
  }

  for (const cipher of ['ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-ECDSA-AES256-GCM-SHA384', 'ECDHE-ECDSA-CHACHA20-POLY1305']) {
    it(`TLS 1.2 ${cipher}: every step, the key block equals the one from the server's key log, both Finished checked`, async () => {
      const s = await sServer(['-tls1_2', '-cipher', cipher]);
      const report = await traceConnection({ host: 'localhost', port: s.port, ca: pki.bundle, credentials: pki.creds('billing') });
      assert.equal(report.ok, true, JSON.stringify(report.error));
      const text = report.steps.flatMap((x) => x.lines).join('\n');
      assert.match(text, /version: TLS 1\.2/);
      assert.match(text, /acceptable CAs: CN=Endpoint Test Root, O=Endpoint Test/);
      // s_server sends -cert and then -cert_chain (which repeats the leaf): the trace shows exactly what was sent.
      assert.match(text, /chain: 'server' <- .*'Endpoint Test Intermediate'/);
      assert.match(text, /client Finished: verify_data matches PRF/);
      assert.match(text, /server Finished: verify_data matches PRF/);
      await until(() => fs.existsSync(s.keylog) && fs.readFileSync(s.keylog, 'utf8').includes('CLIENT_RANDOM'), 5000, 'the server key log');
      const theirMaster = parseKeyLog(fs.readFileSync(s.keylog, 'utf8')).get('CLIENT_RANDOM')!.get(report.view.clientHello!.random.toString('hex'))!;
      const t = report.view.tls12!;
      assert.deepEqual(t.keys, keyBlock(TLS12_SUITES[report.view.serverHello!.cipherSuite]!, theirMaster, report.view.clientHello!.random, report.view.serverHello!.random));
    });
  }

  it('explains a rejection: the TLS 1.3 alert arrives encrypted and is decrypted with the key log', async () => {
    const s = await sServer(['-tls1_3', '-purpose', 'sslclient']);
    const report = await traceConnection({ host: 'localhost', port: s.port, ca: pki.bundle, credentials: pki.creds('server') });
    assert.equal(report.ok, false);
    const alert = report.steps.find((x) => x.title.startsWith('Alert from the server'));
    assert.equal(alert?.title, 'Alert from the server: unsupported_certificate');
    assert.match(alert!.lines[0]!, /decrypted with the key log/);
  });

  it('CLI: --json has the steps, --keylog writes a 0600 NSS key log, exit 3 when rejected', async () => {
    const s = await sServer(['-tls1_3']);
    const keylog = path.join(pki.dir, 'client.keylog');
    const r = mtls(['trace', `localhost:${s.port}`, '--cert', pki.file('billing.crt'), '--key', pki.file('billing.key'), '--ca', pki.file('ca.crt'), '--json', '--keylog', keylog]);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    const j = JSON.parse(r.stdout);
    assert.equal(j.ok, true);
    assert.ok(j.steps.length >= 6);
    assert.equal(fs.statSync(keylog).mode & 0o777, 0o600);
    assert.match(fs.readFileSync(keylog, 'utf8'), /^SERVER_HANDSHAKE_TRAFFIC_SECRET [0-9a-f]{64} [0-9a-f]{96}$/m);
    const s2 = await sServer(['-tls1_3']);
    const none = mtls(['trace', `localhost:${s2.port}`, '--ca', pki.file('ca.crt')]);
    assert.equal(none.status, 3, none.stdout);
    assert.match(none.stdout, /Alert from the server: certificate_required/);
  });
});
