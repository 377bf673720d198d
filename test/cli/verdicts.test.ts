/**
 * One classification everywhere (issue 16): connect, trace and doctor give the same verdict, and so the same exit
 * status, for a closed port, a server that accepts TCP and never answers, and one whose answer is no TLS record.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { createMtlsHttpsServer } from '../../src/adapters/http.js';
import { doctor, doctorExitCode } from '../../src/doctor/doctor.js';
import { compilePolicy } from '../../src/identity/policy.js';
import { close, freePort, listen, testPki, type TestPki } from '../helpers/endpoints.js';
import { mtlsAsync } from '../helpers/pki.js';

let pki: TestPki;
const servers: net.Server[] = [];
before(async () => {
  pki = await testPki();
});
after(async () => {
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
    const as = ['--cert', pki.file('billing.crt'), '--key', pki.file('billing.key'), '--ca', pki.file('ca.crt')];

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
