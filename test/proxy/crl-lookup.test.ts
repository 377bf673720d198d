/**
 * The proxy checks revocation itself (issue 14: OpenSSL's CRL check made a handshake about 4x dearer at 100,000
 * entries): the native engine in its verify callback, by hash lookup, the Node engine at admission. What OpenSSL's
 * check gave must hold on both: every certificate of the chain is looked up (a revoked intermediate shuts out its
 * clients), a serial counts only in the CRL of the certificate's own issuer, and a CRL past its nextUpdate is not
 * "no revocations" (hard-fail: nobody gets in until a fresh one is loaded).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { before, describe, it } from 'node:test';
import https from 'node:https';
import { createMtlsHttpsServer } from '../../src/adapters/http.js';
import { compilePolicy } from '../../src/identity/policy.js';
import { nativeUnavailable } from '../../src/proxy/native.js';
import { loadCredentials } from '../../src/tls/credentials.js';
import { CrlSet } from '../../src/tls/crl-file.js';
import { createMtlsServer, type HandshakeErrorEvent } from '../../src/tls/server.js';
import { echoTarget, freePort, listen, until } from '../helpers/endpoints.js';
import { crlPki, type CrlPki } from '../helpers/crl-pki.js';
import { BIN, opensslCrl, tempDir, type TestCert } from '../helpers/pki.js';
import { crlProxyArgs, serveArgs, startProcess, startProxy, trackServers } from '../helpers/process.js';

let pki: CrlPki;
const servers = trackServers();
before(() => {
  pki = crlPki();
});

/** The intermediate's CRL (revoking `leaves`) and the root's (revoking `cas`), in one file. */
function crlFile(leaves: TestCert[], cas: TestCert[], times: { nextUpdate?: Date } = {}): string {
  const d = tempDir('mtls-crl-lookup-');
  const out = path.join(d, 'crls.pem');
  fs.writeFileSync(
    out,
    fs.readFileSync(opensslCrl(pki.inter, leaves, undefined, times)).toString() +
      fs.readFileSync(opensslCrl(pki.root, cas)).toString(),
  );
  return out;
}

/** One connection as `who`: admitted (the echo came back) or refused, with the client's error code. */
function attempt(port: number, who: TestCert): Promise<{ in: boolean; code?: string }> {
  return new Promise((resolve) => {
    const c = tls.connect(
      { host: '127.0.0.1', port, secureContext: pki.clientContext(who), servername: 'localhost' },
      () => c.write('ping'),
    );
    let code: string | undefined;
    c.on('data', (d) => {
      if (String(d) === 'ping') {
        c.destroy();
        resolve({ in: true });
      }
    });
    c.on('error', (e: NodeJS.ErrnoException) => (code = e.code));
    c.on('close', () => resolve({ in: false, ...(code ? { code } : {}) }));
  });
}

async function proxyWith(engine: 'native' | 'node', crl: string, extra: string[] = []) {
  const { port: target } = await echoTarget(servers);
  const port = await freePort();
  const p = await startProxy(crlProxyArgs(port, `127.0.0.1:${target}`, pki.files, crl, '--engine', engine, ...extra));
  return { port, output: p.output };
}

for (const engine of ['native', 'node'] as const)
  describe(
    `${engine} engine: revocation looked up by the proxy`,
    {
      skip: engine === 'native' ? nativeUnavailable() : undefined,
    },
    () => {
      it("a serial counts only in its issuer's CRL; a revoked intermediate shuts out all of its clients", async () => {
        // The root's CRL lists alice's serial: the root did not issue alice, so that entry is not about her.
        const p1 = await proxyWith(engine, crlFile([pki.bob], [pki.alice]));
        assert.equal((await attempt(p1.port, pki.alice)).in, true, p1.output());
        const bob = await attempt(p1.port, pki.bob);
        assert.equal(bob.in, false, 'bob is revoked by the intermediate');
        // The native engine refuses in the handshake, with the alert that says why.
        if (engine === 'native') assert.match(bob.code ?? '', /CERTIFICATE_REVOKED/, JSON.stringify(bob));
        const p2 = await proxyWith(engine, crlFile([], [pki.inter]));
        assert.equal((await attempt(p2.port, pki.alice)).in, false, 'the intermediate is revoked by the root');
        await until(() => /CERT_REVOKED/.test(p2.output()), 5000, `the refusal is logged: ${p2.output()}`);
      });

      it('a CRL that passes its nextUpdate while the proxy runs refuses everyone (hard-fail)', async () => {
        const expires = new Date(Date.now() + 4000);
        const p = await proxyWith(engine, crlFile([pki.bob], [], { nextUpdate: expires }));
        assert.equal((await attempt(p.port, pki.alice)).in, true, p.output());
        await new Promise((r) => setTimeout(r, expires.getTime() - Date.now() + 1100));
        assert.equal((await attempt(p.port, pki.alice)).in, false, 'alice got in on an expired CRL');
        await until(
          () => /expired at .*publish a new CRL/.test(p.output()),
          5000,
          `the reason is logged: ${p.output()}`,
        );
      });

      it('with --crl-soft-fail, a CRL past its nextUpdate still refuses whom it lists and admits the rest (logged, counted)', async () => {
        const expires = new Date(Date.now() + 4000);
        const admin = await freePort();
        const p = await proxyWith(engine, crlFile([pki.bob], [], { nextUpdate: expires }), [
          '--crl-soft-fail',
          '--admin',
          `127.0.0.1:${admin}`,
        ]);
        await new Promise((r) => setTimeout(r, expires.getTime() - Date.now() + 1100));
        assert.equal((await attempt(p.port, pki.alice)).in, true, `alice is not listed: ${p.output()}`);
        assert.equal((await attempt(p.port, pki.bob)).in, false, 'bob is listed by the stale CRL');
        await until(() => /"event":"crl-stale"/.test(p.output()), 5000, `the stale CRL is logged: ${p.output()}`);
        const metrics = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
        assert.match(metrics, /mtls_proxy_crl_stale_admissions_total\{listener="[^"]*"\} [1-9]/);
      });
    },
  );

describe('library servers: revocation looked up per handshake and per request', () => {
  const creds = () => loadCredentials({ certFile: pki.files.cert, keyFile: pki.files.key, caFile: pki.files.ca });
  const policy = compilePolicy({ allow: ['trust-domain:crl.example'] });

  it('createMtlsHttpsServer: a keep-alive connection is refused (403, closed) at its next request after CrlSet.replace', async () => {
    const c = creds();
    const crls = new CrlSet(fs.readFileSync(crlFile([], [])), 'CRL', c);
    const server = createMtlsHttpsServer({ credentials: c, policy, crl: crls }, (_req, res) => res.end('hi'));
    servers.push(server);
    const port = await listen(server);
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
    const ctx = pki.clientContext(pki.alice);
    const get = () =>
      new Promise<{ status: number; body: string; socket: unknown; closed: Promise<void> }>((resolve, reject) => {
        const req = https.get(
          {
            host: '127.0.0.1',
            port,
            path: '/',
            agent,
            secureContext: ctx,
            servername: 'localhost',
          } as https.RequestOptions,
          (res) => {
            let body = '';
            res.on('data', (d) => (body += d));
            res.on('end', () =>
              resolve({
                status: res.statusCode!,
                body,
                socket: req.socket,
                closed: new Promise((r) => (req.socket!.destroyed ? r() : req.socket!.once('close', () => r()))),
              }),
            );
          },
        );
        req.on('error', reject);
      });
    const first = await get();
    assert.equal(first.status, 200, first.body);
    crls.replace(fs.readFileSync(crlFile([pki.alice], [])), 'CRL', c);
    const second = await get();
    assert.equal(second.socket, first.socket, 'the same keep-alive connection');
    assert.equal(second.status, 403, second.body);
    assert.match(second.body, /CERT_REVOKED/);
    await second.closed; // and the server closed it
    agent.destroy();
  });

  it('createMtlsServer with a soft-fail CrlSet: past its nextUpdate the CRL still refuses whom it lists, admits the rest, says so once', async () => {
    const c = creds();
    const stale: string[] = [];
    const expires = new Date(Date.now() + 4000);
    const crls = new CrlSet(fs.readFileSync(crlFile([pki.bob], [], { nextUpdate: expires })), 'CRL', c, {
      softFail: true,
      onStale: (crl) => stale.push(crl.nextUpdate!.toISOString()),
    });
    const server = createMtlsServer({ credentials: c, policy, crl: crls }, (s) => s.end('ping'));
    servers.push(server);
    const port = await listen(server);
    await new Promise((r) => setTimeout(r, expires.getTime() - Date.now() + 1100));
    assert.equal((await attempt(port, pki.alice)).in, true, 'alice is not listed');
    assert.equal((await attempt(port, pki.alice)).in, true, 'alice again');
    assert.equal((await attempt(port, pki.bob)).in, false, 'bob is listed by the stale CRL');
    assert.equal(stale.length, 1, 'said once per CRL');
  });

  it("createMtlsServer: a client whose intermediate the root's CRL revokes is refused, with 'mtls:handshake-error'", async () => {
    const c = creds();
    const server = createMtlsServer({ credentials: c, policy, crl: fs.readFileSync(crlFile([], [pki.inter])) }, (s) =>
      s.end('ping'),
    );
    servers.push(server);
    const errors: HandshakeErrorEvent[] = [];
    server.on('mtls:handshake-error', (e: HandshakeErrorEvent) => errors.push(e));
    const port = await listen(server);
    assert.equal((await attempt(port, pki.alice)).in, false);
    await until(() => errors.length > 0, 5000, 'the refusal is reported');
    assert.equal(errors[0]!.error.code, 'CERT_REVOKED');
  });
});

describe('mtls serve --admin', () => {
  it('counts admissions under a stale CRL (--crl-soft-fail), decisions and refusals in /metrics', async () => {
    const expires = new Date(Date.now() + 4000);
    const port = await freePort();
    const admin = await freePort();
    const crl = crlFile([pki.bob], [], { nextUpdate: expires });
    await startProcess(
      process.execPath,
      [
        BIN,
        ...serveArgs(port, pki.files),
        '--crl',
        crl,
        '--crl-soft-fail',
        '--allow',
        'trust-domain:crl.example',
        '--admin',
        `127.0.0.1:${admin}`,
      ],
      /listening on/,
    );
    // serve greets an admitted client and closes: any byte back means admitted.
    const greeted = (who: TestCert) =>
      new Promise<boolean>((resolve) => {
        const c = tls.connect({
          host: '127.0.0.1',
          port,
          secureContext: pki.clientContext(who),
          servername: 'localhost',
        });
        c.on('data', () => (c.destroy(), resolve(true)));
        c.on('error', () => undefined);
        c.on('close', () => resolve(false));
      });
    assert.equal(await greeted(pki.alice), true);
    await new Promise((r) => setTimeout(r, expires.getTime() - Date.now() + 1100));
    assert.equal(await greeted(pki.alice), true, 'alice is not listed');
    assert.equal(await greeted(pki.bob), false, 'bob is listed by the stale CRL');
    const text = async () => (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
    let metrics = await text();
    for (let i = 0; i < 50 && !/handshake_errors_total\{code="CERT_REVOKED"\} 1/.test(metrics); i++) {
      await new Promise((r) => setTimeout(r, 100));
      metrics = await text();
    }
    assert.match(metrics, /mtls_serve_crl_stale_admissions_total 1\b/);
    assert.match(metrics, /mtls_serve_decisions_total\{decision="allowed"\} 2\b/);
    assert.match(metrics, /mtls_serve_handshake_errors_total\{code="CERT_REVOKED"\} 1\b/);
    assert.equal((await fetch(`http://127.0.0.1:${admin}/readyz`)).status, 200);
  });
});
