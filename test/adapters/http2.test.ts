import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { after, before, it } from 'node:test';
import { identityOf } from '../../src/identity/identity.js';
import { compilePolicy } from '../../src/identity/policy.js';
import { clientTlsOptions, serverTlsOptions } from '../../src/tls/options.js';
import { close, listen, testPki, type TestPki } from '../helpers/endpoints.js';

let pki: TestPki;
before(async () => {
  pki = await testPki();
});
after(async () => {
  await pki.ca.close();
});

it('http2: the option builders negotiate h2 with mTLS, and identityOf + policy work on http2 requests', async () => {
  const policy = compilePolicy({ allow: ['spiffe://test.example/ns/*/sa/billing'] });
  const server = http2.createSecureServer(
    { ...serverTlsOptions(pki.creds('server'), { alpn: ['h2'] }) },
    (req, res) => {
      const d = policy.decide(identityOf(req), req.url);
      res.writeHead(d.allowed ? 200 : 403);
      res.end(d.reason);
    },
  );
  const port = await listen(server);
  const get = (name: string) =>
    new Promise<{ status: number; body: string; alpn: string | false }>((resolve, reject) => {
      const session = http2.connect(`https://localhost:${port}`, {
        ...clientTlsOptions(pki.creds(name), pki.bundle, { servername: 'localhost' }, { alpn: ['h2'] }),
      } as http2.SecureClientSessionOptions);
      session.on('error', reject);
      const req = session.request({ ':path': '/x' });
      let body = '';
      let status = 0;
      req.on('response', (h) => {
        status = Number(h[':status']);
      });
      req.on('data', (d) => (body += d));
      req.on('end', () => {
        const alpn = session.alpnProtocol ?? false;
        session.close();
        resolve({ status, body, alpn });
      });
      req.end();
    });
  try {
    const ok = await get('billing');
    assert.deepEqual([ok.status, ok.alpn], [200, 'h2']);
    assert.match(ok.body, /billing is allowed/);
    const denied = await get('web');
    assert.equal(denied.status, 403);
    assert.match(denied.body, /web matches no allow rule/);
  } finally {
    await close(server as never);
  }
});
