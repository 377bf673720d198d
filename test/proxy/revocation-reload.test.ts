import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { before, describe, it } from 'node:test';
import { freePort, listen, tlsAttempt, until } from '../helpers/endpoints.js';
import { OID } from '../../src/pki/oid.js';
import { crlPki, type CrlPki } from '../helpers/crl-pki.js';
import { keyPem, makeCert, tempDir, writePem } from '../helpers/pki.js';
import { crlProxyArgs, proxyArgs, startProxy, trackServers } from '../helpers/process.js';

let pki: CrlPki;
const servers = trackServers();
before(() => {
  pki = crlPki();
});

interface Attempt {
  admitted: boolean;
  resumed: boolean;
  session?: Buffer;
}

/**
 * One mTLS connection as alice, on a fresh TCP connection or on `socket` (opened earlier), optionally resuming
 * `session`: admitted when the backend's answer came back. Every session ticket received is kept.
 */
async function attempt(
  port: number,
  http1: boolean,
  o: { socket?: net.Socket; session?: Buffer } = {},
  secureContext = pki.clientContext(pki.alice),
): Promise<Attempt> {
  const { data, ...rest } = await tlsAttempt(port, secureContext, {
    ...o,
    ...(http1 ? { send: 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' } : {}),
  });
  return { admitted: /hi/.test(data), ...rest };
}

const opened = (port: number) =>
  new Promise<net.Socket>((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => resolve(s));
    s.on('error', reject);
  });

describe('a CRL reload is in force for every path in: fresh, opened before the reload, resumed (issue 18.1)', () => {
  for (const engine of ['native', 'node', 'http'] as const) {
    it(`${engine}: after alice is revoked, no connection of hers is admitted`, async () => {
      const http1 = engine === 'http';
      const backend = net.createServer((s) => {
        s.on('error', () => undefined);
        s.end(http1 ? 'HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nhi\n' : 'hi\n');
      });
      servers.push(backend);
      const target = await listen(backend);
      const port = await freePort();
      const crl = pki.crls([]);
      const p = await startProxy(
        crlProxyArgs(port, `127.0.0.1:${target}`, pki.files, crl, ...(http1 ? ['--http'] : ['--engine', engine])),
      );
      const first = await attempt(port, http1);
      assert.equal(first.admitted, true, 'alice gets in before the revocation');
      assert.ok(first.session, 'and gets a session ticket');
      assert.equal((await attempt(port, http1, { session: first.session })).resumed, true, 'which resumes');
      const early = await Promise.all([opened(port), opened(port), opened(port)]);
      // A keep-alive HTTP connection with one request served before the revocation.
      const kept = http1 ? await keepAlive(port) : undefined;
      pki.crls([pki.alice], crl);
      await until(() => /"event":"reloaded"[^\n]*"trustChanged":true/.test(p.output()), 5000, 'the CRL reload');
      await new Promise((r) => setTimeout(r, 100));
      const late = await Promise.all(early.map((socket) => attempt(port, http1, { socket })));
      assert.deepEqual(
        late.map((a) => a.admitted),
        [false, false, false],
        'connections opened before the reload are refused',
      );
      assert.equal(
        (await attempt(port, http1, { session: first.session })).admitted,
        false,
        'her old session does not get her in',
      );
      for (const a of late.filter((x) => x.session)) {
        assert.equal(
          (await attempt(port, http1, { session: a.session! })).admitted,
          false,
          'nor does a ticket handed out after the reload',
        );
      }
      assert.equal((await attempt(port, http1)).admitted, false, 'a fresh handshake is refused');
      if (kept) assert.equal(await kept(), true, 'a keep-alive connection is closed by the revocation (issue 14)');
      assert.match(p.output(), /"code":"CERT_REVOKED"/);
    });
  }
});

describe('a trust bundle reload is in force for connections opened before it and for resumed sessions', () => {
  for (const engine of ['native', 'node', 'http'] as const) {
    it(`${engine}: a CA removed from the bundle lets none of its clients in`, async () => {
      const http1 = engine === 'http';
      const other = makeCert({ cn: 'Other Root', ca: true });
      const carol = makeCert({
        cn: 'carol',
        issuer: other,
        eku: [OID.clientAuth],
        uri: ['spiffe://crl.example/carol'],
      });
      const carolContext = tls.createSecureContext({ cert: carol.pem, key: keyPem(carol), ca: pki.root.pem });
      const backend = net.createServer((s) => {
        s.on('error', () => undefined);
        s.end(http1 ? 'HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nhi\n' : 'hi\n');
      });
      servers.push(backend);
      const target = await listen(backend);
      const port = await freePort();
      const dir = tempDir('mtls-trust-reload-');
      const bundle = writePem(dir, 'bundle.pem', [pki.root, other]);
      const p = await startProxy(
        proxyArgs(
          'server',
          port,
          `127.0.0.1:${target}`,
          { ...pki.files, ca: bundle },
          '--allow',
          'trust-domain:crl.example',
          ...(http1 ? ['--http'] : ['--engine', engine]),
        ),
      );
      const as = (o: { socket?: net.Socket; session?: Buffer } = {}) => attempt(port, http1, o, carolContext);
      const first = await as();
      assert.equal(first.admitted, true, 'carol gets in while her CA is trusted');
      const early = await Promise.all([opened(port), opened(port)]);
      writePem(dir, 'bundle.next', [pki.root]);
      fs.renameSync(path.join(dir, 'bundle.next'), bundle);
      await until(() => /"event":"reloaded"[^\n]*"trustChanged":true/.test(p.output()), 5000, 'the trust reload');
      await new Promise((r) => setTimeout(r, 100));
      const late = await Promise.all(early.map((socket) => as({ socket })));
      assert.deepEqual(
        late.map((a) => a.admitted),
        [false, false],
        'connections opened before the reload are refused',
      );
      assert.equal((await as({ session: first.session! })).admitted, false, 'her old session does not get her in');
      for (const a of late.filter((x) => x.session))
        assert.equal((await as({ session: a.session! })).admitted, false, 'nor a ticket handed out after the reload');
      assert.equal((await as()).admitted, false);
      assert.equal((await attempt(port, http1)).admitted, true, 'alice, from the CA still trusted, gets in');
    });
  }
});

/** HTTP: opens a keep-alive connection as alice and serves one request; resolves with a function that sends the next. */
/** A keep-alive HTTP connection with one request served; resolves whether the proxy has closed it since. */
async function keepAlive(port: number): Promise<() => Promise<boolean>> {
  const c = tls.connect({
    host: '127.0.0.1',
    port,
    secureContext: pki.clientContext(pki.alice),
    servername: 'localhost',
  });
  let data = '';
  let closed = false;
  c.on('data', (d) => (data += d));
  c.on('error', () => undefined);
  c.on('close', () => (closed = true));
  await new Promise((r) => c.once('secureConnect', r));
  c.write('GET /one HTTP/1.1\r\nHost: x\r\n\r\n');
  await until(() => data.includes('hi'), 5000, 'the first answer');
  return async () => {
    await until(() => closed, 5000, 'the proxy to close the kept connection').catch(() => undefined);
    return closed;
  };
}
