/**
 * OCSP stapling (issue 14): `mtls serve --staple` and the library servers staple their certificate's status from
 * the CA's responder; `openssl s_client -status` reads it on TLS 1.2 and 1.3; our clients (connectMtls, the https
 * and undici agents, `mtls connect`) check it: a revoked staple is refused, 'require' refuses a server without one.
 * A responder that is down at start-up is retried, and the staple appears once it answers.
 */
import assert from 'node:assert/strict';
import https from 'node:https';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { fetch } from 'undici';
import { MtlsHttpsAgent, mtlsUndiciAgent } from '../../src/adapters/agents.js';
import { createMtlsHttpsServer } from '../../src/adapters/http.js';
import { MtlsError } from '../../src/errors.js';
import { compilePolicy } from '../../src/identity/policy.js';
import { connectMtls, type MtlsConnection } from '../../src/tls/client.js';
import type { Credentials } from '../../src/tls/credentials.js';
import { createMtlsServer } from '../../src/tls/server.js';
import { OcspStapler, type StapleEvent } from '../../src/tls/stapling.js';
import { close, freePort, listen, until } from '../helpers/endpoints.js';
import { BIN, mtls, mtlsAsync } from '../helpers/pki.js';
import { startProcess, trackServers } from '../helpers/process.js';
import crypto from 'node:crypto';
import fs from 'node:fs';
import tls from 'node:tls';
import { parseCertificate } from '../../src/pki/certificate.js';
import { basicConstraintsExt, keyUsageExt, subjectKeyIdExt } from '../../src/pki/extensions.js';
import { encodeOcspResponse, parseOcspRequest } from '../../src/pki/ocsp.js';
import { ocspRequest } from '../../src/pki/ocsp-check.js';
import { decodeCertificatesPem, encodePem } from '../../src/pki/pem.js';
import { randomSerial, signCertificate } from '../../src/pki/signing.js';
import { serverTlsOptions } from '../../src/tls/options.js';
import { sClientStatus, urlCa, type UrlCa } from '../helpers/url-ca.js';

const servers = trackServers();

describe('OCSP stapling', () => {
  let pki: UrlCa;
  const f = (n: string) => pki.file(n);
  const creds = (n: string): Credentials => pki.creds(n);
  let ca = '';
  let env: UrlCa['env'];
  const policy = compilePolicy({ allow: ['cn:bob'] });
  /** bob connects asking for a staple: what `describe` says of the connection, or the error that refused it. */
  const bobAsks = (port: number, describe: (c: MtlsConnection) => string) =>
    connectMtls({ host: 'localhost', port, ca, credentials: creds('bob'), staple: 'request' }).then(
      (c) => {
        c.socket.destroy();
        return describe(c);
      },
      (e: unknown) => e,
    );

  before(async () => {
    pki = await urlCa('St', { servers: ['web', 'gone', 'late'], clients: ['bob', 'eve'] });
    ca = pki.bundle;
    env = pki.env;
  });

  it('a server started while the responder is down staples nothing, retries, and staples once it answers', async () => {
    const events: StapleEvent[] = [];
    const stapler = new OcspStapler({ onEvent: (e) => events.push(e), waitMs: 200 });
    const server = createMtlsServer({ credentials: creds('late'), policy, staple: stapler }, (s) => s.end('hi'));
    servers.push(server);
    const port = await listen(server);
    await until(() => events.length > 0, 5000, 'the first fetch to fail');
    assert.equal(events[0]!.event, 'ocsp-staple-failed');
    assert.match((events[0] as { reason: string }).reason, /cannot be reached \(ECONNREFUSED\)/);
    const connect = (staple: 'request' | 'require') =>
      connectMtls({ host: 'localhost', port, ca, credentials: creds('bob'), staple });
    const plain = await connect('request');
    assert.equal(plain.staple, undefined, 'no staple to check: request accepts');
    plain.socket.destroy();
    await assert.rejects(connect('require'), (e: unknown) => e instanceof MtlsError && e.code === 'REVOCATION_UNKNOWN');
    await pki.startResponder();
    await until(() => events.some((e) => e.event === 'ocsp-staple'), 10_000, 'the retry to fetch a staple');
    const stapled = await connect('require');
    assert.equal(stapled.staple?.status, 'good');
    stapled.socket.destroy();
    await close(server);
  });

  it('mtls serve --staple: openssl s_client -status reads it on TLS 1.2 and 1.3; mtls connect shows and requires it', async () => {
    const port = await freePort();
    const serve = await startProcess(
      process.execPath,
      [BIN, ...pki.serveArgs(port, 'web'), '--allow', 'cn:bob', '--staple'],
      /OCSP staple for 'St, web': good/,
      env,
    );
    for (const v of ['-tls1_2', '-tls1_3']) {
      const out = sClientStatus(pki, port, 'bob', v);
      assert.match(out, /OCSP Response Status: successful/, v);
      assert.match(out, /Cert Status: good/, v);
    }
    assert.equal(mtls(['ca', 'crl'], { env }).status, 0); // the root's CRL, which the intermediate names
    const c = await mtlsAsync(
      ['connect', `localhost:${port}`, '--cert', f('bob.crt'), '--key', f('bob.key'), '--staple', 'require'],
      { env },
    );
    assert.equal(c.status, 0, c.stdout + c.stderr);
    // Each certificate of the chain, and where its status came from: the leaf's staple, the intermediate's CRL.
    assert.match(c.stdout, /revocation\s+'web' good: its stapled OCSP response \(signed by 'OCSP responder'\)/);
    assert.match(
      c.stdout,
      /revocation\s+'St Intermediate' good: the CRL at http:\/\/127\.0\.0\.1:\d+\/crl\/root\.crl \(next update/,
    );
    const trace = await mtlsAsync(
      ['trace', `localhost:${port}`, '--cert', f('bob.crt'), '--key', f('bob.key'), '--color', 'never'],
      { env },
    );
    assert.equal(trace.status, 0, trace.stdout + trace.stderr);
    assert.match(trace.stdout, /revocation: good \(OCSP response stapled by the server, signed by 'OCSP responder'/);
    assert.match(
      trace.stdout,
      /revocation of 'St Intermediate': good \(the CRL at http:\/\/127\.0\.0\.1:\d+\/crl\/root\.crl/,
    );
    assert.doesNotMatch(serve.output(), /OCSP staple .* FAILED/);
  });

  it('mtls serve --staple refuses a certificate that names no responder, in one line', async () => {
    const bare = path.join(pki.dir, 'bare');
    const bareEnv = { MTLS_HOME: path.join(bare, 'ca') };
    assert.equal(mtls(['ca', 'init', '--name', 'Bare'], { env: bareEnv }).status, 0);
    assert.equal(mtls(['issue', 'server', 'x', '--dns', 'localhost', '--out', bare], { env: bareEnv }).status, 0);
    const r = await mtlsAsync(
      [
        'serve',
        '--port',
        '0',
        '--cert',
        path.join(bare, 'x.crt'),
        '--key',
        path.join(bare, 'x.key'),
        '--allow',
        'cn:bob',
        '--staple',
      ],
      { env: bareEnv },
    );
    assert.equal(r.status, 2, r.stdout + r.stderr);
    assert.match(r.stderr, /cannot staple: the certificate 'Bare, x' names no OCSP responder/);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  });

  it('a revoked staple is refused by connectMtls, both agents and mtls connect; require refuses a server without', async () => {
    pki.revoke('gone', 'keyCompromise');
    const stapler = new OcspStapler();
    const server = createMtlsHttpsServer({ credentials: creds('gone'), policy, staple: stapler }, (_q, res) =>
      res.end('ok'),
    );
    servers.push(server);
    const port = await listen(server);
    const revoked = (e: unknown) =>
      e instanceof MtlsError && e.code === 'CERT_REVOKED' && /keyCompromise/.test(e.message);
    const outcome = await bobAsks(port, () => 'connected');
    assert.ok(revoked(outcome), String(outcome));
    const undici = mtlsUndiciAgent({ ca, credentials: creds('bob'), staple: 'request' });
    await assert.rejects(fetch(`https://localhost:${port}/`, { dispatcher: undici }), (e: Error) => revoked(e.cause));
    const agent = new MtlsHttpsAgent({ ca, credentials: creds('bob'), staple: 'request', keepAlive: false });
    const viaHttps = await new Promise<unknown>((resolve) => {
      https.get(`https://localhost:${port}/`, { agent }, (res) => resolve(res.statusCode)).on('error', resolve);
    });
    assert.ok(revoked(viaHttps), String(viaHttps));
    const cli = await mtlsAsync(['connect', `localhost:${port}`, '--cert', f('bob.crt'), '--key', f('bob.key')], {
      env,
    });
    assert.equal(cli.status, 1, cli.stdout);
    assert.match(
      cli.stdout,
      /\[CERT_REVOKED\] the server's certificate \(serial [0-9a-f]+\) is revoked since .* \(keyCompromise\)/,
    );
    // Without asking for a staple, a client is none the wiser: the check is the client's to make.
    const blind = await connectMtls({ host: 'localhost', port, ca, credentials: creds('bob') });
    blind.socket.destroy();
    // A server that staples nothing: 'require' refuses it, in the agents too.
    const plain = createMtlsServer({ credentials: creds('web'), policy }, (s: tls.TLSSocket) => s.end('hi'));
    servers.push(plain);
    const plainPort = await listen(plain);
    const strict = mtlsUndiciAgent({ ca, credentials: creds('bob'), staple: 'require' });
    await assert.rejects(
      fetch(`https://localhost:${plainPort}/`, { dispatcher: strict }),
      (e: Error) => e.cause instanceof MtlsError && e.cause.code === 'REVOCATION_UNKNOWN',
    );
    const cliRequire = await mtlsAsync(
      ['connect', `localhost:${plainPort}`, '--cert', f('bob.crt'), '--key', f('bob.key'), '--staple', 'require'],
      { env },
    );
    assert.equal(cliRequire.status, 1);
    assert.match(cliRequire.stdout, /\[REVOCATION_UNKNOWN\] the server stapled no OCSP response, and one is required/);
    await Promise.all([undici.close(), strict.close()]);
    stapler.close();
  });

  it('mtls doctor shows both revocation statuses: a revoked server staple and our own revoked certificate', async () => {
    // 'gone' (revoked in the test above) staples its revoked status.
    const stapler = new OcspStapler();
    const gone = createMtlsServer({ credentials: creds('gone'), policy, staple: stapler }, (s) => s.end('hi'));
    servers.push(gone);
    const gonePort = await listen(gone);
    const doc = (port: number, who: string) =>
      mtlsAsync(
        ['doctor', `localhost:${port}`, '--cert', f(`${who}.crt`), '--key', f(`${who}.key`), '--json', '--no-http'],
        { env },
      );
    const r1 = await doc(gonePort, 'bob');
    const j1 = JSON.parse(r1.stdout) as {
      diagnosis: { code: string; cause: string };
      checks: { name: string; ok: boolean | null; detail: string }[];
    };
    assert.equal(j1.diagnosis.code, 'SERVER_CERT_REVOKED', r1.stdout);
    assert.equal(r1.status, 1);
    assert.match(j1.diagnosis.cause, /'gone' is revoked since .* \(keyCompromise\), says its stapled OCSP response/);
    assert.deepEqual(
      j1.checks.find((c) => c.name === 'our certificate is not revoked'),
      {
        name: 'our certificate is not revoked',
        ok: true,
        detail: `good (the OCSP responder ${pki.ocspUrl}, signed by 'OCSP responder')`,
      },
    );
    // A server that does not check revocation still lets eve in: doctor says her certificate is revoked anyway.
    pki.revoke('eve', 'affiliationChanged');
    const lax = createMtlsServer({ credentials: creds('web'), policy: compilePolicy({ allow: ['any'] }) }, (s) =>
      s.end('hi'),
    );
    servers.push(lax);
    const r2 = await doc(await listen(lax), 'eve');
    const j2 = JSON.parse(r2.stdout) as typeof j1;
    assert.equal(j2.diagnosis.code, 'OUR_CERT_REVOKED', r2.stdout);
    assert.match(
      j2.diagnosis.cause,
      /our certificate 'eve' is revoked since .* \(affiliationChanged\), says the OCSP responder/,
    );
    assert.match(
      j2.checks.find((c) => c.name === "the server's certificate is not revoked")!.detail,
      /^good \(the OCSP responder .*\)$/,
      'web staples nothing; doctor asks the responder it names',
    );
    stapler.close();
  });

  it('mtls proxy server --staple, on both engines: openssl s_client -status and connectMtls require see it', async () => {
    const targetServer = (await import('node:net')).createServer((c) => c.end('relayed\n'));
    servers.push(targetServer);
    const target = await listen(targetServer);
    for (const engine of ['native', 'node']) {
      const port = await freePort();
      const proxy = await startProcess(
        process.execPath,
        [
          BIN,
          ...pki.proxyArgs('server', port, `127.0.0.1:${target}`, 'web'),
          '--allow',
          'cn:bob',
          '--staple',
          '--engine',
          engine,
        ],
        /"event":"ocsp-staple"/,
        env,
      );
      assert.match(proxy.output(), new RegExp(`"engine":"${engine}"`));
      for (const v of ['-tls1_2', '-tls1_3']) {
        assert.match(sClientStatus(pki, port, 'bob', v), /Cert Status: good/, `${engine} ${v}`);
      }
      const c = await connectMtls({ host: 'localhost', port, ca, credentials: creds('bob'), staple: 'require' });
      assert.equal(c.staple?.status, 'good', engine);
      c.socket.destroy();
    }
  });

  it('mtls proxy client --staple: relays to a server with a good staple, refuses a revoked one, require refuses none', async () => {
    const net = await import('node:net');
    const serverFor = (name: string, staple: boolean) => {
      const st = staple ? new OcspStapler() : undefined;
      const s = createMtlsServer({ credentials: creds(name), policy, ...(st ? { staple: st } : {}) }, (sock) =>
        sock.end(`hello from ${name}\n`),
      );
      servers.push(s);
      return listen(s);
    };
    const good = await serverFor('web', true);
    const revoked = await serverFor('gone', true);
    const plain = await serverFor('late', false);
    const through = async (target: number, mode: string) => {
      const port = await freePort();
      const p = await startProcess(
        process.execPath,
        [BIN, ...pki.proxyArgs('client', port, `localhost:${target}`, 'bob'), '--staple', mode],
        /"event":"listening"/,
        env,
      );
      const got = await new Promise<string>((resolve) => {
        let data = '';
        const c = net.connect(port, '127.0.0.1');
        c.on('data', (d) => (data += d));
        c.on('error', () => undefined);
        c.on('close', () => resolve(data));
      });
      return { got, log: p.output };
    };
    assert.equal((await through(good, 'require')).got, 'hello from web\n');
    const r = await through(revoked, 'request');
    assert.equal(r.got, '', 'nothing relayed from a server whose staple says revoked');
    await until(() => /"code":"CERT_REVOKED"/.test(r.log()), 5000, 'the refusal in the log');
    const n = await through(plain, 'require');
    assert.equal(n.got, '');
    await until(() => /"code":"REVOCATION_UNKNOWN"/.test(n.log()), 5000, 'the refusal in the log');
    assert.equal((await through(plain, 'request')).got, 'hello from late\n', 'request: no staple, no check');
  });

  it('refuses a staple "signed by the issuer" when that issuer is an impostor the server slipped into its chain', async () => {
    // The holder of a revoked certificate sends [leaf, fake intermediate (same name and key id, its own key), the
    // real intermediate]: OpenSSL verifies through the real one, while Node names the first match the leaf's
    // issuer. A staple signed by the fake key must not read good.
    const real = parseCertificate(
      decodeCertificatesPem(fs.readFileSync(path.join(pki.home, 'intermediate.crt'), 'latin1'), 'int')[0]!,
    );
    const fakeKey = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const fakeDer = signCertificate(
      {
        serial: randomSerial(),
        issuer: real.subjectDer,
        subject: real.subjectDer,
        // Expired: OpenSSL's chain building passes over it for the real one; Node's issuer lookup does not look at time.
        notBefore: new Date(Date.now() - 2 * 86400e3),
        notAfter: new Date(Date.now() - 86400e3),
        publicKey: fakeKey.publicKey,
        extensions: [
          basicConstraintsExt(true),
          keyUsageExt(['keyCertSign', 'cRLSign']),
          subjectKeyIdExt(real.subjectKeyId!),
        ],
      },
      fakeKey.privateKey,
    );
    const fake = parseCertificate(fakeDer);
    const leaf = pki.creds('gone').leaf; // revoked above
    const certId = parseOcspRequest(ocspRequest(leaf, fake, { nonce: false }).der).certIds[0]!;
    const now = new Date();
    const forged = encodeOcspResponse([{ certId, status: { status: 'good' } }], {
      signer: fake,
      key: fakeKey.privateKey,
      producedAt: now,
      thisUpdate: now,
      nextUpdate: new Date(now.getTime() + 3600e3),
    });
    const server = tls.createServer({
      ...serverTlsOptions(pki.creds('gone')),
      cert: [leaf.der, fakeDer, real.der].map((d) => encodePem('CERTIFICATE', d)).join(''),
    });
    server.on('OCSPRequest', (_c: Buffer, _i: Buffer, cb: (e: null, r: Buffer) => void) => cb(null, forged));
    server.on('secureConnection', (s: tls.TLSSocket) => s.end('hi'));
    servers.push(server);
    const port = await listen(server);
    const outcome = await bobAsks(port, (c) => `connected, staple ${c.staple?.status}`);
    assert.ok(
      outcome instanceof MtlsError && outcome.code === 'REVOCATION_UNKNOWN' && /did not sign/.test(outcome.message),
      String(outcome),
    );
  });
});
