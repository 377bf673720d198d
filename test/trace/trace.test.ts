import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { serverTlsOptions } from '../../src/tls/options.js';
import { parseKeyLog, suiteOf, trafficKeys } from '../../src/tls13/key-schedule.js';
import { traceConnection } from '../../src/trace/connect.js';
import { keyBlock, TLS12_SUITES } from '../../src/tls12/prf.js';
import { freePort, testPki, until, type TestPki, credentialArgs } from '../helpers/endpoints.js';
import { BIN, latticeChain, mtls } from '../helpers/pki.js';
import { exportPrivateKey } from '../../src/pki/keys.js';
import { OID } from '../../src/pki/oid.js';
import { encodePem } from '../../src/pki/pem.js';
import net from 'node:net';
import { startProcess, stopAll } from '../helpers/process.js';
import { compilePolicy } from '../../src/identity/policy.js';
import { connectMtls } from '../../src/tls/client.js';
import { Capture } from '../../src/tls/capture.js';
import { createTraceServer, type ServerTraceReport } from '../../src/trace/listen.js';
import { close, listen } from '../helpers/endpoints.js';

let pki: TestPki;
before(async () => {
  pki = await testPki();
});
after(async () => {
  stopAll();
  await pki.ca.close();
});

/** openssl s_server that demands a client certificate and writes its own key log. */
async function sServer(extra: string[]): Promise<{ port: number; keylog: string }> {
  const port = await freePort();
  const keylog = path.join(pki.dir, `server-${port}.keylog`);
  await startProcess(
    'openssl',
    [
      's_server',
      '-accept',
      `127.0.0.1:${port}`,
      '-naccept',
      '1',
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
      '-keylogfile',
      keylog,
      ...extra,
    ],
    /ACCEPT/,
  );
  return { port, keylog };
}

describe('mtls trace against openssl s_server, each TLS 1.3 AEAD forced in turn', () => {
  for (const suite of ['TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256']) {
    it(`${suite}: every step is present and our keys equal those from the server's own key log`, async () => {
      const s = await sServer(['-tls1_3', '-ciphersuites', suite]);
      const report = await traceConnection({
        host: 'localhost',
        port: s.port,
        ca: pki.bundle,
        credentials: pki.creds('billing'),
      });
      assert.equal(report.ok, true, JSON.stringify(report.error));
      assert.equal(report.cipherSuite, suite);
      const titles = report.steps.map((x) => x.title);
      for (const t of [
        'ClientHello',
        'ServerHello, EncryptedExtensions',
        "The server's Certificate and CertificateVerify",
        'CertificateRequest: the server asks for a client certificate',
        'Our Certificate and CertificateVerify, both Finished',
        'Key exchange and key schedule (RFC 8446 7.1, 7.3)',
      ]) {
        assert.ok(titles.includes(t), `missing step ${t}: ${titles.join(' | ')}`);
      }
      const text = report.steps.flatMap((x) => x.lines).join('\n');
      assert.match(text, /CertificateVerify: ecdsa_secp256r1_sha256, signature valid/);
      assert.match(text, /our CertificateVerify: ecdsa_secp256r1_sha256, signature valid/);
      assert.match(text, /server Finished: verify_data matches/);
      assert.match(text, /client Finished: verify_data matches/);
      assert.match(text, /acceptable CAs: CN=Endpoint Test Root, O=Endpoint Test/);
      // Independent check: the server's key log (written by OpenSSL) gives the same secrets, hence the same keys.
      await until(
        () => fs.existsSync(s.keylog) && fs.readFileSync(s.keylog, 'utf8').includes('SERVER_TRAFFIC_SECRET_0'),
        5000,
        'the server key log',
      );
      const theirs = parseKeyLog(fs.readFileSync(s.keylog, 'utf8'));
      const random = report.view.clientHello!.random.toString('hex');
      const ts = suiteOf(report.view.serverHello!.cipherSuite);
      const pairs = [
        ['CLIENT_HANDSHAKE_TRAFFIC_SECRET', 'clientHandshake'],
        ['SERVER_HANDSHAKE_TRAFFIC_SECRET', 'serverHandshake'],
        ['CLIENT_TRAFFIC_SECRET_0', 'clientApplication'],
        ['SERVER_TRAFFIC_SECRET_0', 'serverApplication'],
      ] as const;
      for (const [label, name] of pairs) {
        const fromServer = trafficKeys(ts, theirs.get(label)!.get(random)!);
        assert.deepEqual(report.view.keys[name], fromServer, `${label} keys differ`);
      }
      // Secrets are masked unless asked for.
      assert.ok(!text.includes(report.view.keys.serverApplication!.key.toString('hex')));
    });
  }

  for (const cipher of [
    'ECDHE-ECDSA-AES128-GCM-SHA256',
    'ECDHE-ECDSA-AES256-GCM-SHA384',
    'ECDHE-ECDSA-CHACHA20-POLY1305',
  ]) {
    it(
      `TLS 1.2 ${cipher}: every step, the key block equals the one from the server's ` +
        `key log, both Finished checked`,
      async () => {
        const s = await sServer(['-tls1_2', '-cipher', cipher]);
        const report = await traceConnection({
          host: 'localhost',
          port: s.port,
          ca: pki.bundle,
          credentials: pki.creds('billing'),
        });
        assert.equal(report.ok, true, JSON.stringify(report.error));
        const text = report.steps.flatMap((x) => x.lines).join('\n');
        assert.match(text, /version: TLS 1\.2/);
        assert.match(text, /acceptable CAs: CN=Endpoint Test Root, O=Endpoint Test/);
        // s_server sends -cert and then -cert_chain (which repeats the leaf): the trace shows exactly what was sent.
        assert.match(text, /chain: 'server' <- .*'Endpoint Test Intermediate'/);
        assert.match(text, /client Finished: verify_data matches PRF/);
        assert.match(text, /server Finished: verify_data matches PRF/);
        await until(
          () => fs.existsSync(s.keylog) && fs.readFileSync(s.keylog, 'utf8').includes('CLIENT_RANDOM'),
          5000,
          'the server key log',
        );
        const theirMaster = parseKeyLog(fs.readFileSync(s.keylog, 'utf8'))
          .get('CLIENT_RANDOM')!
          .get(report.view.clientHello!.random.toString('hex'))!;
        const t = report.view.tls12!;
        assert.deepEqual(
          t.keys,
          keyBlock(
            TLS12_SUITES[report.view.serverHello!.cipherSuite]!,
            theirMaster,
            report.view.clientHello!.random,
            report.view.serverHello!.random,
          ),
        );
      },
    );
  }

  it('explains a rejection: the TLS 1.3 alert arrives encrypted and is decrypted with the key log', async () => {
    const s = await sServer(['-tls1_3', '-purpose', 'sslclient']);
    const report = await traceConnection({
      host: 'localhost',
      port: s.port,
      ca: pki.bundle,
      credentials: pki.creds('server'),
    });
    assert.equal(report.ok, false);
    const alert = report.steps.find((x) => x.title.startsWith('Alert from the server'));
    assert.equal(alert?.title, 'Alert from the server: unsupported_certificate');
    assert.match(alert!.lines[0]!, /decrypted with the key log/);
  });

  it('CLI: --json has the steps, --keylog writes a 0600 NSS key log, exit 3 when rejected', async () => {
    const s = await sServer(['-tls1_3']);
    const keylog = path.join(pki.dir, 'client.keylog');
    const r = mtls(['trace', `localhost:${s.port}`, ...credentialArgs(pki, 'billing'), '--json', '--keylog', keylog]);
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

describe('mtls trace through a HelloRetryRequest (s_server -groups P-256; we lead with an X25519 share)', () => {
  it(
    'shows the retry and the second ClientHello; Finished and CertificateVerify ' +
      'check out over the message_hash transcript',
    async () => {
      const s = await sServer(['-tls1_3', '-groups', 'P-256']);
      const report = await traceConnection({
        host: 'localhost',
        port: s.port,
        ca: pki.bundle,
        credentials: pki.creds('billing'),
      });
      assert.equal(report.ok, true, JSON.stringify(report.error));
      const titles = report.steps.map((x) => x.title);
      assert.deepEqual(titles.slice(0, 4), [
        'ClientHello',
        'HelloRetryRequest: the server wants a key share on another group',
        'ClientHello again, with a new key share',
        'ServerHello, EncryptedExtensions',
      ]);
      const text = report.steps.flatMap((x) => x.lines).join('\n');
      assert.match(text, /group asked for: secp256r1/);
      assert.match(text, /key share: secp256r1 \(a fresh ephemeral key\); same client random/);
      assert.match(text, /key exchange: secp256r1/);
      // These three are computed over the transcript that starts with message_hash(ClientHello1).
      assert.match(text, /^CertificateVerify: ecdsa_secp256r1_sha256, signature valid/m);
      assert.match(text, /server Finished: verify_data matches/);
      assert.match(text, /client Finished: verify_data matches/);
      await until(
        () => fs.existsSync(s.keylog) && fs.readFileSync(s.keylog, 'utf8').includes('SERVER_TRAFFIC_SECRET_0'),
        5000,
        'the server key log',
      );
      const theirs = parseKeyLog(fs.readFileSync(s.keylog, 'utf8'));
      const secret = theirs.get('SERVER_TRAFFIC_SECRET_0')!.get(report.view.clientHello!.random.toString('hex'))!;
      assert.deepEqual(
        report.view.keys.serverApplication,
        trafficKeys(suiteOf(report.view.serverHello!.cipherSuite), secret),
      );
    },
  );
});

describe(
  'mtls trace against an mtlskit (Node) server, TLS 1.2 and 1.3, each AEAD ' + 'forced; and s_server without -Verify',
  () => {
    const cases: [string, 'TLSv1.2' | 'TLSv1.3'][] = [
      ['TLS_AES_128_GCM_SHA256', 'TLSv1.3'],
      ['TLS_AES_256_GCM_SHA384', 'TLSv1.3'],
      ['TLS_CHACHA20_POLY1305_SHA256', 'TLSv1.3'],
      ['ECDHE-ECDSA-AES128-GCM-SHA256', 'TLSv1.2'],
      ['ECDHE-ECDSA-AES256-GCM-SHA384', 'TLSv1.2'],
      ['ECDHE-ECDSA-CHACHA20-POLY1305', 'TLSv1.2'],
    ];
    for (const [suite, version] of cases) {
      it(`${version} ${suite}: our keys equal those from the server's own keylog event`, async () => {
        const serverLog: string[] = [];
        const server = tls.createServer(
          {
            ...serverTlsOptions(pki.creds('server')),
            minVersion: version,
            maxVersion: version,
            ...(version === 'TLSv1.3' ? { ciphersuites: suite } : { ciphers: suite }),
          },
          (s) => s.end('hi\n'),
        );
        server.on('keylog', (line: Buffer) => serverLog.push(line.toString('latin1')));
        const port = await listen(server);
        try {
          const report = await traceConnection({
            host: 'localhost',
            port,
            ca: pki.bundle,
            credentials: pki.creds('billing'),
          });
          assert.equal(report.ok, true, JSON.stringify(report.error));
          assert.equal(report.protocol, version);
          const text = report.steps.flatMap((x) => x.lines).join('\n');
          assert.match(text, /client Finished: verify_data matches/);
          assert.match(text, /server Finished: verify_data matches/);
          assert.match(text, /first application data from the server, decrypted: "hi\\n"/);
          const theirs = parseKeyLog(serverLog.join(''));
          const random = report.view.clientHello!.random.toString('hex');
          if (version === 'TLSv1.3') {
            const secret = theirs.get('CLIENT_TRAFFIC_SECRET_0')!.get(random)!;
            assert.deepEqual(
              report.view.keys.clientApplication,
              trafficKeys(suiteOf(report.view.serverHello!.cipherSuite), secret),
            );
          } else {
            const master = theirs.get('CLIENT_RANDOM')!.get(random)!;
            const t = TLS12_SUITES[report.view.serverHello!.cipherSuite]!;
            assert.deepEqual(
              report.view.tls12!.keys,
              keyBlock(t, master, report.view.clientHello!.random, report.view.serverHello!.random),
            );
          }
        } finally {
          await close(server);
        }
      });
    }

    it('s_server without -Verify: the trace says no client certificate was asked for, and none was sent', async () => {
      const port = await freePort();
      await startProcess(
        'openssl',
        [
          's_server',
          '-accept',
          `127.0.0.1:${port}`,
          '-naccept',
          '1',
          '-cert',
          pki.file('server.crt'),
          '-cert_chain',
          pki.file('server.crt'),
          '-key',
          pki.file('server.key'),
        ],
        /ACCEPT/,
      );
      const report = await traceConnection({
        host: 'localhost',
        port,
        ca: pki.bundle,
        credentials: pki.creds('billing'),
      });
      assert.equal(report.ok, true, JSON.stringify(report.error));
      const req = report.steps.find((x) => x.title === 'CertificateRequest')!;
      assert.deepEqual(req.lines, ['none: the server did not ask for a client certificate']);
      assert.doesNotMatch(report.steps.flatMap((x) => x.lines).join('\n'), /our Certificate:/);
    });
  },
);

describe('mtls trace --listen: handshakes that arrive at a server', () => {
  async function traced(
    allow: string[],
    client: string,
  ): Promise<{ server: ServerTraceReport; clientCapture: Capture; error?: unknown }> {
    const reports: ServerTraceReport[] = [];
    const server = createTraceServer({ credentials: pki.creds('server'), policy: compilePolicy({ allow }) }, (r) =>
      reports.push(r),
    );
    const port = await listen(server);
    const clientCapture = new Capture();
    let error: unknown;
    try {
      const c = await connectMtls({
        host: '127.0.0.1',
        port,
        ca: pki.bundle,
        credentials: pki.creds(client),
        capture: clientCapture,
        confirmMs: 200,
      });
      await new Promise((r) => c.socket.once('data', r));
      c.socket.destroy();
    } catch (err) {
      error = err;
    }
    await until(() => reports.length === 1, 5000, 'the server trace');
    await close(server);
    return { server: reports[0]!, clientCapture, ...(error ? { error } : {}) };
  }

  it("tells the client's certificate, our verdict and the policy decision; its keys equal the client's", async () => {
    const { server, clientCapture, error } = await traced(['spiffe://test.example/ns/prod/sa/billing'], 'billing');
    assert.equal(error, undefined);
    assert.equal(server.ok, true);
    assert.equal(server.identity?.spiffeId?.uri, 'spiffe://test.example/ns/prod/sa/billing');
    const titles = server.steps.map((s) => s.title);
    assert.ok(titles.includes('Our (server) Certificate and CertificateVerify'), titles.join(' | '));
    const theirs = server.steps.find(
      (s) => s.title === "The client's Certificate and CertificateVerify, both Finished",
    )!;
    assert.match(theirs.lines.join('\n'), /the client's Certificate: 'billing' <- 'Endpoint Test Intermediate'/);
    assert.match(theirs.lines.join('\n'), /verdict: trusted, valid now, a client certificate/);
    assert.match(theirs.lines.join('\n'), /the client's CertificateVerify: ecdsa_secp256r1_sha256, signature valid/);
    assert.match(theirs.lines.join('\n'), /client Finished: verify_data matches/);
    assert.match(server.steps.at(-1)!.lines[0]!, /^ALLOW: /);
    // The server's key log and the client's are two independent sources: the same secrets, the same keys.
    const clientKeys = parseKeyLog(clientCapture.keylog.join(''));
    const serverKeys = parseKeyLog(server.keylog.join(''));
    assert.ok(clientKeys.size > 0);
    for (const [label, secret] of clientKeys) assert.deepEqual(serverKeys.get(label), secret, label);
    assert.ok(
      server.view.keys.clientApplication &&
        server.view.applicationData.some((a) => a.from === 'server' && /hello spiffe/.test(a.bytes.toString())),
    );
  });

  it('a denied client: the trace ends with the decision and the reason', async () => {
    const { server, error } = await traced(['spiffe://test.example/ns/prod/sa/web'], 'billing');
    assert.ok(error, 'the client was refused');
    assert.equal(server.ok, false);
    assert.equal(server.error?.code, 'PEER_NOT_ALLOWED');
    assert.match(server.steps.at(-1)!.lines[0]!, /^DENY: /);
  });

  it('CLI: --listen --count 1 traces a curl handshake as a sequence diagram, then exits 0', async () => {
    const port = await freePort();
    const child = spawn(
      process.execPath,
      [
        BIN,
        'trace',
        '--listen',
        `127.0.0.1:${port}`,
        '--count',
        '1',
        ...credentialArgs(pki),
        '--allow',
        'trust-domain:test.example',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    await until(() => /tracing mTLS handshakes/.test(err), 10_000, 'trace --listen');
    const exited = new Promise<number | null>((r) => child.on('exit', r));
    const curl = await new Promise<string>((resolve) => {
      const c = spawn('curl', [
        '-sS',
        '--max-time',
        '10',
        '--cacert',
        pki.file('ca.crt'),
        '--cert',
        pki.file('billing.crt'),
        '--key',
        pki.file('billing.key'),
        `https://localhost:${port}/`,
      ]);
      let body = '';
      c.stdout.on('data', (d) => (body += d));
      c.on('exit', () => resolve(body));
    });
    assert.match(curl, /hello spiffe:\/\/test\.example\/ns\/prod\/sa\/billing/);
    assert.equal(await exited, 0, err);
    assert.match(out, /^client\s+server \(us\)$/m);
    assert.match(out, /│── \d\. The client's Certificate and CertificateVerify, both Finished ─+▶│/);
    assert.match(out, /ALLOW: /);
    assert.doesNotMatch(out, /\x1b\[/, 'no color into a pipe');
  });

  it('CLI: --color always paints the diagram; --color never and a pipe do not', async () => {
    const s = await sServer(['-naccept', '1']);
    const colored = mtls(['trace', `localhost:${s.port}`, ...credentialArgs(pki, 'billing'), '--color', 'always']);
    assert.equal(colored.status, 0, colored.stdout + colored.stderr);
    assert.match(colored.stdout, /\x1b\[36m── 1\. ClientHello ─+▶\x1b\[0m/);
    // Coloured by the check's result (structured in the step), the whole line: not by matching words.
    assert.match(colored.stdout, /\x1b\[32mserver Finished: verify_data matches [^\x1b]*\x1b\[0m/);
    assert.match(colored.stdout, /\x1b\[32mverdict: trusted, valid now/);
    const bad = mtls(['trace', `localhost:${s.port}`, '--ca', pki.file('ca.crt'), '--color', 'sometimes']);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--color 'sometimes' must be auto, always or never/);
  });
});

describe('mtls trace --listen under hostile clients (issue 12)', () => {
  it(
    'a client that stalls mid-record is cut at the deadline; a chain built to ' +
      'explode path building does not hold up another client',
    async () => {
      const reports: ServerTraceReport[] = [];
      const server = createTraceServer(
        {
          credentials: pki.creds('server'),
          policy: compilePolicy({ allow: ['trust-domain:test.example'] }),
          handshakeTimeoutMs: 800,
        },
        (r) => reports.push(r),
      );
      const port = await listen(server);
      const t0 = Date.now();
      const stalled = await new Promise<number>((resolve) => {
        const c = net.connect(port, '127.0.0.1', () => c.write(Buffer.from('160301', 'hex')));
        c.on('error', () => undefined);
        c.on('close', () => resolve(Date.now() - t0));
      });
      assert.ok(stalled < 5000, `the stalled client was cut after ${stalled} ms`);
      // A client certificate sent with 56 decoy CAs sharing names and keys level by level (issue 12.3).
      const l = latticeChain(8, 7, [OID.clientAuth]);
      const hostile = new Promise<void>((resolve) => {
        const c = tls.connect({
          host: '127.0.0.1',
          port,
          ca: pki.bundle,
          cert: [l.leaf, ...l.intermediates].map((x) => encodePem('CERTIFICATE', x.der)).join(''),
          key: exportPrivateKey(l.leafKey),
          servername: 'localhost',
        });
        c.on('error', () => resolve());
        c.on('close', () => resolve());
      });
      const t1 = Date.now();
      const normal = await connectMtls({
        host: '127.0.0.1',
        port,
        ca: pki.bundle,
        credentials: pki.creds('billing'),
        confirmMs: 200,
      });
      await new Promise((r) => normal.socket.once('data', r));
      normal.socket.destroy();
      assert.ok(Date.now() - t1 < 5000, `the normal client took ${Date.now() - t1} ms`);
      await hostile;
      await until(() => reports.length === 3, 10_000, 'three traces');
      assert.ok(reports.some((r) => r.identity?.spiffeId?.uri === 'spiffe://test.example/ns/prod/sa/billing' && r.ok));
      await close(server);
    },
  );
});
