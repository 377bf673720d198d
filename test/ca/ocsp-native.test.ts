/**
 * The native front of `mtls ca ocsp` (issue 14, OCSP at 2x openssl): answers it gave before come from a cache in
 * native code, signed there again for a request with a nonce. What must hold: openssl verifies those answers (the
 * signature, the echoed nonce); a revocation shows in the very next answer, whoever made it; the HTTP side refuses
 * what it must and never hangs.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CertificateAuthority } from '../../src/ca/authority.js';
import { OcspResponder } from '../../src/ca/ocsp-responder.js';
import { serveOcsp, type OcspServer } from '../../src/ca/ocsp-server.js';
import { nativeUnavailable } from '../../src/proxy/native.js';
import { readCertificates } from '../../src/pki/certificate.js';
import { encodeOid, readSingle, seq, tlv } from '../../src/pki/der.js';
import { ocspRequest } from '../../src/pki/ocsp-check.js';
import { SqliteStore } from '../../src/store/sqlite.js';
import { mtls, ocspArgs, openssl, tempDir } from '../helpers/pki.js';

const skip = nativeUnavailable();

describe('mtls ca ocsp, native engine', { skip }, () => {
  const dir = tempDir('mtls-ocsp-native-');
  const home = path.join(dir, 'ca');
  const env = { MTLS_HOME: home };
  const f = (n: string) => path.join(dir, n);
  let ca: CertificateAuthority;
  let server: OcspServer;
  let url = '';
  const errors: string[] = [];
  /** `openssl ocsp` about `files`, checked against the root: its output (status per file, nonce and signature). */
  const askArgs = (files: string[]) =>
    ocspArgs(
      files.map((x): [string, string] => [path.join(home, 'intermediate.crt'), f(x)]),
      url,
      path.join(home, 'root.crt'),
    );
  const ask = async (files: string[], extra: string[] = []) => {
    // Not spawnSync: the responder runs in this process, and its JavaScript half must keep running meanwhile.
    const r = await run('openssl', [...askArgs(files), ...extra]);
    return r.stdout + r.stderr;
  };
  const run = (cmd: string, args: string[]) =>
    new Promise<{ stdout: string; stderr: string }>((resolve) =>
      execFile(cmd, args, { timeout: 20_000 }, (_err, stdout, stderr) => resolve({ stdout, stderr })),
    );
  const issue = (name: string) => assert.equal(mtls(['issue', 'client', name, '--out', dir], { env }).status, 0);
  /** Sends raw bytes (or lets `send` write them) and returns all the server sends until it closes (or 3 s pass). */
  const raw = (bytes: string | Buffer | ((s: net.Socket) => void), port = server.port) =>
    new Promise<string>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      const got: Buffer[] = [];
      s.on('data', (d) => got.push(d));
      s.on('error', () => {});
      s.on('close', () => resolve(Buffer.concat(got).toString('latin1')));
      s.setTimeout(3000, () => s.destroy());
      if (typeof bytes === 'function') bytes(s);
      else s.write(bytes);
    });

  before(async () => {
    assert.equal(mtls(['ca', 'init', '--name', 'Native'], { env }).status, 0);
    ca = await CertificateAuthority.open(home);
    server = await serveOcsp(new OcspResponder(ca), home, { host: '127.0.0.1', port: 0 }, (m) => errors.push(m), {
      engine: 'native',
    });
    assert.equal(server.engine, 'native');
    url = `http://127.0.0.1:${server.port}/ocsp`;
  });
  after(async () => {
    await server?.close();
    await ca?.close();
  });

  it('signs answers to a request with a nonce in native code: openssl verifies them and their nonces', async () => {
    issue('alice');
    issue('bob');
    const before = server.stats();
    for (let i = 0; i < 4; i++) {
      const out = await ask(['alice.crt', 'bob.crt']); // a new nonce each time, which openssl checks
      assert.match(out, /Response verify OK/);
      assert.doesNotMatch(out, /nonce/i, 'no nonce warning or error');
      assert.match(out, /alice\.crt: good/);
      assert.match(out, /bob\.crt: good/);
    }
    const after = server.stats();
    assert.equal(after.misses - before.misses, 1, 'JavaScript answered the first request only');
    assert.equal(after.hits - before.hits, 3, 'the others were signed by the native front');
    // The same CertIDs without a nonce: the whole answer is kept too.
    for (let i = 0; i < 2; i++) assert.match(await ask(['alice.crt', 'bob.crt'], ['-no_nonce']), /Response verify OK/);
    assert.equal(server.stats().hits - after.hits, 1);
  });

  it('a revocation by another process shows in the very next answer, with and without a nonce', async () => {
    for (let round = 0; round < 2; round++) {
      const name = `victim${round}`;
      issue(name);
      for (let i = 0; i < 2; i++) {
        assert.match(await ask([`${name}.crt`], ['-no_nonce']), new RegExp(`${name}\\.crt: good`));
        assert.match(await ask([`${name}.crt`]), new RegExp(`${name}\\.crt: good`));
      }
      assert.equal(mtls(['revoke', f(`${name}.crt`)], { env }).status, 0);
      // While this process's JavaScript is blocked (spawnSync), it cannot notice the revocation: only the native
      // front's own check of the marker keeps it from answering "good" from its cache. (It hands the request to
      // JavaScript, which cannot answer until openssl gives up.)
      for (const extra of [['-no_nonce'], []]) {
        const blocked = openssl([...askArgs([`${name}.crt`]), ...extra, '-timeout', '1']);
        assert.doesNotMatch(blocked.stdout + blocked.stderr, /: good/, `round ${round} ${extra.join('')}`);
      }
      assert.match(await ask([`${name}.crt`], ['-no_nonce']), new RegExp(`${name}\\.crt: revoked`));
      assert.match(await ask([`${name}.crt`]), new RegExp(`${name}\\.crt: revoked`));
    }
  });

  it('a revocation another replica made (the inventory alone changed) shows within a second', async () => {
    issue('carol');
    for (let i = 0; i < 2; i++) assert.match(await ask(['carol.crt'], ['-no_nonce']), /carol\.crt: good/);
    const serial = openssl(['x509', '-in', f('carol.crt'), '-noout', '-serial'])
      .stdout.trim()
      .split('=')[1]!;
    // As a replica on another machine would: the inventory changes, this home's files (the marker) do not.
    const marker = fs.statSync(path.join(home, 'crl', '.revoked'));
    const other = new SqliteStore(path.join(home, 'inventory.db'));
    await other.revoke(serial.toLowerCase(), 'keyCompromise', new Date(), () => {});
    await other.close();
    assert.equal(fs.statSync(path.join(home, 'crl', '.revoked')).mtimeMs, marker.mtimeMs);
    const t0 = Date.now();
    while (!/carol\.crt: revoked/.test(await ask(['carol.crt'], ['-no_nonce']))) {
      assert.ok(Date.now() - t0 < 1000, 'still good after 1 s');
    }
  });

  it('refuses what it must over HTTP, in one line, and keeps answering', async () => {
    assert.match(await raw(`POST /ocsp HTTP/1.1\r\nhost: x\r\nx-big: ${'a'.repeat(9000)}\r\n\r\n`), /^HTTP\/1\.1 431 /);
    assert.match(
      await raw('POST /ocsp HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n'),
      / 411 /,
    );
    assert.match(await raw('POST /ocsp HTTP/1.1\r\ncontent-length: 99999\r\n\r\n'), /^HTTP\/1\.1 413 /);
    assert.match(await raw('POST /ocsp HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab'), / 400 /);
    assert.match(await raw('DELETE /ocsp HTTP/1.1\r\nconnection: close\r\n\r\n'), / 405 [^]*allow: GET, POST/);
    assert.match(await raw('garbage\r\n\r\n'), / 400 /);
    assert.match(await raw('GET / HTTP/2.0\r\n\r\n'), / 505 /);
    // Two requests on one connection (pipelined): two answers, in order; HTTP/1.0 closes after its answer.
    const two = await raw('GET /crl/none HTTP/1.1\r\nhost: x\r\n\r\nGET /ocsp HTTP/1.0\r\nhost: x\r\n\r\n');
    assert.deepEqual(
      [...two.matchAll(/^HTTP\/1\.1 (\d+)/gm)].map((m) => m[1]),
      ['404', '404'],
    );
    assert.match(two, /connection: keep-alive[^]*connection: close/);
    // A nonce longer than RFC 8954 allows (33 octets) is never signed natively: JavaScript says malformedRequest,
    // each time.
    const alice = readCertificates(fs.readFileSync(f('alice.crt')), 'alice.crt')[0]!;
    const plain = ocspRequest(alice, ca.intermediate, { nonce: false }).der;
    const list = readSingle(readSingle(plain, 'req').value, 'tbs').value;
    const nonceExt = seq(seq(encodeOid('1.3.6.1.5.5.7.48.1.2'), tlv(0x04, tlv(0x04, Buffer.alloc(33, 7)))));
    const hostile = seq(seq(list, tlv(0xa2, nonceExt)));
    const misses = server.stats().misses;
    for (let i = 0; i < 2; i++) {
      const r = await fetch(url, { method: 'POST', body: hostile });
      assert.deepEqual([...Buffer.from(await r.arrayBuffer())], [0x30, 0x03, 0x0a, 0x01, 0x01], 'malformedRequest');
    }
    assert.equal(server.stats().misses - misses, 2);
    assert.match(await ask(['alice.crt']), /alice\.crt: good/, 'still answering');
    assert.deepEqual(errors, []);
  });

  it('answers from its cache a request that comes in pieces, and one whose client half-closes after sending it', async () => {
    const alice = readCertificates(fs.readFileSync(f('alice.crt')), 'alice.crt')[0]!;
    const body = ocspRequest(alice, ca.intermediate, { nonce: false }).der;
    const head = `POST /ocsp HTTP/1.1\r\nhost: x\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n`;
    await fetch(url, { method: 'POST', body }); // the first answer comes from JavaScript and is kept
    const hits = server.stats().hits;
    // The head alone, the body 200 ms later: the connection waits in the epoll set for the rest.
    const pieces = await raw((s) => {
      s.write(head);
      setTimeout(() => s.write(body), 200);
    });
    assert.match(pieces, /^HTTP\/1\.1 200 /);
    // The whole request, then the client's FIN: answered, not dropped as a client gone away.
    const halfClosed = await raw((s) => s.end(Buffer.concat([Buffer.from(head), body])));
    assert.match(halfClosed, /^HTTP\/1\.1 200 /);
    assert.equal(server.stats().hits - hits, 2, 'both from the native cache');
  });

  it('closes a client that sends half a request within 10 s and holds nothing for it', async () => {
    const s = net.connect(server.port, '127.0.0.1');
    s.on('error', () => {});
    s.write('POST /ocsp HTTP/1.1\r\ncontent-length: 100\r\n\r\nabc');
    const t0 = Date.now();
    await new Promise((r) => s.on('close', r));
    const waited = Date.now() - t0;
    assert.ok(waited > 8000 && waited < 12_000, `closed after ${waited} ms`);
    assert.match(await ask(['bob.crt']), /bob\.crt: good/);
  });
});

describe('mtls ca ocsp, native engine, with each kind of CA key', { skip }, () => {
  // Whatever the CA's key, its responders' keys are P-256 (src/ca/ocsp-signers.ts), which the front signs with by a
  // digest and EVP_PKEY_sign on a context made once per key: answers for each kind of CA verify, nonce included.
  for (const keyType of ['ec-p384', 'rsa-2048', 'ed25519'])
    it(`${keyType}: answers signed natively verify, with their nonces`, async () => {
      const dir = tempDir(`mtls-ocsp-native-${keyType}-`);
      const home = path.join(dir, 'ca');
      const env = { MTLS_HOME: home };
      assert.equal(mtls(['ca', 'init', '--name', keyType, '--key-type', keyType], { env }).status, 0);
      assert.equal(mtls(['issue', 'client', 'dave', '--out', dir], { env }).status, 0);
      const ca = await CertificateAuthority.open(home);
      const server = await serveOcsp(new OcspResponder(ca), home, { host: '127.0.0.1', port: 0 }, () => {}, {
        engine: 'native',
      });
      try {
        const args = ocspArgs(
          [[path.join(home, 'intermediate.crt'), path.join(dir, 'dave.crt')]],
          `http://127.0.0.1:${server.port}/ocsp`,
          path.join(home, 'root.crt'),
        );
        const before = server.stats();
        for (let i = 0; i < 3; i++) {
          const out = await new Promise<string>((resolve) =>
            execFile('openssl', [...args, '-resp_text'], { timeout: 20_000 }, (_e, o, e) => resolve(o + e)),
          );
          assert.match(out, /Response verify OK/);
          assert.match(out, /dave\.crt: good/);
          assert.doesNotMatch(out, /no nonce|nonce verify error/i, 'no nonce warning or error');
          assert.match(out, /OCSP Nonce/, 'the nonce echoed');
          assert.match(out, /Signature Algorithm: /);
          assert.match(out.split('Signature Algorithm: ')[1]!, /^ecdsa-with-SHA256/);
        }
        const after = server.stats();
        assert.equal(after.hits - before.hits, 2, 'two of the three signed by the native front');
      } finally {
        await server.close();
        await ca.close();
      }
    });
});
