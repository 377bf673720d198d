import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fetch } from 'undici';
import { mtlsUndiciAgent } from '../../src/adapters/agents.js';
import { freePort, testPki, until, type TestPki, credentialArgs } from '../helpers/endpoints.js';
import { BIN, mtls, tempDir } from '../helpers/pki.js';
import { peerMissing, startNginx, startProcess as start, stopAll } from '../helpers/process.js';

let pki: TestPki;

function curl(args: string[]) {
  const r = spawnSync('curl', ['-sS', '--max-time', '10', ...args], { encoding: 'utf8' });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

before(async () => {
  pki = await testPki();
});
after(async () => {
  stopAll();
  await pki.ca.close();
});

describe('mtls serve --http with curl', () => {
  let port: number;
  let serve: Awaited<ReturnType<typeof start>>;
  before(async () => {
    port = await freePort();
    serve = await start(
      process.execPath,
      [
        BIN,
        'serve',
        '--http',
        '--port',
        String(port),
        ...credentialArgs(pki),
        '--allow',
        'spiffe://test.example/ns/*/sa/billing',
      ],
      /listening on/,
    );
  });

  it('an allowed identity gets 200 and sees itself', () => {
    const r = curl([
      '--cert',
      pki.file('billing.crt'),
      '--key',
      pki.file('billing.key'),
      '--cacert',
      pki.file('ca.crt'),
      `https://localhost:${port}/whoami`,
    ]);
    assert.equal(r.status, 0, r.stderr);
    const body = JSON.parse(r.stdout);
    assert.equal(body.identity.spiffeId, 'spiffe://test.example/ns/prod/sa/billing');
    assert.match(body.decision, /allowed by rule/);
  });

  it('a denied identity gets 403 with the reason, and the server logs it', async () => {
    const r = curl([
      '-w',
      '\n%{http_code}',
      '--cert',
      pki.file('web.crt'),
      '--key',
      pki.file('web.key'),
      '--cacert',
      pki.file('ca.crt'),
      `https://localhost:${port}/whoami`,
    ]);
    const [body, code] = r.stdout.split('\n');
    assert.equal(code, '403');
    assert.match(JSON.parse(body!).reason, /spiffe:\/\/test\.example\/ns\/prod\/sa\/web matches no allow rule/);
    await until(
      () => /DENY spiffe:\/\/test\.example\/ns\/prod\/sa\/web/.test(serve.output()),
      3000,
      'the DENY log line',
    );
  });

  it('no client certificate fails the handshake', async () => {
    const r = curl(['--cacert', pki.file('ca.crt'), `https://localhost:${port}/whoami`]);
    assert.notEqual(r.status, 0);
    assert.doesNotMatch(r.stdout, /identity/);
    await until(() => /HANDSHAKE FAILED \[NO_CLIENT_CERT\]/.test(serve.output()), 3000, 'the NO_CLIENT_CERT log line');
  });

  it(
    'mtls connect to mtls serve (TLS mode): exit 0 when allowed, exit 3 when ' +
      'the policy denies or the EKU is wrong',
    async () => {
      // In --http mode the policy answers 403 per request; a plain TLS serve closes a denied connection.
      const tlsPort = await freePort();
      await start(
        process.execPath,
        [
          BIN,
          'serve',
          '--port',
          String(tlsPort),
          ...credentialArgs(pki),
          '--allow',
          'spiffe://test.example/ns/*/sa/billing',
        ],
        /listening on/,
      );
      const base = ['connect', `localhost:${tlsPort}`, '--ca', pki.file('ca.crt')];
      assert.equal(mtls([...base, '--cert', pki.file('billing.crt'), '--key', pki.file('billing.key')]).status, 0);
      const denied = mtls([...base, '--cert', pki.file('web.crt'), '--key', pki.file('web.key')]);
      assert.equal(denied.status, 3, denied.stdout);
      const wrongEku = mtls([...base, '--cert', pki.file('server.crt'), '--key', pki.file('server.key')]);
      assert.equal(wrongEku.status, 3, wrongEku.stdout);
      assert.match(wrongEku.stdout, /PEER_CLOSED_AFTER_OUR_CERT/);
    },
  );

  it('openssl s_client with a certificate is accepted; without one it is refused', () => {
    const ok = spawnSync(
      'openssl',
      [
        's_client',
        '-connect',
        `127.0.0.1:${port}`,
        '-servername',
        'localhost',
        '-CAfile',
        pki.file('ca.crt'),
        '-cert',
        pki.file('billing.crt'),
        '-cert_chain',
        pki.file('billing.crt'),
        '-key',
        pki.file('billing.key'),
        '-verify_return_error',
        '-quiet',
      ],
      { input: 'GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n', encoding: 'utf8', timeout: 10_000 },
    );
    assert.match(ok.stdout, /"spiffeId": "spiffe:\/\/test\.example\/ns\/prod\/sa\/billing"/);
    const none = spawnSync(
      'openssl',
      [
        's_client',
        '-connect',
        `127.0.0.1:${port}`,
        '-servername',
        'localhost',
        '-CAfile',
        pki.file('ca.crt'),
        '-brief',
        '-ign_eof',
      ],
      { input: 'GET / HTTP/1.0\r\n\r\n', encoding: 'utf8', timeout: 10_000 },
    );
    assert.match(none.stdout + none.stderr, /certificate required/);
  });
});

describe('defaults from the CA home', () => {
  it('serve issues itself a localhost certificate from the CA home; connect takes the CA bundle from it', async () => {
    const port = await freePort();
    const env = { MTLS_HOME: path.join(pki.dir, 'ca') };
    const s = await start(
      process.execPath,
      [BIN, 'serve', '--port', String(port), '--allow', 'any'],
      /listening on/,
      env,
    );
    assert.match(s.output(), /server 'mtls-serve'/);
    const r = mtls(
      ['connect', `localhost:${port}`, '--cert', pki.file('billing.crt'), '--key', pki.file('billing.key')],
      { env },
    );
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /server chain\s+verified: 'mtls-serve'/);
  });
});

describe('mtls connect against openssl s_server -Verify 1', () => {
  async function sServer(accepts = 1, extra: string[] = []) {
    const port = await freePort();
    const s = await start(
      'openssl',
      [
        's_server',
        ...extra,
        '-accept',
        `127.0.0.1:${port}`,
        '-naccept',
        String(accepts),
        '-cert',
        pki.file('server.crt'),
        '-cert_chain',
        pki.file('server.crt'),
        '-key',
        pki.file('server.key'),
        '-CAfile',
        pki.file('ca.crt'),
        '-Verify',
        '1',
        '-verify_return_error',
        '-purpose',
        'sslclient',
      ],
      /ACCEPT/,
    );
    return { port, s };
  }

  it('exit 0 with a client certificate, and the verdict line by line', async () => {
    const { port } = await sServer();
    const r = mtls(['connect', `localhost:${port}`, ...credentialArgs(pki, 'billing')]);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /server chain\s+verified: 'server' <- 'Endpoint Test Intermediate' <- 'Endpoint Test Root'/);
    assert.match(r.stdout, /our cert\s+'billing' sent and accepted/);
    assert.match(r.stdout, /key exchange X25519/);
    // Read from the encrypted TLS 1.3 CertificateRequest with our own decoder and key schedule.
    assert.match(
      r.stdout,
      /server asked\s+for a client certificate \(signature algorithms: ecdsa_secp256r1_sha256.*acceptable CAs: CN=Endpoint Test Root, O=Endpoint Test\)/,
    );
  });

  it('shows the TLS 1.2 CertificateRequest too', async () => {
    const { port } = await sServer(1, ['-tls1_2']);
    const r = mtls(['connect', `localhost:${port}`, ...credentialArgs(pki, 'billing')]);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /TLSv1\.2/);
    assert.match(
      r.stdout,
      /server asked\s+for a client certificate .*acceptable CAs: CN=Endpoint Test Root, O=Endpoint Test/,
    );
  });

  it('exit 3 when the server rejects our certificate (a server certificate is not a client certificate)', async () => {
    const { port } = await sServer();
    const r = mtls(['connect', `localhost:${port}`, ...credentialArgs(pki)]);
    assert.equal(r.status, 3, r.stdout + r.stderr);
    assert.match(r.stdout, /PEER_REJECTED_OUR_CERT|PEER_CLOSED_AFTER_OUR_CERT/);
    // TLS 1.3 sends the rejection alert encrypted; we decrypt it with the key log.
    assert.match(r.stdout, /server alert\s+unsupported_certificate \(decrypted\)/);
  });

  it('exit 3 without a certificate, exit 1 when the server is not trusted', async () => {
    const a = await sServer();
    const none = mtls(['connect', `localhost:${a.port}`, '--ca', pki.file('ca.crt')]);
    assert.equal(none.status, 3, none.stdout);
    assert.match(none.stdout, /PEER_REQUIRES_CERT/);
    const b = await sServer(2); // mtls connect reconnects once, unverified, to explain the chain
    const other = await testPki('other.example');
    const untrusted = mtls([
      'connect',
      `localhost:${b.port}`,
      '--cert',
      pki.file('billing.crt'),
      '--key',
      pki.file('billing.key'),
      '--ca',
      other.file('ca.crt'),
    ]);
    assert.equal(untrusted.status, 1, untrusted.stdout);
    assert.match(untrusted.stdout, /CERT_UNTRUSTED/);
    // Both test CAs are named 'Endpoint Test': the explanation must tell a same-named CA from the right one.
    assert.match(
      untrusted.stdout,
      /server chain\s+'Endpoint Test Intermediate' names 'Endpoint Test Root' as its issuer, but its key identifier differs .*different CA with the same name/,
    );
    await other.ca.close();
  });
});

describe('nginx', () => {
  it(
    "nginx as an mTLS client of our server (proxy_ssl_certificate): our server sees nginx's identity",
    { skip: peerMissing('nginx') },
    async () => {
      const backend = await freePort();
      await start(
        process.execPath,
        [BIN, 'serve', '--http', '--port', String(backend), ...credentialArgs(pki), '--allow', 'cn:nginx-proxy'],
        /listening on/,
      );
      await pki.issue({ profile: 'client', name: 'nginx-proxy', names: {} });
      const front = await freePort();
      const dir = tempDir('mtls-nginx-');
      await startNginx(
        dir,
        `server { listen 127.0.0.1:${front};
      location / { proxy_pass https://127.0.0.1:${backend}; proxy_ssl_certificate ${pki.file('nginx-proxy.crt')}; proxy_ssl_certificate_key ${pki.file('nginx-proxy.key')};
        proxy_ssl_trusted_certificate ${pki.file('ca.crt')}; proxy_ssl_verify on; proxy_ssl_name localhost; proxy_ssl_server_name on; } }`,
      );
      let r = curl([`http://127.0.0.1:${front}/`]);
      for (let i = 0; i < 20 && r.status !== 0; i++) {
        await new Promise((x) => setTimeout(x, 100));
        r = curl([`http://127.0.0.1:${front}/`]);
      }
      assert.equal(r.status, 0, r.stderr);
      const body = JSON.parse(r.stdout);
      assert.equal(body.identity.subject, 'CN=nginx-proxy, O=Endpoint Test');
    },
  );

  it(
    'nginx as an mTLS server (ssl_verify_client on) accepts our clients and refuses a server certificate',
    { skip: peerMissing('nginx') },
    async () => {
      const port = await freePort();
      const dir = tempDir('mtls-nginx-');
      await startNginx(
        dir,
        `server { listen 127.0.0.1:${port} ssl; ssl_certificate ${pki.file('server.crt')}; ssl_certificate_key ${pki.file('server.key')};
      ssl_client_certificate ${pki.file('ca.crt')}; ssl_verify_client on; ssl_verify_depth 3; return 200 "ok $ssl_client_s_dn\\n"; }`,
      );
      let ok = mtls(['connect', `localhost:${port}`, ...credentialArgs(pki, 'billing')]);
      for (let i = 0; i < 20 && ok.status !== 0; i++) {
        await new Promise((x) => setTimeout(x, 100));
        ok = mtls(['connect', `localhost:${port}`, ...credentialArgs(pki, 'billing')]);
      }
      assert.equal(ok.status, 0, ok.stdout + ok.stderr);
      const dispatcher = mtlsUndiciAgent({ credentials: pki.creds('billing'), ca: pki.bundle });
      const res = await fetch(`https://localhost:${port}/`, { dispatcher });
      assert.equal(res.status, 200);
      assert.match(await res.text(), /^ok CN=billing,O=Endpoint Test/);
      await dispatcher.close();
      // nginx answers 400 ("The SSL certificate error") to a client certificate with the wrong purpose.
      const wrong = mtlsUndiciAgent({ credentials: pki.creds('server'), ca: pki.bundle });
      const bad = await fetch(`https://localhost:${port}/`, { dispatcher: wrong });
      assert.equal(bad.status, 400);
      await wrong.close();
    },
  );
});
