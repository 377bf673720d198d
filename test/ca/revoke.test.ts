/**
 * Revocation from the CA (issue 14): `mtls revoke` records it and publishes the CRLs in one step, `mtls ca crl`
 * publishes fresh ones; checked with openssl (crl -verify, verify -crl_check_all) and enforced by a running proxy.
 */
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { before, describe, it } from 'node:test';
import { CertificateAuthority } from '../../src/ca/authority.js';
import { crlPaths } from '../../src/ca/revocation.js';
import { encodeCrl } from '../../src/pki/crl-writer.js';
import { parseCrl, readCrls } from '../../src/pki/crl.js';
import { encodePem } from '../../src/pki/pem.js';
import { readCertificates } from '../../src/pki/certificate.js';
import { generateKeyPair } from '../../src/pki/keys.js';
import { DAY } from '../../src/ca/init.js';
import { nativeUnavailable } from '../../src/proxy/native.js';
import { freePort, listen, until } from '../helpers/endpoints.js';
import { BIN, mtls, mtlsAsync, openssl, tempDir } from '../helpers/pki.js';
import { startProcess, startProxy, trackServers } from '../helpers/process.js';

const servers = trackServers();

interface Home {
  home: string;
  out: string;
  env: NodeJS.ProcessEnv;
  file: (name: string) => string;
  run: (args: string[]) => ReturnType<typeof mtls>;
}

function newCa(name = 'Rev'): Home {
  const dir = tempDir('mtls-revoke-');
  const home = path.join(dir, 'ca');
  const out = path.join(dir, 'out');
  const env = { MTLS_HOME: home };
  const run = (args: string[]) => mtls(args, { env });
  assert.equal(run(['ca', 'init', '--name', name, '--trust-domain', 'rev.example']).status, 0);
  return { home, out, env, run, file: (n) => path.join(out, n) };
}

const crlNumber = (file: string) =>
  BigInt(
    openssl(['crl', '-inform', 'DER', '-in', file, '-noout', '-crlnumber']).stdout.trim().replace('crlNumber=', ''),
  );

const crlText = (file: string, der = true) =>
  openssl(['crl', ...(der ? ['-inform', 'DER'] : []), '-in', file, '-noout', '-text']).stdout;

describe('mtls revoke and mtls ca crl', () => {
  let ca: Home;
  before(() => {
    ca = newCa();
    for (const args of [
      ['client', 'alice', '--spiffe-id', 'spiffe://rev.example/alice'],
      ['client', 'bob', '--spiffe-id', 'spiffe://rev.example/bob'],
      ['server', 'api', '--dns', 'localhost', '--ip', '127.0.0.1'],
    ])
      assert.equal(ca.run(['issue', ...args, '--out', ca.out]).status, 0);
  });

  it('revokes by file with a reason, lists it, and publishes CRLs that openssl checks and enforces', () => {
    const r = ca.run(['revoke', ca.file('alice.crt'), '--reason', 'keyCompromise']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^revoked [0-9a-f]+ \(CN=alice, O=Rev\), reason keyCompromise, at \d{4}-/);
    const list = JSON.parse(ca.run(['ca', 'list', '--json']).stdout) as {
      subject: string;
      status: string;
      reason?: string;
      revokedAt?: string;
    }[];
    const alice = list.find((x) => x.subject === 'CN=alice, O=Rev')!;
    assert.equal(alice.status, 'revoked');
    assert.equal(alice.reason, 'keyCompromise');
    assert.ok(Math.abs(Date.parse(alice.revokedAt!) - Date.now()) < 60_000);
    assert.equal(list.find((x) => x.subject === 'CN=bob, O=Rev')!.status, 'valid');

    const files = crlPaths(ca.home);
    const root = path.join(ca.home, 'root.crt');
    const int = path.join(ca.home, 'intermediate.crt');
    // Each CRL is signed by its issuer, with an AKI, a CRL number and the reason.
    assert.match(
      openssl(['crl', '-inform', 'DER', '-in', files.intermediate, '-CAfile', int, '-noout']).stderr,
      /verify OK/,
    );
    assert.match(openssl(['crl', '-inform', 'DER', '-in', files.root, '-CAfile', root, '-noout']).stderr, /verify OK/);
    const text = crlText(files.intermediate);
    assert.match(text, /Key Compromise/);
    assert.match(text, /CRL Number: \n\s+2\b/, 'the second publication: the first was at ca init');
    assert.match(text, /Authority Key Identifier/);
    assert.match(text, /Next Update: /);
    // The PEM file holds both CRLs, as -crl_check_all needs them.
    const verify = (leaf: string) =>
      openssl(['verify', '-crl_check_all', '-CAfile', root, '-untrusted', int, '-CRLfile', files.pem, ca.file(leaf)]);
    const refused = verify('alice.crt');
    assert.notEqual(refused.status, 0);
    assert.match(refused.stdout + refused.stderr, /certificate revoked/);
    assert.equal(verify('bob.crt').status, 0, verify('bob.crt').stdout + verify('bob.crt').stderr);
    assert.equal(readCrls(fs.readFileSync(files.pem), 'crl.pem').length, 2);
  });

  it('mtls verify --crl shows the revocation status of each certificate of the path and where it came from', () => {
    const files = crlPaths(ca.home);
    const verify = (name: string, ...crl: string[]) =>
      ca.run(['verify', ca.file(`${name}.crt`), '--purpose', 'client', ...crl.flatMap((f) => ['--crl', f])]);
    const bob = verify('bob', files.pem);
    assert.equal(bob.status, 0, bob.stdout + bob.stderr);
    assert.match(bob.stdout, /revocation: 'bob' good \(CRL of 'CN=Rev Intermediate, O=Rev', 1 entry, next update 20/);
    assert.match(bob.stdout, /revocation: 'Rev Intermediate' good \(CRL of 'CN=Rev Root, O=Rev', 0 entries/);
    assert.match(bob.stdout, /revocation: 'Rev Root' good \(trust anchor\)/);
    const alice = verify('alice', files.pem);
    assert.equal(alice.status, 1, alice.stdout);
    assert.match(
      alice.stdout,
      /INVALID\n {2}- 'alice' \(serial [0-9a-f]+\) is revoked by the CRL of 'CN=Rev Intermediate/,
    );
    const json = JSON.parse(ca.run(['verify', ca.file('alice.crt'), '--crl', files.pem, '--json']).stdout) as {
      valid: boolean;
      chain: { revocation?: { status: string } }[];
      problems: { code: string }[];
    };
    assert.equal(json.valid, false);
    assert.deepEqual(
      json.chain.map((c) => c.revocation?.status),
      ['revoked', 'good', 'good'],
    );
    assert.equal(json.problems[0]!.code, 'REVOKED');
    // Only the intermediate's CRL (DER): the intermediate's own status is unknown, which fails.
    const partial = verify('bob', files.intermediate);
    assert.equal(partial.status, 1, partial.stdout);
    assert.match(
      partial.stdout,
      /no CRL given for 'CN=Rev Root, O=Rev', the issuer of 'Rev Intermediate'.*add that CA's CRL with --crl/,
    );
    // A CRL that is not one: exit 2, one line.
    const bad = verify('bob', ca.file('bob.crt'));
    assert.equal(bad.status, 2, bad.stdout + bad.stderr);
    assert.equal(bad.stderr.trim().split('\n').length, 1, bad.stderr);
  });

  it('ca crl publishes a new CRL with a higher number; --out writes PEM or the DER intermediate CRL', () => {
    const files = crlPaths(ca.home);
    const before = parseCrl(fs.readFileSync(files.intermediate));
    fs.copyFileSync(files.intermediate, path.join(ca.out, 'before.crl'));
    const out = path.join(ca.out, 'int.crl');
    const r = ca.run(['ca', 'crl', '--out', out, '--der', '--next-update', '6h']);
    assert.equal(r.status, 0, r.stderr);
    const after = parseCrl(fs.readFileSync(out));
    assert.ok(after.der.equals(fs.readFileSync(files.intermediate)));
    assert.deepEqual([...after.revoked], [...before.revoked]);
    assert.ok(crlNumber(out) > crlNumber(path.join(ca.out, 'before.crl')), 'the CRL number increases');
    const lifetime = after.nextUpdate!.getTime() - after.thisUpdate.getTime();
    assert.equal(lifetime, 6 * 3600e3);
    const pemOut = path.join(ca.out, 'all.pem');
    assert.equal(ca.run(['ca', 'crl', '--out', pemOut]).status, 0);
    assert.equal(readCrls(fs.readFileSync(pemOut), 'all.pem').length, 2);
    assert.equal(ca.run(['ca', 'crl', '--der']).status, 2);
    assert.equal(ca.run(['ca', 'crl', '--next-update', '10s']).status, 2);
  });

  it('refuses an unknown, already revoked or foreign certificate, a bad reason or a future time: nothing changes', () => {
    const files = crlPaths(ca.home);
    const snapshot = () => ({
      crls: [files.pem, files.intermediate, files.root].map((f) => fs.readFileSync(f).toString('hex')),
      list: ca.run(['ca', 'list', '--json']).stdout,
    });
    const was = snapshot();
    const other = newCa('Other');
    assert.equal(other.run(['issue', 'client', 'mallory', '--out', other.out]).status, 0);
    const cases: [string[], number, RegExp][] = [
      [[ca.file('alice.crt')], 1, /already revoked; nothing changed/],
      [['0123456789abcdef'], 1, /no certificate with serial 0123456789abcdef in this CA's inventory/],
      [[other.file('mallory.crt')], 1, /was issued by 'CN=Other Intermediate, O=Other', not by this CA's/],
      [[ca.file('bob.crt'), '--reason', 'stolen'], 2, /--reason 'stolen' is not a revocation reason; use one of/],
      [[ca.file('bob.crt'), '--at', '2099-01-01T00:00Z'], 2, /is in the future/],
      [['not-a-serial!'], 2, /is neither a serial number \(hex\) nor a certificate file/],
    ];
    for (const [args, code, message] of cases) {
      const r = ca.run(['revoke', ...args]);
      assert.equal(r.status, code, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.match(r.stderr, message);
    }
    assert.deepEqual(snapshot(), was);
  });

  for (const engine of ['native', 'node'] as const)
    it(
      `${engine} engine: revoke by serial; a proxy with --crl HOME/crl/crl.pem refuses the certificate and closes its open connection within 5 s, others stay in`,
      { skip: engine === 'native' ? nativeUnavailable() : undefined },
      async (t) => {
        const [bob, carol] = [`${engine}-bob`, `${engine}-carol`];
        for (const n of [bob, carol])
          assert.equal(
            ca.run(['issue', 'client', n, '--spiffe-id', `spiffe://rev.example/${n}`, '--out', ca.out]).status,
            0,
          );
        const backend = net.createServer((s) => {
          s.on('error', () => undefined);
          s.pipe(s);
        });
        servers.push(backend);
        const target = await listen(backend);
        const port = await freePort();
        const files = crlPaths(ca.home);
        const proxy = await startProxy([
          'server',
          '--listen',
          `127.0.0.1:${port}`,
          '--target',
          `127.0.0.1:${target}`,
          '--cert',
          ca.file('api.crt'),
          '--key',
          ca.file('api.key'),
          '--ca',
          ca.file('ca.crt'),
          '--crl',
          files.pem,
          '--allow',
          'trust-domain:rev.example',
          '--engine',
          engine,
        ]);
        const context = (name: string) =>
          tls.createSecureContext({
            cert: fs.readFileSync(ca.file(`${name}.crt`)),
            key: fs.readFileSync(ca.file(`${name}.key`)),
            ca: fs.readFileSync(ca.file('ca.crt')),
          });
        const echo = (name: string) =>
          new Promise<boolean>((resolve) => {
            const c = tls.connect(
              { host: '127.0.0.1', port, servername: 'localhost', secureContext: context(name) },
              () => c.write('ping'),
            );
            let got = '';
            c.on('data', (d) => {
              got += d;
              if (got === 'ping') {
                c.destroy();
                resolve(true);
              }
            });
            c.on('error', () => undefined);
            c.on('close', () => resolve(got === 'ping'));
          });
        assert.equal(await echo('alice'), false, 'alice was revoked before');
        assert.equal(await echo(bob), true);
        assert.equal(await echo(carol), true);
        // bob keeps a relayed connection open across his revocation.
        const live = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', secureContext: context(bob) });
        live.on('error', () => undefined);
        let liveEcho = '';
        live.on('data', (d) => (liveEcho += d));
        const liveClosed = new Promise<number>((resolve) => live.on('close', () => resolve(Date.now())));
        live.write('live');
        await until(() => liveEcho === 'live', 5000, "bob's live connection relays");
        const serial = (
          JSON.parse(ca.run(['ca', 'list', '--json']).stdout) as { subject: string; serial: string }[]
        ).find((x) => x.subject === `CN=${bob}, O=Rev`)!.serial;
        const r = await mtlsAsync(['revoke', serial, '--reason', 'superseded'], { env: ca.env });
        assert.equal(r.status, 0, r.stderr);
        const t0 = Date.now();
        let refused = false;
        while (!refused && Date.now() - t0 < 5000) {
          refused = !(await echo(bob));
          if (!refused) await new Promise((res) => setTimeout(res, 200));
        }
        t.diagnostic(`bob refused ${Date.now() - t0} ms after mtls revoke returned`);
        assert.ok(refused, `bob was still admitted ${Date.now() - t0} ms after mtls revoke`);
        const closedAt = await Promise.race([liveClosed, new Promise<number>((res) => setTimeout(() => res(0), 5000))]);
        assert.ok(closedAt > 0, "bob's live connection was not closed within 5 s of the revocation");
        t.diagnostic(`bob's live connection closed ${closedAt - t0} ms after mtls revoke returned`);
        // carol is not revoked and still gets in (on the node engine the reload once closed a connection of bob's
        // while its target was connecting, and that crashed the proxy: test/proxy/admission-resets.test.ts).
        let carolIn = false;
        for (const t1 = Date.now(); !carolIn && Date.now() - t1 < 2000;) carolIn = await echo(carol);
        assert.ok(carolIn, `carol is not revoked and still gets in: ${proxy.output().slice(-3000)}`);
      },
    );
});

describe('mtls serve --crl', () => {
  it('refuses a certificate within 5 s of mtls revoke, without a restart', async (t) => {
    const ca = newCa('Serve');
    assert.equal(
      ca.run(['issue', 'client', 'dave', '--spiffe-id', 'spiffe://rev.example/dave', '--out', ca.out]).status,
      0,
    );
    assert.equal(ca.run(['ca', 'crl']).status, 0);
    const port = await freePort();
    await startProcess(
      process.execPath,
      [BIN, 'serve', '--port', String(port), '--crl', crlPaths(ca.home).pem, '--allow', 'trust-domain:rev.example'],
      /listening on/,
      ca.env,
    );
    const hello = () =>
      new Promise<string>((resolve) => {
        const c = tls.connect({
          host: '127.0.0.1',
          port,
          servername: 'localhost',
          cert: fs.readFileSync(ca.file('dave.crt')),
          key: fs.readFileSync(ca.file('dave.key')),
          ca: fs.readFileSync(ca.file('ca.crt')),
        });
        let got = '';
        c.on('data', (d) => (got += d));
        c.on('error', () => undefined);
        c.on('close', () => resolve(got));
      });
    assert.match(await hello(), /hello spiffe:\/\/rev\.example\/dave/);
    assert.equal(ca.run(['revoke', ca.file('dave.crt')]).status, 0);
    const t0 = Date.now();
    let answer = 'x';
    while (answer !== '' && Date.now() - t0 < 5000) {
      answer = await hello();
      if (answer) await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(answer, '', `dave still served ${Date.now() - t0} ms after mtls revoke`);
    t.diagnostic(`refused ${Date.now() - t0} ms after mtls revoke returned`);
  });
});

describe('ca init --url: where certificates say their revocation status is published', () => {
  it('puts a CRL distribution point and an OCSP URL in new certificates, only with --url', () => {
    const dir = tempDir('mtls-url-');
    const env = { MTLS_HOME: path.join(dir, 'ca') };
    const init = mtls(['ca', 'init', '--name', 'Url', '--url', 'http://ca.example:9080/'], { env });
    assert.equal(init.status, 0, init.stderr);
    assert.match(
      init.stdout,
      /revocation: +http:\/\/ca\.example:9080\/crl\/intermediate\.crl, http:\/\/ca\.example:9080\/ocsp/,
    );
    assert.equal(mtls(['issue', 'server', 'web', '--dns', 'web.example.org', '--out', dir], { env }).status, 0);
    const [leaf, int] = readCertificates(fs.readFileSync(path.join(dir, 'web.crt')), 'web.crt');
    assert.deepEqual(leaf!.crlUrls, ['http://ca.example:9080/crl/intermediate.crl']);
    assert.deepEqual(leaf!.ocspUrls, ['http://ca.example:9080/ocsp']);
    assert.deepEqual(int!.crlUrls, ['http://ca.example:9080/crl/root.crl']);
    assert.deepEqual(int!.ocspUrls, ['http://ca.example:9080/ocsp'], 'the responder answers for the intermediate too');
    const text = openssl(['x509', '-in', path.join(dir, 'web.crt'), '-noout', '-text']).stdout;
    assert.match(
      text,
      /X509v3 CRL Distribution Points: \n\s+Full Name:\s+URI:http:\/\/ca\.example:9080\/crl\/intermediate\.crl/,
    );
    assert.match(text, /OCSP - URI:http:\/\/ca\.example:9080\/ocsp/);
    // Still valid under the strict profile (both extensions well formed and not critical), and for OpenSSL.
    const v = mtls(['verify', path.join(dir, 'web.crt'), '--purpose', 'server', '--dns', 'web.example.org'], { env });
    assert.equal(v.status, 0, v.stdout);
    // Without --url: neither.
    const plain = newCa('Plain');
    assert.equal(plain.run(['issue', 'client', 'c', '--out', plain.out]).status, 0);
    const [c] = readCertificates(fs.readFileSync(plain.file('c.crt')), 'c.crt');
    assert.equal(c!.crlUrls, undefined);
    assert.equal(c!.ocspUrls, undefined);
    for (const bad of ['ftp://x/', 'http://u:p@x/', 'http://x/?q=1', 'not a url']) {
      const r = mtls(['ca', 'init', '--url', bad], { env: { MTLS_HOME: path.join(tempDir(), 'ca') } });
      assert.equal(r.status, 2, bad);
      assert.match(r.stderr, /--url/);
    }
  });
});

describe('CRLs at scale and with expired entries', () => {
  it('leaves expired certificates out of the CRL', async () => {
    const ca = newCa('Expiry');
    const authority = await CertificateAuthority.open(ca.home);
    try {
      const old = await authority.issue({
        profile: 'client',
        name: 'old',
        names: { spiffeId: 'spiffe://rev.example/old' },
        validityMs: 60_000,
      });
      const live = await authority.issue({
        profile: 'client',
        name: 'live',
        names: { spiffeId: 'spiffe://rev.example/live' },
      });
      await authority.revoke(old.certificate, { reason: 'superseded' });
      await authority.revoke(live.certificate.serialHex, { reason: 'keyCompromise' });
      const revokedNow = parseCrl(fs.readFileSync(crlPaths(ca.home).intermediate));
      assert.equal(revokedNow.revoked.size, 2);
      // Two minutes on, 'old' has expired: the next CRL leaves it out.
      await authority.publishCrl({ now: new Date(Date.now() + 2 * 60_000) });
      const crl = parseCrl(fs.readFileSync(crlPaths(ca.home).intermediate));
      assert.deepEqual([...crl.revoked], [live.certificate.serialHex]);
      const rows = await authority.store.list();
      assert.equal(rows.find((x) => x.serial === old.certificate.serialHex)!.status, 'revoked');
    } finally {
      await authority.close();
    }
  });

  it('a revocation appends to the last CRL only when that file is the last publication; else it is rebuilt', async () => {
    const ca = newCa('Append');
    const authority = await CertificateAuthority.open(ca.home);
    const file = crlPaths(ca.home).intermediate;
    const serials = () => [...parseCrl(fs.readFileSync(file)).revoked];
    const verified = () =>
      openssl(['crl', '-inform', 'DER', '-in', file, '-CAfile', path.join(ca.home, 'intermediate.crt'), '-noout'])
        .stderr;
    try {
      const issue = (name: string, validityMs?: number) =>
        authority.issue({
          profile: 'client',
          name,
          names: { spiffeId: `spiffe://rev.example/${name}` },
          ...(validityMs ? { validityMs } : {}),
        });
      const [a, b, c, d, e, f, g] = [
        await issue('a'),
        await issue('b'),
        await issue('c'),
        await issue('d', 60_000),
        await issue('e'),
        await issue('f'),
        await issue('g'),
      ];
      const t0 = Date.now();
      await authority.revoke(a.certificate, { at: new Date(t0 - 1000) });
      // b was revoked earlier than a (--at): a CRL built from the inventory orders by time (b, a); an append adds
      // b after a. The order shows which path was taken.
      await authority.revoke(b.certificate, { at: new Date(t0 - 60_000) });
      assert.deepEqual(
        serials(),
        [a, b].map((x) => x.certificate.serialHex),
        'appended',
      );
      // Someone replaced the file: it is not the last publication, so the CRL is built from the inventory.
      fs.writeFileSync(file, Buffer.from('not a CRL'));
      await authority.revoke(c.certificate, { at: new Date(t0 - 120_000) });
      assert.deepEqual(
        serials(),
        [c, b, a].map((x) => x.certificate.serialHex),
        'rebuilt after tampering',
      );
      await authority.revoke(d.certificate);
      assert.deepEqual(
        serials(),
        [c, b, a, d].map((x) => x.certificate.serialHex),
        'appended',
      );
      // Two minutes on, d has expired: the count no longer matches the file, the rebuilt CRL leaves d out.
      await authority.revoke(e.certificate, { now: new Date(Date.now() + 2 * 60_000) });
      assert.deepEqual(
        serials(),
        [c, b, a, e].map((x) => x.certificate.serialHex),
        'rebuilt without the expired one',
      );
      // The inventory changed behind the CA's back (f revoked by another tool, a restored backup), the file did not:
      // the counts disagree and the CRL is rebuilt with f. (A count kept from the last publication instead of
      // counted, tried for speed, appended here and left f out.) And g is revoked as of 4 minutes ago, published
      // 3 minutes from now: d, expired by then, stays out though it had not expired by g's --at.
      const db = new Database(path.join(ca.home, 'inventory.db'));
      db.prepare(
        "UPDATE certificates SET status = 'revoked', revoked_at = ?, revocation_reason = 'keyCompromise' WHERE serial = ?",
      ).run(t0 - 180_000, f.certificate.serialHex);
      db.close();
      await authority.revoke(g.certificate, { now: new Date(Date.now() + 3 * 60_000), at: new Date(t0 - 240_000) });
      assert.deepEqual(
        serials(),
        [g, f, c, b, a, e].map((x) => x.certificate.serialHex),
        'rebuilt with the revocation made behind its back, without the expired one',
      );
      assert.match(verified(), /verify OK/i);
      const numbers = openssl(['crl', '-inform', 'DER', '-in', file, '-noout', '-crlnumber']).stdout;
      assert.match(numbers, /crlNumber=0x0?7\b/i, 'six publications after the one at init, seven numbers');
    } finally {
      await authority.close();
    }
  });

  it('crl.pem after appended revocations is exactly the PEM of the DER CRLs, even when someone edited it', async () => {
    const ca = newCa('PemReuse');
    const authority = await CertificateAuthority.open(ca.home);
    const files = crlPaths(ca.home);
    const expected = () =>
      encodePem('X509 CRL', fs.readFileSync(files.root)) + encodePem('X509 CRL', fs.readFileSync(files.intermediate));
    try {
      const issued = [];
      for (let i = 0; i < 40; i++)
        issued.push(
          await authority.issue({
            profile: 'client',
            name: `p${i}`,
            names: { spiffeId: `spiffe://rev.example/p${i}` },
          }),
        );
      for (const [i, x] of issued.slice(0, 30).entries()) {
        await authority.revoke(x.certificate, { reason: i % 2 ? 'keyCompromise' : 'unspecified' });
        assert.equal(fs.readFileSync(files.pem, 'utf8'), expected(), `after revocation ${i + 1}`);
      }
      // A line in the middle of crl.pem is changed in place (same size): the next revocation must not carry it on.
      const text = fs.readFileSync(files.pem);
      const at = text.length - 700;
      const fd = fs.openSync(files.pem, 'r+');
      fs.writeSync(fd, Buffer.from(text[at] === 0x41 ? 'B' : 'A'), 0, 1, at);
      fs.closeSync(fd);
      await authority.revoke(issued[30]!.certificate);
      assert.equal(fs.readFileSync(files.pem, 'utf8'), expected(), 'the edited line is not reused');
      for (const x of issued.slice(31)) await authority.revoke(x.certificate);
      assert.equal(fs.readFileSync(files.pem, 'utf8'), expected());
      assert.equal(parseCrl(fs.readFileSync(files.intermediate)).revoked.size, 40);
      const [rootPem, intermediatePem] = fs.readFileSync(files.pem, 'utf8').split(/(?<=-----END X509 CRL-----\n)/);
      fs.mkdirSync(ca.out, { recursive: true });
      fs.writeFileSync(ca.file('i.pem'), intermediatePem!);
      fs.writeFileSync(ca.file('r.pem'), rootPem!);
      const check = (crl: string, issuer: string) =>
        openssl(['crl', '-in', crl, '-CAfile', path.join(ca.home, issuer), '-noout']).stderr;
      assert.match(check(ca.file('i.pem'), 'intermediate.crt'), /verify OK/i);
      assert.match(check(ca.file('r.pem'), 'root.crt'), /verify OK/i);
    } finally {
      await authority.close();
    }
  });

  it('encodes 100,000 entries that openssl and our parser read back', () => {
    const { privateKey, publicKey } = generateKeyPair('ec-p256');
    const entries = Array.from({ length: 100_000 }, (_, i) => ({
      serial: Buffer.from((0x40000000 + i).toString(16), 'hex'),
      revokedAt: new Date(1_780_000_000_000 + i * 1000),
      reason: (i % 3 === 0 ? 'keyCompromise' : 'unspecified') as 'keyCompromise' | 'unspecified',
    }));
    const der = encodeCrl(
      {
        issuerDer: Buffer.from('300f310d300b06035504030c0453636c65', 'hex'),
        issuerKeyId: Buffer.alloc(20, 7),
        thisUpdate: new Date(),
        nextUpdate: new Date(Date.now() + DAY),
        number: 2n ** 70n,
        entries,
      },
      privateKey,
    );
    assert.equal(parseCrl(der).revoked.size, 100_000);
    const dir = tempDir('mtls-crl-100k-');
    const file = path.join(dir, 'big.crl');
    fs.writeFileSync(file, der);
    const text = openssl(['crl', '-inform', 'DER', '-in', file, '-noout', '-crlnumber']);
    assert.equal(text.status, 0, text.stderr);
    assert.equal(text.stdout.trim(), 'crlNumber=0x400000000000000000');
    assert.ok(publicKey);
  });
});
