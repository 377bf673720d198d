/**
 * The CA's OCSP responder (issue 14): `mtls ca ocsp --listen` answered by `openssl ocsp`, which checks the
 * signature (delegated responder certificate), the nonce and the status; revocations and new certificates show in
 * the next answer; malformed, oversized and foreign requests get their OCSP error, never a crash.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { nativeUnavailable } from '../../src/proxy/native.js';
import { freePort } from '../helpers/endpoints.js';
import { BIN, mtls, ocspArgs, openssl, tempDir } from '../helpers/pki.js';
import { startProcess, trackServers } from '../helpers/process.js';

trackServers();

// Both engines: native (the default when built) keeps answers in native code; node answers each in JavaScript.
for (const engine of ['native', 'node'] as const)
  describe(`mtls ca ocsp --engine ${engine}`, { skip: engine === 'native' ? nativeUnavailable() : undefined }, () => {
    const dir = tempDir('mtls-ocsp-');
    const home = path.join(dir, 'ca');
    const env = { MTLS_HOME: home };
    const f = (n: string) => path.join(dir, n);
    let url = '';
    let output: () => string = () => '';
    const run = (args: string[]) => mtls(args, { env });
    /** `openssl ocsp` for the certificates, checking the response with the root: status per file, and all text. */
    const ask = (files: string[], extra: string[] = []) => {
      const pairs = files.map((x): [string, string] => [path.join(home, 'intermediate.crt'), f(x)]);
      const r = openssl([...ocspArgs(pairs, url, path.join(home, 'root.crt')), ...extra]);
      return r.stdout + r.stderr;
    };

    before(async () => {
      assert.equal(run(['ca', 'init', '--name', 'Ocsp']).status, 0);
      for (const n of ['alice', 'bob']) assert.equal(run(['issue', 'client', n, '--out', dir]).status, 0);
      const port = await freePort();
      url = `http://127.0.0.1:${port}/ocsp`;
      const p = await startProcess(
        process.execPath,
        [BIN, 'ca', 'ocsp', '--listen', `127.0.0.1:${port}`, '--engine', engine],
        /OCSP responder on/,
        env,
      );
      output = p.output;
    });

    it('answers good, verified by openssl with the nonce; a revocation shows in the very next answer', () => {
      const first = ask(['alice.crt', 'bob.crt']);
      assert.match(first, /Response verify OK/);
      assert.match(first, /alice\.crt: good/);
      assert.match(first, /bob\.crt: good/);
      // Cached answers (no nonce) must not outlive a revocation.
      assert.match(ask(['alice.crt'], ['-no_nonce']), /alice\.crt: good/);
      assert.equal(run(['revoke', f('alice.crt'), '--reason', 'keyCompromise']).status, 0);
      assert.match(ask(['alice.crt'], ['-no_nonce']), /alice\.crt: revoked/, 'the same request as the cached one');
      for (const extra of [['-no_nonce'], []]) {
        const after = ask(['alice.crt', 'bob.crt'], extra);
        assert.match(after, /Response verify OK/);
        assert.match(
          after,
          /alice\.crt: revoked\n(\s+(This|Next) Update: .*\n)*\s+Reason: keyCompromise\n\s+Revocation Time: /,
        );
        assert.match(after, /bob\.crt: good/);
      }
    });

    it("answers for the root's certificate (the intermediate), signed by a responder the root issued", () => {
      for (const extra of [[], [], ['-no_nonce'], ['-no_nonce']]) {
        const root = path.join(home, 'root.crt');
        const r = openssl([...ocspArgs([[root, path.join(home, 'intermediate.crt')]], url, root), ...extra]);
        const out = r.stdout + r.stderr;
        assert.match(out, /Response verify OK/);
        assert.match(out, /intermediate\.crt: good/);
        assert.doesNotMatch(out, /nonce/i);
      }
      const signer = openssl(['x509', '-in', path.join(home, 'ocsp', 'root-responder.crt'), '-noout', '-text']);
      assert.match(signer.stdout, /OCSP Signing/);
      assert.match(signer.stdout, /OCSP No Check/);
      assert.match(signer.stdout, /Issuer: O = Ocsp, CN = Ocsp Root\n/);
      // One request about certificates of both issuers cannot have one signer: unauthorized.
      const mixed = openssl(
        ocspArgs(
          [
            [path.join(home, 'root.crt'), path.join(home, 'intermediate.crt')],
            [path.join(home, 'intermediate.crt'), f('bob.crt')],
          ],
          url,
        ),
      );
      assert.match(mixed.stdout + mixed.stderr, /unauthorized \(6\)/);
    });

    it('answers for a certificate issued after it started, and unknown for a serial it never issued', () => {
      assert.equal(run(['issue', 'client', 'carol', '--out', dir]).status, 0);
      assert.match(ask(['carol.crt']), /carol\.crt: good/);
      const r = openssl([
        'ocsp',
        '-issuer',
        path.join(home, 'intermediate.crt'),
        '-serial',
        '0x0123456789abcdef',
        '-url',
        url,
        '-CAfile',
        path.join(home, 'root.crt'),
      ]);
      assert.match(r.stdout + r.stderr, /0x0123456789abcdef: unknown/);
    });

    it('signs with a delegated responder certificate: OCSPSigning, ocsp-nocheck, issued by the intermediate', () => {
      const text = openssl(['x509', '-in', path.join(home, 'ocsp', 'responder.crt'), '-noout', '-text']).stdout;
      assert.match(text, /OCSP Signing/);
      assert.match(text, /OCSP No Check/);
      assert.match(text, /Issuer: O = Ocsp, CN = Ocsp Intermediate/);
      assert.equal(fs.statSync(path.join(home, 'ocsp', 'responder.key')).mode & 0o777, 0o600);
    });

    it('records its responder certificate in the inventory; revoked, it is replaced within seconds', async () => {
      const serialOf = (file: string) =>
        openssl(['x509', '-in', file, '-noout', '-serial']).stdout.trim().split('=')[1]!.toLowerCase();
      const responderFile = path.join(home, 'ocsp', 'responder.crt');
      const first = serialOf(responderFile);
      const listed = JSON.parse(run(['ca', 'list', '--json']).stdout) as { serial: string; profile: string }[];
      assert.deepEqual(
        listed.filter((r) => r.profile === 'ocsp').map((r) => r.serial),
        [first],
      );
      const r = run(['revoke', first, '--reason', 'keyCompromise']);
      assert.equal(r.status, 0, r.stderr);
      // Within the responder's 5 s look-up, answers are signed by a new certificate (openssl names it in -resp_text).
      const t0 = Date.now();
      while (serialOf(responderFile) === first) {
        assert.ok(Date.now() - t0 < 10_000, 'still signing with the revoked responder certificate 10 s later');
        ask(['alice.crt'], ['-no_nonce']);
        await new Promise((res) => setTimeout(res, 500));
      }
      const second = serialOf(responderFile);
      const text = ask(['alice.crt'], ['-no_nonce', '-resp_text']);
      assert.match(text, /Response verify OK/);
      assert.match(text.replace(/:/g, '').toLowerCase(), new RegExp(`serial number\\s*${second}`));
      const after = JSON.parse(run(['ca', 'list', '--json']).stdout) as {
        serial: string;
        profile: string;
        status: string;
      }[];
      assert.deepEqual(
        after
          .filter((x) => x.profile === 'ocsp')
          .map((x) => [x.serial, x.status])
          .sort(),
        [
          [first, 'revoked'],
          [second, 'valid'],
        ].sort(),
      );
    });

    it('answers the RFC 5019 GET form, and serves the published CRLs', async () => {
      const req = f('req.der');
      openssl([
        'ocsp',
        '-issuer',
        path.join(home, 'intermediate.crt'),
        '-cert',
        f('bob.crt'),
        '-no_nonce',
        '-reqout',
        req,
      ]);
      const get = await fetch(`${url}/${encodeURIComponent(fs.readFileSync(req).toString('base64'))}`);
      assert.equal(get.status, 200);
      assert.equal(get.headers.get('content-type'), 'application/ocsp-response');
      fs.writeFileSync(f('resp.der'), Buffer.from(await get.arrayBuffer()));
      const r = openssl([
        'ocsp',
        '-respin',
        f('resp.der'),
        '-issuer',
        path.join(home, 'intermediate.crt'),
        '-cert',
        f('bob.crt'),
        '-CAfile',
        path.join(home, 'root.crt'),
      ]);
      assert.match(r.stdout + r.stderr, /bob\.crt: good/);
      const crl = await fetch(url.replace('/ocsp', '/crl/intermediate.crl'));
      assert.equal(crl.status, 200);
      assert.ok(
        Buffer.from(await crl.arrayBuffer()).equals(fs.readFileSync(path.join(home, 'crl', 'intermediate.crl'))),
      );
    });

    it("the CRL's ETag changes with each publication, even one of the same size and modification time", async () => {
      const crlUrl = url.replace('/ocsp', '/crl/intermediate.crl');
      const file = path.join(home, 'crl', 'intermediate.crl');
      const tick = new Date('2026-01-01T00:00:00Z'); // as two publications within one tick of the file system's clock
      assert.equal(run(['ca', 'crl']).status, 0);
      fs.utimesSync(file, tick, tick);
      const first = await fetch(crlUrl);
      const etag = first.headers.get('etag')!;
      assert.ok(Buffer.from(await first.arrayBuffer()).equals(fs.readFileSync(file)));
      assert.equal((await fetch(crlUrl, { headers: { 'if-none-match': etag } })).status, 304, 'unchanged');
      // The next publication in the same inode, of the same size and modification time: ext4 reuses a freed inode
      // soon, and two publications may share one tick of its clock. Held here by a second link, so that the new
      // CRL can be put into it.
      const held = `${file}.held`;
      fs.linkSync(file, held);
      const size = fs.statSync(file).size;
      for (let i = 0; i < 20; i++) {
        assert.equal(run(['ca', 'crl']).status, 0);
        if (fs.statSync(file).size === size) break; // its signature's length varies by an octet or two
      }
      fs.writeFileSync(held, fs.readFileSync(file)); // in place: the first publication's inode
      fs.renameSync(held, file);
      fs.utimesSync(file, tick, tick);
      assert.equal(fs.statSync(file).size, size, 'the same size (only the number, times and signature differ)');
      // The publications above blocked this event loop (spawnSync) while the responder closed the idle kept connection:
      // let fetch's pool see that before it asks again.
      await new Promise((r) => setTimeout(r, 100));
      const second = await fetch(crlUrl, { headers: { 'if-none-match': etag } });
      assert.equal(second.status, 200, 'a new publication is never "not modified"');
      assert.ok(Buffer.from(await second.arrayBuffer()).equals(fs.readFileSync(file)), 'the new CRL, not a kept one');
    });

    it('answers malformedRequest, unauthorized (another CA) and 413 (oversized); it keeps running', async () => {
      const post = async (body: Buffer) => {
        const r = await fetch(url, { method: 'POST', body, headers: { 'content-type': 'application/ocsp-request' } });
        return { status: r.status, body: Buffer.from(await r.arrayBuffer()) };
      };
      for (const garbage of [Buffer.from('hello'), Buffer.alloc(0), Buffer.from([0x30, 0x03, 0x30, 0x01, 0x30])]) {
        const r = await post(garbage);
        assert.equal(r.status, 200);
        assert.deepEqual([...r.body], [0x30, 0x03, 0x0a, 0x01, 0x01], 'malformedRequest');
      }
      assert.equal((await post(Buffer.alloc(17 * 1024, 0x30))).status, 413);
      const other = tempDir('mtls-ocsp-other-');
      const otherEnv = { MTLS_HOME: path.join(other, 'ca') };
      assert.equal(mtls(['ca', 'init', '--name', 'Other'], { env: otherEnv }).status, 0);
      assert.equal(mtls(['issue', 'client', 'mallory', '--out', other], { env: otherEnv }).status, 0);
      const foreign = openssl([
        'ocsp',
        '-issuer',
        path.join(other, 'ca', 'intermediate.crt'),
        '-cert',
        path.join(other, 'mallory.crt'),
        '-url',
        url,
      ]);
      assert.match(foreign.stdout + foreign.stderr, /unauthorized \(6\)/);
      assert.match(ask(['bob.crt']), /bob\.crt: good/, 'still answering');
      assert.doesNotMatch(output(), /internal error|TypeError|RangeError/);
    });
  });
