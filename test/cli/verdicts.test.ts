/**
 * One classification everywhere (issue 16): connect, trace and doctor give the same verdict, and so the same exit
 * status, for a closed port, a server that accepts TCP and never answers, and one whose answer is no TLS record.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { createMtlsHttpsServer } from '../../src/adapters/http.js';
import { doctor, doctorExitCode } from '../../src/doctor/doctor.js';
import { compilePolicy } from '../../src/identity/policy.js';
import { close, credentialArgs, freePort, listen, testPki, until, type TestPki } from '../helpers/endpoints.js';
import { BIN, mtlsAsync } from '../helpers/pki.js';
import { startProcess, stopAll } from '../helpers/process.js';

let pki: TestPki;
const servers: net.Server[] = [];
before(async () => {
  pki = await testPki();
});
after(async () => {
  stopAll();
  await Promise.all(servers.map(close));
  await pki.ca.close();
});

async function tcpServer(onConnection: (s: net.Socket) => void): Promise<number> {
  const s = net.createServer((c) => {
    c.on('error', () => undefined);
    onConnection(c);
  });
  servers.push(s);
  return listen(s);
}

const cases: [string, () => Promise<number>, string, number][] = [
  ['nothing listens', () => freePort(), 'UNREACHABLE', 4],
  ['accepts TCP and never answers', () => tcpServer(() => undefined), 'NOT_TLS', 4],
  // A handshake record header (type 22) with a version no TLS has, then garbage.
  [
    'answers a bad record header',
    () => tcpServer((c) => c.once('data', () => c.end(Buffer.from('1609090005hellohello', 'hex')))),
    'NOT_TLS',
    4,
  ],
];

describe('one classification for connect, trace and doctor', () => {
  for (const [what, start, code, exit] of cases) {
    it(`a server that ${what}: ${code}, exit ${exit}`, async () => {
      const port = await start();
      const target = `127.0.0.1:${port}`;
      const connect = await mtlsAsync(['connect', target, '--ca', pki.file('ca.crt'), '--json']);
      assert.equal(JSON.parse(connect.stdout).code, code, connect.stdout);
      assert.equal(connect.status, exit);
      const trace = await mtlsAsync(['trace', target, '--ca', pki.file('ca.crt'), '--json']);
      assert.equal(JSON.parse(trace.stdout).error.code, code, trace.stdout);
      assert.equal(trace.status, exit);
      const report = await doctor({ host: '127.0.0.1', port, ca: pki.bundle, timeoutMs: 2000, http: false });
      assert.equal(report.diagnosis.code, code, JSON.stringify(report.diagnosis));
      assert.equal(doctorExitCode(report.diagnosis.code), exit);
    });
  }
});

describe('an HTTPS server that accepts our certificate and answers 403 (issue 16)', () => {
  it('doctor and connect --http say NOT_AUTHORIZED with the reason, exit 3; an allowed path is healthy', async () => {
    const policy = compilePolicy({
      allow: ['spiffe://test.example/ns/prod/sa/billing'],
      routes: [{ prefix: '/admin', allow: ['spiffe://test.example/ns/prod/sa/web'] }],
    });
    const server = createMtlsHttpsServer({ credentials: pki.creds('server'), policy }, (_req, res) => res.end('ok\n'));
    servers.push(server);
    const port = await listen(server);
    const me = { cert: pki.creds('billing').cert, key: pki.creds('billing').key };
    const target = `localhost:${port}`;
    const as = [...credentialArgs(pki, 'billing')];

    const ok = await mtlsAsync(['connect', target, ...as, '--http', '/']);
    assert.equal(ok.status, 0, ok.stdout + ok.stderr);
    assert.match(ok.stdout, /http +HTTP\/1\.1 200 OK/);
    const denied = await mtlsAsync(['connect', target, ...as, '--http', '/admin/users']);
    assert.equal(denied.status, 3, denied.stdout);
    assert.match(denied.stdout, /\[NOT_AUTHORIZED\] .*authorization refused us: HTTP\/1\.1 403 Forbidden \(.+\)/);

    // doctor asks for / : allowed there, so healthy; the same identity on a server whose / is refused is not.
    assert.equal((await doctor({ host: 'localhost', port, ca: pki.bundle, ...me })).diagnosis.code, 'OK');
    const strict = createMtlsHttpsServer(
      { credentials: pki.creds('server'), policy: compilePolicy({ allow: ['spiffe://test.example/ns/prod/sa/web'] }) },
      (_req, res) => res.end('ok\n'),
    );
    servers.push(strict);
    const strictPort = await listen(strict);
    const r = await doctor({ host: 'localhost', port: strictPort, ca: pki.bundle, ...me });
    assert.equal(r.diagnosis.code, 'NOT_AUTHORIZED', JSON.stringify(r.diagnosis));
    assert.match(r.diagnosis.cause, /TLS worked with our certificate.*403 Forbidden \(.*billing.*\)/);
    assert.equal(doctorExitCode(r.diagnosis.code), 3);
  });
});

describe('a server that accepts our certificate and then closes is not a rejection (issue 16)', () => {
  /** openssl s_server that verifies us, sends its tickets and, with nothing on stdin, closes with close_notify. */
  async function acceptsThenCloses(): Promise<number> {
    const port = await freePort();
    // -quiet with stdin at EOF, as the issue ran it; -quiet prints nothing, so readiness is read from the kernel's
    // listening sockets (a probe connection would use up the one accept).
    const args = ['s_server', '-accept', String(port), '-quiet', '-Verify', '1', '-naccept', '1'];
    args.push('-cert', pki.file('server.crt'), '-cert_chain', pki.file('server.crt'), '-key', pki.file('server.key'));
    const p = await startProcess('openssl', [...args, '-CAfile', pki.file('ca.crt')], /^/);
    p.child.stdin!.end();
    const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
    const listening = () =>
      ['/proc/net/tcp', '/proc/net/tcp6'].some((f) =>
        fs
          .readFileSync(f, 'utf8')
          .split('\n')
          .some((l) => l.trim().split(/\s+/)[1]?.endsWith(hex) && l.trim().split(/\s+/)[3] === '0A'),
      );
    await until(listening, 10_000, 'openssl s_server to listen');
    return port;
  }
  const me = () => credentialArgs(pki, 'billing');

  it('connect and trace say established (exit 0), doctor says OK; close_notify is read from the decrypted stream', async () => {
    const c = await mtlsAsync(['connect', `localhost:${await acceptsThenCloses()}`, ...me(), '--json']);
    assert.equal(c.status, 0, c.stdout + c.stderr);
    assert.equal(JSON.parse(c.stdout).closedByServer, true);
    const t = await mtlsAsync(['trace', `localhost:${await acceptsThenCloses()}`, ...me(), '--color', 'never']);
    assert.equal(t.status, 0, t.stdout);
    assert.match(t.stdout, /close_notify from the server: it accepted us and closed the connection/);
    const port = await acceptsThenCloses();
    const r = await doctor({
      host: 'localhost',
      port,
      ca: pki.bundle,
      cert: pki.creds('billing').cert,
      key: pki.creds('billing').key,
      http: false,
    });
    assert.equal(r.diagnosis.code, 'OK', JSON.stringify(r.diagnosis));
  });

  it('a denial by our proxy (native engine) or by mtls serve is still PEER_CLOSED_AFTER_OUR_CERT, exit 3: they deny without close_notify', async () => {
    const backend = await tcpServer((c) => c.end());
    for (const extra of [['proxy', 'server', '--target', `127.0.0.1:${backend}`], ['serve']]) {
      const port = await freePort();
      const listen = extra[0] === 'proxy' ? ['--listen', `127.0.0.1:${port}`] : ['--port', String(port)];
      await startProcess(
        process.execPath,
        [BIN, ...extra, ...listen, ...credentialArgs(pki), '--allow', 'spiffe://test.example/ns/prod/sa/web'],
        /listening/,
      );
      const c = await mtlsAsync(['connect', `localhost:${port}`, ...me(), '--json']);
      assert.equal(c.status, 3, `${extra[0]}: ${c.stdout}`);
      assert.equal(JSON.parse(c.stdout).code, 'PEER_CLOSED_AFTER_OUR_CERT');
    }
  });
});
