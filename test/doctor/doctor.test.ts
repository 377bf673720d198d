import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { createMtlsHttpsServer } from '../../src/adapters/http.js';
import { doctor, type DiagnosisCode, type DoctorOptions, type DoctorReport } from '../../src/doctor/doctor.js';
import { compilePolicy } from '../../src/identity/policy.js';
import { OID } from '../../src/pki/oid.js';
import { createMtlsServer } from '../../src/tls/server.js';
import { close, freePort, listen, testPki, type TestPki } from '../helpers/endpoints.js';
import { keyPem, makeCert, mtls, opensslCrl, tempDir, writePem } from '../helpers/pki.js';
import { startProcess, stopAll } from '../helpers/process.js';

let pki: TestPki;
let other: TestPki;
let dir: string;
const servers: net.Server[] = [];
const MIN = 60e3;
const DAY = 86400e3;

before(async () => {
  [pki, other] = await Promise.all([testPki(), testPki('other.example')]);
  dir = tempDir('mtls-doctor-');
});
after(async () => {
  stopAll();
  await Promise.all(servers.map(close));
  await Promise.all([pki.ca.close(), other.ca.close()]);
});

async function serve(server: net.Server): Promise<number> {
  servers.push(server);
  return listen(server);
}

/** A plain Node TLS server (no client certificate asked) with the given chain and key. */
function tlsServer(cert: string, key: string, extra: tls.TlsOptions = {}) {
  return serve(tls.createServer({ cert, key, ...extra }, (s) => s.end('hello\n')));
}

/** openssl s_server demanding a client certificate from `caFile`, with extra flags. */
async function sServer(caFile: string, extra: string[] = []): Promise<number> {
  const port = await freePort();
  await startProcess(
    'openssl',
    [
      's_server',
      '-accept',
      `127.0.0.1:${port}`,
      '-cert',
      pki.file('server.crt'),
      '-cert_chain',
      pki.file('server.crt'),
      '-key',
      pki.file('server.key'),
      '-CAfile',
      caFile,
      '-Verify',
      '1',
      '-verify_return_error',
      ...extra,
    ],
    /ACCEPT/,
  );
  return port;
}

async function diagnose(port: number, o: Partial<DoctorOptions> = {}): Promise<DoctorReport> {
  return doctor({ host: '127.0.0.1', port, ca: pki.bundle, timeoutMs: 5000, ...o });
}

const as = (name: string, p: TestPki = pki) => ({
  cert: fs.readFileSync(p.file(`${name}.crt`)),
  key: fs.readFileSync(p.file(`${name}.key`)),
});

function expectCode(r: DoctorReport, code: DiagnosisCode, cause?: RegExp): void {
  assert.equal(r.diagnosis.code, code, JSON.stringify(r, null, 1));
  if (cause) assert.match(r.diagnosis.cause, cause);
  assert.ok(r.diagnosis.fix.length > 10, 'a fix is named');
  assert.equal(r.ok, code === 'OK');
}

describe('mtls doctor: each diagnosis from a real fault', () => {
  it('healthy: an mtlskit HTTPS server that allows us, clocks agree', async () => {
    const port = await serve(
      createMtlsHttpsServer(
        {
          credentials: pki.creds('server'),
          policy: compilePolicy({ allow: ['spiffe://test.example/ns/prod/sa/billing'] }),
        },
        (_req, res) => res.end('ok'),
      ),
    );
    const r = await diagnose(port, as('billing'));
    expectCode(r, 'OK', /mutual TLS works: TLSv1\.3/);
    assert.ok(r.checks.some((c) => /clock agrees/.test(c.name) && c.ok === true));
    assert.ok(r.checks.some((c) => c.name === 'HTTP response' && /200/.test(c.detail)));
  });

  it('KEY_MISMATCH: our key belongs to another certificate (found before connecting)', async () => {
    const r = await diagnose(await freePort(), { cert: as('billing').cert, key: as('web').key });
    expectCode(r, 'KEY_MISMATCH', /does not belong to our certificate 'billing'/);
    assert.ok(!r.checks.some((c) => c.name === 'TCP connection'), 'no connection attempted');
  });

  it('UNREACHABLE: nothing listens', async () => {
    expectCode(await diagnose(await freePort()), 'UNREACHABLE', /nothing listens/);
  });

  it('NOT_TLS: a plaintext HTTP server answers our ClientHello', async () => {
    const port = await serve(http.createServer((_q, s) => s.end()));
    expectCode(await diagnose(port), 'NOT_TLS', /HTTP\/1\.1 400/);
  });

  it('NOT_TLS: a server that closes without a TLS answer', async () => {
    const port = await serve(net.createServer((s) => s.once('data', () => s.destroy())));
    expectCode(await diagnose(port), 'NOT_TLS', /without a TLS answer/);
  });

  it('NO_COMMON_VERSION: a TLS 1.1-only server (openssl s_server -tls1_1)', async () => {
    const port = await freePort();
    await startProcess(
      'openssl',
      [
        's_server',
        '-accept',
        `127.0.0.1:${port}`,
        '-cert',
        pki.file('server.crt'),
        '-key',
        pki.file('server.key'),
        '-tls1_1',
        '-cipher',
        'DEFAULT@SECLEVEL=0',
      ],
      /ACCEPT/,
    );
    expectCode(await diagnose(port), 'NO_COMMON_VERSION', /only speaks TLSv1\.1/);
  });

  it('NO_COMMON_CIPHER: a TLS 1.2 server with CBC suites only', async () => {
    const port = await freePort();
    await startProcess(
      'openssl',
      [
        's_server',
        '-accept',
        `127.0.0.1:${port}`,
        '-cert',
        pki.file('server.crt'),
        '-key',
        pki.file('server.key'),
        '-tls1_2',
        '-cipher',
        'ECDHE-ECDSA-AES128-SHA',
      ],
      /ACCEPT/,
    );
    expectCode(await diagnose(port), 'NO_COMMON_CIPHER', /TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA/);
  });

  it('SERVER_CHAIN_INCOMPLETE: the server sends its leaf without the intermediate', async () => {
    const leafOnly = fs.readFileSync(pki.file('server.crt'), 'utf8').split(/(?<=-----END CERTIFICATE-----\n)/)[0]!;
    const port = await tlsServer(leafOnly, fs.readFileSync(pki.file('server.key'), 'utf8'));
    expectCode(
      await diagnose(port),
      'SERVER_CHAIN_INCOMPLETE',
      /sent only its own certificate, issued by 'CN=Endpoint Test Intermediate/,
    );
  });

  it('SERVER_UNTRUSTED: the server chain comes from a CA we do not trust', async () => {
    const port = await tlsServer(
      fs.readFileSync(other.file('server.crt'), 'utf8'),
      fs.readFileSync(other.file('server.key'), 'utf8'),
    );
    expectCode(await diagnose(port), 'SERVER_UNTRUSTED', /not in our trust bundle/);
  });

  it('SERVER_CERT_EXPIRED: the server certificate expired yesterday', async () => {
    const root = makeCert({ cn: 'Doctor Root', ca: true });
    const leaf = makeCert({
      cn: 'expired-server',
      issuer: root,
      eku: [OID.serverAuth],
      ip: ['127.0.0.1'],
      notBefore: new Date(Date.now() - 30 * DAY),
      notAfter: new Date(Date.now() - DAY),
    });
    const port = await tlsServer(leaf.pem, keyPem(leaf));
    expectCode(await diagnose(port, { ca: root.pem }), 'SERVER_CERT_EXPIRED', /expired/);
  });

  it('SERVER_WRONG_NAME: the certificate is not for the name we asked for', async () => {
    const port = await tlsServer(
      fs.readFileSync(pki.file('server.crt'), 'utf8'),
      fs.readFileSync(pki.file('server.key'), 'utf8'),
    );
    expectCode(await diagnose(port, { servername: 'api.example.net' }), 'SERVER_WRONG_NAME', /api\.example\.net/);
  });

  it('CLOCK_SKEW: the server certificate becomes valid in ten minutes (its CA clock runs ahead)', async () => {
    const root = makeCert({ cn: 'Fast Clock Root', ca: true });
    const leaf = makeCert({
      cn: 'future-server',
      issuer: root,
      eku: [OID.serverAuth],
      ip: ['127.0.0.1'],
      notBefore: new Date(Date.now() + 10 * MIN),
    });
    const port = await tlsServer(leaf.pem, keyPem(leaf));
    expectCode(await diagnose(port, { ca: root.pem }), 'CLOCK_SKEW', /becomes valid only in (9|10) min/);
  });

  it("CLOCK_SKEW: the server's HTTP Date is an hour ahead", async () => {
    const port = await serve(
      createMtlsHttpsServer(
        { credentials: pki.creds('server'), policy: compilePolicy({ allow: ['any'] }) },
        (_req, res) => {
          res.setHeader('Date', new Date(Date.now() + 3600e3).toUTCString());
          res.end();
        },
      ),
    );
    expectCode(await diagnose(port, as('billing')), 'CLOCK_SKEW', /3[56]\d\d s ahead of ours/);
  });

  it('CLIENT_CERT_REQUIRED: an mTLS server, and we gave no certificate (TLS 1.3 certificate_required)', async () => {
    const port = await serve(
      createMtlsServer({ credentials: pki.creds('server'), policy: compilePolicy({ allow: ['any'] }) }),
    );
    expectCode(await diagnose(port), 'CLIENT_CERT_REQUIRED', /requires a client certificate/);
  });

  it(
    'CLIENT_CERT_REQUIRED: openssl s_server -Verify over TLS 1.2 (handshake_failure ' + 'after CertificateRequest)',
    async () => {
      const port = await sServer(pki.file('ca.crt'), ['-tls1_2']);
      const r = await diagnose(port);
      expectCode(r, 'CLIENT_CERT_REQUIRED');
      assert.ok(r.checks.some((c) => c.name === 'the server asks for a client certificate' && c.ok === true));
    },
  );

  it('OUR_CA_UNKNOWN: the server does not trust our CA (alert unknown_ca)', async () => {
    const port = await sServer(pki.file('ca.crt'));
    expectCode(await diagnose(port, as('billing', other)), 'OUR_CA_UNKNOWN', /unknown_ca/);
  });

  it('OUR_CERT_EXPIRED: our client certificate has expired', async () => {
    const root = makeCert({ cn: 'Client Root', ca: true });
    const me = makeCert({
      cn: 'old-client',
      issuer: root,
      eku: [OID.clientAuth],
      notBefore: new Date(Date.now() - 30 * DAY),
      notAfter: new Date(Date.now() - DAY),
    });
    const port = await sServer(writePem(dir, 'client-root.pem', [root]));
    const r = await diagnose(port, { cert: me.pem, key: keyPem(me) });
    expectCode(r, 'OUR_CERT_EXPIRED', /'old-client' expired/);
    assert.ok(
      r.checks.some(
        (c) => c.name === 'the server accepts us' && c.ok === false && /certificate_expired/.test(c.detail),
      ),
      'the server said so too',
    );
  });

  it('OUR_CERT_REVOKED: the server checks a CRL that lists our certificate', async () => {
    const root = makeCert({ cn: 'Revoking Root', ca: true });
    const me = makeCert({ cn: 'revoked-client', issuer: root, eku: [OID.clientAuth] });
    const rootFile = writePem(dir, 'revoking-root.pem', [root]);
    const crl = opensslCrl(root, [me]);
    const port = await sServer(rootFile, ['-crl_check', '-CRL', crl]);
    expectCode(await diagnose(port, { cert: me.pem, key: keyPem(me) }), 'OUR_CERT_REVOKED', /revoked/);
  });

  it('OUR_CERT_NOT_CLIENT: we present a server certificate as a client certificate', async () => {
    const port = await sServer(pki.file('ca.crt'), ['-purpose', 'sslclient']);
    const r = await diagnose(port, as('server'));
    expectCode(r, 'OUR_CERT_NOT_CLIENT', /lacks clientAuth/);
    const eku = r.checks.find((c) => c.name === 'our certificate is for client authentication');
    assert.equal(eku?.detail, 'EKU is serverAuth without clientAuth', 'EKUs by name (issue 16), not 1.3.6.1.5.5.7.3.1');
    assert.ok(
      r.checks.some((c) => c.name === 'the server accepts us' && c.ok === false),
      'the server refused it',
    );
  });

  it('NOT_AUTHORIZED: an mtlskit server trusts our chain but its policy does not allow us', async () => {
    const port = await serve(
      createMtlsServer({
        credentials: pki.creds('server'),
        policy: compilePolicy({ allow: ['spiffe://test.example/ns/prod/sa/web'] }),
      }),
    );
    expectCode(await diagnose(port, as('billing')), 'NOT_AUTHORIZED', /policy does not allow our identity/);
  });
});

describe('mtls doctor CLI', () => {
  it(
    'names the cause and the fix, exits 3 when the server refuses us, 0 when ' + 'healthy, --json for programs',
    async () => {
      // The server runs in its own process: mtls() blocks this one.
      const port = await sServer(pki.file('ca.crt'), ['-naccept', '2']);
      const refused = mtls(['doctor', `localhost:${port}`, '--ca', pki.file('ca.crt'), '--no-http']);
      assert.equal(refused.status, 3, refused.stdout + refused.stderr);
      assert.match(refused.stdout, /✗ the server accepts us/);
      assert.match(refused.stdout, /diagnosis: CLIENT_CERT_REQUIRED: the server requires a client certificate/);
      assert.match(refused.stdout, /fix: pass --cert and --key/);
      assert.doesNotMatch(refused.stdout, /\x1b\[/, 'no color when not on a terminal');
      const ok = mtls([
        'doctor',
        `localhost:${port}`,
        '--ca',
        pki.file('ca.crt'),
        '--cert',
        pki.file('billing.crt'),
        '--key',
        pki.file('billing.key'),
        '--no-http',
        '--json',
      ]);
      assert.equal(ok.status, 0, ok.stdout + ok.stderr);
      const j = JSON.parse(ok.stdout) as DoctorReport;
      assert.equal(j.diagnosis.code, 'OK');
      assert.equal(j.protocol, 'TLSv1.3');
    },
  );

  it('exit 4 when unreachable; exit 2 with a one-line message for a missing file', async () => {
    const port = await freePort();
    assert.equal(mtls(['doctor', `127.0.0.1:${port}`, '--ca', pki.file('ca.crt')]).status, 4);
    const bad = mtls(['doctor', `127.0.0.1:${port}`, '--ca', path.join(dir, 'nope.pem')]);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /^mtls: error: CA bundle .*nope\.pem does not exist\n$/);
  });
});
