import assert from 'node:assert/strict';
import https from 'node:https';
import { after, before, describe, it } from 'node:test';
import express from 'express';
import Fastify from 'fastify';
import { fetch } from 'undici';
import { MtlsHttpsAgent, mtlsUndiciAgent } from '../../src/adapters/agents.js';
import { mtlsFastify } from '../../src/adapters/fastify.js';
import { createMtlsHttpsServer, mtlsAuthorize } from '../../src/adapters/http.js';
import { compilePolicy } from '../../src/identity/policy.js';
import { serverTlsOptions } from '../../src/tls/options.js';
import { close, listen, testPki, type TestPki } from '../helpers/endpoints.js';

let pki: TestPki;
before(async () => {
  pki = await testPki();
});
after(async () => {
  await pki.ca.close();
});

const policy = () =>
  compilePolicy({
    allow: ['trust-domain:test.example'],
    routes: [{ prefix: '/admin', allow: ['spiffe://test.example/ns/prod/sa/billing'] }],
  });

async function fetchAs(name: string, url: string) {
  const dispatcher = mtlsUndiciAgent({
    credentials: pki.creds(name),
    ca: pki.bundle,
    expect: { servername: 'localhost' },
  });
  try {
    const r = await fetch(url, { dispatcher });
    return { status: r.status, body: (await r.json()) as Record<string, unknown> };
  } finally {
    await dispatcher.close();
  }
}

describe('Express', () => {
  it('mtlsAuthorize sets req.mtls and answers 403 with the reason, per route', async () => {
    const app = express();
    app.use(mtlsAuthorize(policy()));
    app.get('/{*path}', (req, res) => {
      res.json({ you: req.mtls!.identity!.spiffeId!.uri, why: req.mtls!.decision.reason });
    });
    const server = https.createServer(serverTlsOptions(pki.creds('server')), app);
    const port = await listen(server);
    try {
      const ok = await fetchAs('web', `https://localhost:${port}/hello`);
      assert.equal(ok.status, 200);
      assert.equal(ok.body['you'], 'spiffe://test.example/ns/prod/sa/web');
      const admin = await fetchAs('web', `https://localhost:${port}/admin/users`);
      assert.equal(admin.status, 403);
      assert.match(String(admin.body['reason']), /web matches no allow rule for \/admin/);
      assert.equal((await fetchAs('billing', `https://localhost:${port}/admin/users`)).status, 200);
    } finally {
      await close(server);
    }
  });
});

describe('Fastify', () => {
  it('the plugin decorates request.mtls and denies with 403 and the reason', async () => {
    const app = Fastify({ https: serverTlsOptions(pki.creds('server')) as never });
    await app.register(mtlsFastify as never, { policy: policy() });
    app.get('/*', async (req) => ({
      you: (req as unknown as { mtls: { identity: { spiffeId: { uri: string } } } }).mtls.identity.spiffeId.uri,
    }));
    await app.listen({ port: 0, host: '127.0.0.1' });
    const port = (app.server.address() as { port: number }).port;
    try {
      const ok = await fetchAs('web', `https://localhost:${port}/x`);
      assert.deepEqual(ok, { status: 200, body: { you: 'spiffe://test.example/ns/prod/sa/web' } });
      const denied = await fetchAs('web', `https://localhost:${port}/admin`);
      assert.equal(denied.status, 403);
      assert.equal(denied.body['error'], 'forbidden');
    } finally {
      await app.close();
    }
  });
});

describe('clients', () => {
  it(
    'undici fetch presents the client certificate, checks a SPIFFE server identity, ' + 'and refuses a wrong one',
    async () => {
      const server = createMtlsHttpsServer(
        { credentials: pki.creds('svid-server'), policy: compilePolicy({ allow: ['any'] }) },
        (req, res) => res.end(JSON.stringify({ caller: req.mtls!.identity!.spiffeId!.uri })),
      );
      const port = await listen(server);
      try {
        const good = mtlsUndiciAgent({
          credentials: pki.creds('billing'),
          ca: pki.bundle,
          expect: { spiffeId: 'spiffe://test.example/ns/prod/sa/api' },
        });
        const r = await fetch(`https://127.0.0.1:${port}/`, { dispatcher: good });
        assert.deepEqual(await r.json(), { caller: 'spiffe://test.example/ns/prod/sa/billing' });
        // A second request on a new connection resumes the session and is still checked.
        const again = await fetch(`https://127.0.0.1:${port}/`, { dispatcher: good, headers: { connection: 'close' } });
        assert.equal(again.status, 200);
        await good.close();
        const wrong = mtlsUndiciAgent({
          credentials: pki.creds('billing'),
          ca: pki.bundle,
          expect: { spiffeId: 'spiffe://test.example/ns/prod/sa/db' },
        });
        await assert.rejects(fetch(`https://127.0.0.1:${port}/`, { dispatcher: wrong }), (e: Error) =>
          /is spiffe:\/\/test\.example\/ns\/prod\/sa\/api, not/.test(String((e.cause as Error)?.message ?? e.message)),
        );
        await wrong.close();
      } finally {
        await close(server);
      }
    },
  );

  it('the https Agent keeps working across resumed sessions and checks identity each time', async () => {
    const server = createMtlsHttpsServer(
      { credentials: pki.creds('server'), policy: compilePolicy({ allow: ['any'] }) },
      (req, res) => res.end(String(req.socket.constructor.name)),
    );
    const port = await listen(server);
    const agent = new MtlsHttpsAgent({ credentials: pki.creds('billing'), ca: pki.bundle, keepAlive: false });
    const get = () =>
      new Promise<{ status: number; reused: boolean }>((resolve, reject) => {
        const req = https.get({ host: 'localhost', port, agent }, (res) => {
          const reused = (res.socket as import('node:tls').TLSSocket).isSessionReused();
          res.resume();
          res.on('end', () => resolve({ status: res.statusCode!, reused }));
        });
        req.on('error', reject);
      });
    try {
      const results = [];
      for (let i = 0; i < 4; i++) {
        results.push(await get());
        await new Promise((r) => setTimeout(r, 30));
      }
      assert.ok(results.every((r) => r.status === 200));
      assert.ok(
        results.slice(1).some((r) => r.reused),
        `no resumption: ${JSON.stringify(results)}`,
      );
    } finally {
      agent.destroy();
      await close(server);
    }
  });
});
