/**
 * The relying party's side of OCSP (issue 14): fetchOcsp/checkOcspResponse against our responder and against
 * `openssl ocsp` as a responder (signing with the issuer itself), and `mtls verify --ocsp`. A response is believed
 * only when it is signed by the issuer or its delegated responder, answers for our certificate, is current and
 * echoes our nonce if it echoes one: every other case is REVOCATION_UNKNOWN, never "good".
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { MtlsError } from '../../src/errors.js';
import { parseCertificate, type Certificate } from '../../src/pki/certificate.js';
import { checkOcspResponse, ocspRequest } from '../../src/pki/ocsp-check.js';
import { fetchOcsp } from '../../src/tls/ocsp-fetch.js';
import { decodeCertificatesPem } from '../../src/pki/pem.js';
import { close, freePort, listen } from '../helpers/endpoints.js';
import { mtls, mtlsAsync } from '../helpers/pki.js';
import { startProcess, trackServers } from '../helpers/process.js';
import { urlCa, type UrlCa } from '../helpers/url-ca.js';

const servers = trackServers();

const load = (file: string): Certificate =>
  parseCertificate(decodeCertificatesPem(fs.readFileSync(file, 'latin1'), file)[0]!);

/** POSTs a DER OCSP request to `url` and returns the raw DER answer. */
async function post(url: string, der: Buffer): Promise<Buffer> {
  const r = await fetch(url, { method: 'POST', body: der, headers: { 'content-type': 'application/ocsp-request' } });
  return Buffer.from(await r.arrayBuffer());
}

const unknownBecause = (re: RegExp) => (err: unknown) =>
  err instanceof MtlsError && err.code === 'REVOCATION_UNKNOWN' && re.test(err.message);

describe('OCSP, as a client checks it', () => {
  let pki: UrlCa;
  let env: UrlCa['env'];
  let home = '';
  let dir = '';
  const f = (n: string) => pki.file(n);
  let url = '';
  let alice: Certificate, bob: Certificate, intermediate: Certificate;

  before(async () => {
    pki = await urlCa('Oc', { clients: ['alice', 'bob'] });
    ({ env, home, dir, ocspUrl: url } = pki);
    await pki.startResponder();
    [alice, bob, intermediate] = [load(f('alice.crt')), load(f('bob.crt')), load(path.join(home, 'intermediate.crt'))];
    assert.deepEqual(alice.ocspUrls, [url], 'ca init --url puts the responder in every certificate');
  });

  it('our responder: good, then revoked with time and reason, signed by its delegated responder', async () => {
    const good = await fetchOcsp(url, alice, intermediate);
    assert.equal(good.status, 'good');
    assert.match(good.signedBy, /OCSP responder/);
    assert.ok(good.nextUpdate! > new Date());
    pki.revoke('bob', 'keyCompromise');
    const revoked = await fetchOcsp(url, bob, intermediate);
    assert.equal(revoked.status, 'revoked');
    assert.equal(revoked.reason, 'keyCompromise');
    assert.ok(Math.abs(revoked.revokedAt!.getTime() - Date.now()) < 60_000);
  });

  it('refuses an answer about another certificate, a stale one, a forged one, a replayed nonce and a failure', async () => {
    const req = ocspRequest(alice, intermediate);
    const der = await post(url, req.der);
    assert.equal(checkOcspResponse(der, alice, intermediate, { nonce: req.nonce! }).status, 'good');
    // The answer about alice, handed over when bob is asked about: a revoked bob must not read good.
    assert.throws(() => checkOcspResponse(der, bob, intermediate), unknownBecause(/no answer for serial/));
    // Past its nextUpdate (an hour): a responder that stopped answering must not keep "good" alive.
    const later = new Date(Date.now() + 2 * 3600e3);
    assert.throws(() => checkOcspResponse(der, alice, intermediate, { now: later }), unknownBecause(/expired at/));
    assert.throws(
      () => checkOcspResponse(der, alice, intermediate, { now: new Date(Date.now() - 3600e3) }),
      unknownBecause(/in the future|responder certificate 'OCSP responder', valid /),
    );
    // The signed data changed by one second (producedAt, the first GeneralizedTime): the signature breaks.
    const forged = Buffer.from(der);
    const second = forged.indexOf(Buffer.from([0x18, 0x0f])) + 2 + 13;
    forged[second] = forged[second] === 0x39 ? 0x38 : forged[second]! + 1;
    assert.throws(() => checkOcspResponse(forged, alice, intermediate), unknownBecause(/signature does not verify/));
    // Another request's nonce: an old answer replayed.
    const other = ocspRequest(alice, intermediate);
    assert.throws(
      () => checkOcspResponse(der, alice, intermediate, { nonce: other.nonce! }),
      unknownBecause(/another request's nonce/),
    );
    // Checked against the wrong issuer: its responder certificate was not issued by that CA.
    const otherHome = path.join(dir, 'other');
    assert.equal(mtls(['ca', 'init', '--name', 'Other'], { env: { MTLS_HOME: otherHome } }).status, 0);
    const foreign = load(path.join(otherHome, 'intermediate.crt'));
    assert.throws(
      () => checkOcspResponse(der, alice, foreign),
      unknownBecause(/the issuer given did not sign the certificate/),
    );
    // Failure statuses and garbage.
    assert.throws(
      () => checkOcspResponse(Buffer.from([0x30, 0x03, 0x0a, 0x01, 0x03]), alice, intermediate),
      unknownBecause(/tryLater/),
    );
    assert.throws(() => checkOcspResponse(Buffer.from('<html>'), alice, intermediate), unknownBecause(/not a valid/));
  });

  it('a responder that is down, slow, answers HTTP errors or floods: REVOCATION_UNKNOWN within the deadline', async () => {
    await assert.rejects(fetchOcsp('http://127.0.0.1:1/ocsp', alice, intermediate), unknownBecause(/ECONNREFUSED/));
    await assert.rejects(fetchOcsp('https://127.0.0.1/ocsp', alice, intermediate), unknownBecause(/not http/));
    const hostile = http.createServer((req, res) => {
      if (req.url === '/slow') return; // never answers
      if (req.url === '/500') return void res.writeHead(500).end();
      res.writeHead(200, { 'content-type': 'application/ocsp-response' });
      res.write(Buffer.alloc(200_000, 0x30)); // far past 64 KiB
    });
    servers.push(hostile);
    const port = await listen(hostile);
    const t0 = Date.now();
    await assert.rejects(
      fetchOcsp(`http://127.0.0.1:${port}/slow`, alice, intermediate, { timeoutMs: 300 }),
      unknownBecause(/did not answer within 300 ms/),
    );
    assert.ok(Date.now() - t0 < 2000);
    await assert.rejects(fetchOcsp(`http://127.0.0.1:${port}/500`, alice, intermediate), unknownBecause(/HTTP 500/));
    await assert.rejects(fetchOcsp(`http://127.0.0.1:${port}/big`, alice, intermediate), unknownBecause(/more than/));
    hostile.closeAllConnections();
    await close(hostile);
  });

  it('openssl ocsp as the responder, signing with the issuer itself: good and revoked', async () => {
    const stamp = (d: Date) => d.toISOString().replace(/[-:T]/g, '').slice(2, 14) + 'Z';
    const line = (c: Certificate, revoked?: string) =>
      [
        revoked ? 'R' : 'V',
        stamp(c.notAfter),
        revoked ? `${revoked},keyCompromise` : '',
        c.serialHex.toUpperCase(),
        'unknown',
        '/CN=x',
      ].join('\t');
    fs.writeFileSync(f('index.txt'), `${line(alice)}\n${line(bob, stamp(new Date(Date.now() - 60_000)))}\n`);
    const port = await freePort();
    await startProcess(
      'openssl',
      [
        'ocsp',
        '-index',
        f('index.txt'),
        '-port',
        String(port),
        '-rsigner',
        path.join(home, 'intermediate.crt'),
        '-rkey',
        path.join(home, 'intermediate.key'),
        '-CA',
        path.join(home, 'intermediate.crt'),
        '-nmin',
        '5',
      ],
      /waiting for OCSP client connections/i,
    );
    const theirs = `http://127.0.0.1:${port}/`;
    const good = await fetchOcsp(theirs, alice, intermediate);
    assert.equal(good.status, 'good');
    assert.equal(good.signedBy, 'the issuer');
    const revoked = await fetchOcsp(theirs, bob, intermediate);
    assert.equal(revoked.status, 'revoked');
    assert.equal(revoked.reason, 'keyCompromise');
  });

  it('mtls verify --ocsp: good exits 0, revoked and unreachable exit 1, each with where the status came from', async () => {
    const ok = await mtlsAsync(['verify', f('alice.crt'), '--ocsp'], { env });
    assert.equal(ok.status, 0, ok.stdout + ok.stderr);
    assert.match(ok.stdout, new RegExp(`revocation: 'alice' good \\(OCSP ${url}, signed by 'OCSP responder'`));
    // The intermediate names the same responder (ca init --url), which answers for the root's certificates too.
    assert.match(ok.stdout, /'Oc Intermediate' good \(OCSP http:\/\/[^ ]+\/ocsp, signed by 'OCSP responder \(root\)'/);
    const bad = await mtlsAsync(['verify', f('bob.crt'), '--ocsp', '--json'], { env });
    assert.equal(bad.status, 1);
    const json = JSON.parse(bad.stdout) as {
      chain: { ocsp: { status: string } | null }[];
      problems: { code: string; error: string }[];
    };
    assert.equal(json.chain[0]!.ocsp!.status, 'revoked');
    assert.deepEqual(
      json.problems.map((p) => [p.code, p.error]),
      [['REVOKED', 'CERT_REVOKED']],
    );
    const down = await mtlsAsync(['verify', f('alice.crt'), '--ocsp', 'http://127.0.0.1:1/ocsp'], { env });
    assert.equal(down.status, 1);
    assert.match(down.stdout, /INVALID\n  - the OCSP responder http:\/\/127\.0\.0\.1:1\/ocsp cannot be reached/);
  });
});
