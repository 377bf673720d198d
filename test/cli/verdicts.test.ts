/**
 * One classification everywhere (issue 16): connect, trace and doctor give the same verdict, and so the same exit
 * status, for a closed port, a server that accepts TCP and never answers, and one whose answer is no TLS record.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { doctor, doctorExitCode } from '../../src/doctor/doctor.js';
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
