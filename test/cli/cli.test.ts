import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { makeCert, mtls, openssl, opensslCsr, tempDir, writePem } from '../helpers/pki.js';

/** One CA home for the suite; each test writes into its own --out directory. */
let home: string;
let env: NodeJS.ProcessEnv;
const outDir = () => tempDir('mtls-out-');

before(() => {
  home = path.join(tempDir(), 'ca');
  env = { MTLS_HOME: home };
  const r = mtls(['ca', 'init', '--name', 'CLI Test', '--trust-domain', 'example.org'], { env });
  assert.equal(r.status, 0, r.stderr);
});

function issue(args: string[], out: string) {
  const r = mtls(['issue', ...args, '--out', out], { env });
  assert.equal(r.status, 0, r.stderr);
  return r;
}

describe('mtls issue + openssl verify', () => {
  it('server certificates pass -purpose sslserver and fail sslclient', () => {
    const out = outDir();
    issue(['server', 'api', '--dns', 'api.example.org', '--ip', '127.0.0.1'], out);
    const crt = path.join(out, 'api.crt');
    const ok = openssl([
      'verify',
      '-x509_strict',
      '-CAfile',
      path.join(out, 'ca.crt'),
      '-untrusted',
      crt,
      '-purpose',
      'sslserver',
      '-verify_hostname',
      'api.example.org',
      crt,
    ]);
    assert.equal(ok.status, 0, ok.stderr + ok.stdout);
    const asClient = openssl([
      'verify',
      '-CAfile',
      path.join(out, 'ca.crt'),
      '-untrusted',
      crt,
      '-purpose',
      'sslclient',
      crt,
    ]);
    assert.notEqual(asClient.status, 0);
    assert.match(asClient.stdout + asClient.stderr, /unsuitable certificate purpose/);
    assert.equal(fs.statSync(path.join(out, 'api.key')).mode & 0o777, 0o600);
  });

  it('client and SPIFFE certificates pass -purpose sslclient', () => {
    const out = outDir();
    issue(
      ['client', 'alice', '--spiffe-id', 'spiffe://example.org/ns/a/sa/alice', '--email', 'alice@example.org'],
      out,
    );
    issue(['spiffe', 'spiffe://example.org/ns/prod/sa/web'], out);
    for (const name of ['alice', 'web']) {
      const crt = path.join(out, `${name}.crt`);
      const r = openssl([
        'verify',
        '-x509_strict',
        '-CAfile',
        path.join(out, 'ca.crt'),
        '-untrusted',
        crt,
        '-purpose',
        'sslclient',
        crt,
      ]);
      assert.equal(r.status, 0, r.stderr + r.stdout);
    }
  });

  it('PKCS#12 output opens with openssl pkcs12 and the given password, not with another', () => {
    const out = outDir();
    const pw = path.join(out, 'pw');
    fs.writeFileSync(pw, 'p12 secret\n', { mode: 0o600 });
    issue(['server', 'p12srv', '--dns', 'p.example.org', '--p12', '--p12-password-file', pw], out);
    const p12 = path.join(out, 'p12srv.p12');
    assert.equal(fs.statSync(p12).mode & 0o777, 0o600);
    const r = openssl(['pkcs12', '-in', p12, '-passin', 'pass:p12 secret', '-nodes']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /BEGIN PRIVATE KEY/);
    assert.equal((r.stdout.match(/BEGIN CERTIFICATE/g) ?? []).length, 2);
    const key = openssl(['pkey', '-in', path.join(out, 'p12srv.key'), '-pubout']).stdout;
    const fromP12 = openssl(['pkey', '-pubout'], r.stdout).stdout;
    assert.equal(fromP12, key);
    assert.notEqual(openssl(['pkcs12', '-in', p12, '-passin', 'pass:wrong', '-nodes']).status, 0);
  });

  it('--p12 without a password file writes a random password next to it (0600)', () => {
    const out = outDir();
    issue(['client', 'gen', '--p12'], out);
    const pass = fs.readFileSync(path.join(out, 'gen.p12.pass'), 'utf8').trim();
    assert.ok(pass.length >= 20);
    assert.equal(fs.statSync(path.join(out, 'gen.p12.pass')).mode & 0o777, 0o600);
    assert.equal(openssl(['pkcs12', '-in', path.join(out, 'gen.p12'), '-passin', `pass:${pass}`, '-nokeys']).status, 0);
  });
});

describe('mtls sign', () => {
  const csr = opensslCsr;

  it('signs an openssl CSR with the server profile; the result verifies', () => {
    const out = outDir();
    const { req, key } = csr(out, '/CN=fromcsr', ['subjectAltName=DNS:csr.example.org,IP:10.1.2.3']);
    const r = mtls(['sign', req, '--profile', 'server', '--out', out], { env });
    assert.equal(r.status, 0, r.stderr);
    const crt = path.join(out, 'fromcsr.crt');
    assert.equal(
      openssl([
        'verify',
        '-CAfile',
        path.join(out, 'ca.crt'),
        '-untrusted',
        crt,
        '-purpose',
        'sslserver',
        '-verify_ip',
        '10.1.2.3',
        crt,
      ]).status,
      0,
    );
    assert.equal(fs.existsSync(path.join(out, 'fromcsr.key')), false);
    const ins = JSON.parse(mtls(['inspect', crt, '--key', key, '--json']).stdout);
    assert.deepEqual(ins.objects.at(-1).matchesCertificates, [0]);
  });

  it('refuses CA requests, tampered requests and names outside the trust domain, recording nothing', () => {
    const out = outDir();
    const before = JSON.parse(mtls(['ca', 'list', '--json'], { env }).stdout).length;
    const ca = csr(out, '/CN=sneaky', ['basicConstraints=critical,CA:TRUE']);
    const r1 = mtls(['sign', ca.req, '--profile', 'client', '--out', out], { env });
    assert.equal(r1.status, 1);
    assert.match(r1.stderr, /asks for a CA certificate/);
    const td = csr(out, '/CN=other', ['subjectAltName=URI:spiffe://evil.org/x']);
    const r2 = mtls(['sign', td.req, '--profile', 'spiffe', '--out', out], { env });
    assert.equal(r2.status, 1);
    assert.match(r2.stderr, /outside this CA's trust domain/);
    const good = csr(out, '/CN=tamper');
    const der = openssl(['req', '-in', good.req, '-outform', 'DER']);
    assert.equal(der.status, 0);
    const bytes = fs.readFileSync(good.req, 'utf8');
    // Flip one character of the subject inside the base64 body: the signature no longer matches.
    const body = Buffer.from(bytes.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
    const at = body.indexOf(Buffer.from('tamper'));
    body[at] = 'T'.charCodeAt(0);
    const tampered = path.join(out, 'tampered.csr');
    fs.writeFileSync(
      tampered,
      `-----BEGIN CERTIFICATE REQUEST-----\n${body.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`,
    );
    const r3 = mtls(['sign', tampered, '--profile', 'client', '--out', out], { env });
    assert.equal(r3.status, 2);
    assert.match(r3.stderr, /signature does not verify.*altered/);
    assert.equal(JSON.parse(mtls(['ca', 'list', '--json'], { env }).stdout).length, before);
    assert.deepEqual(
      fs.readdirSync(out).filter((f) => f.endsWith('.crt')),
      [],
    );
  });
});

describe('mtls inspect', () => {
  it('describes a chain with validity, SANs, EKU, SPIFFE ID, order and the matching key', () => {
    const out = outDir();
    issue(['client', 'bob', '--spiffe-id', 'spiffe://example.org/ns/x/sa/bob', '--validity', '3d'], out);
    const r = mtls(['inspect', path.join(out, 'bob.crt'), '--key', path.join(out, 'bob.key'), '--json']);
    assert.equal(r.status, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.equal(j.objects[0].spiffeId, 'spiffe://example.org/ns/x/sa/bob');
    assert.deepEqual(j.objects[0].extKeyUsage, ['clientAuth']);
    assert.match(j.objects[0].validity, /^expires in (2|3) days$/);
    assert.equal(j.objects[1].isCa, true);
    assert.equal(j.chain.ordered, true);
    assert.deepEqual(j.objects[2].matchesCertificates, [0]);
    const text = mtls(['inspect', path.join(out, 'bob.crt')]).stdout;
    assert.match(text, /SPIFFE ID\s+spiffe:\/\/example.org\/ns\/x\/sa\/bob/);
    assert.match(text, /chain order: ok/);
  });

  it('reads DER from stdin, flags a chain out of order and a key that matches nothing', () => {
    const out = outDir();
    issue(['server', 's', '--dns', 's.example.org'], out);
    const [leaf, inter] = fs
      .readFileSync(path.join(out, 's.crt'), 'utf8')
      .match(/-----BEGIN[\s\S]+?END CERTIFICATE-----\n/g)!;
    fs.writeFileSync(path.join(out, 'rev.crt'), inter! + leaf!);
    const rev = JSON.parse(mtls(['inspect', path.join(out, 'rev.crt'), '--json']).stdout);
    assert.equal(rev.chain.ordered, false);
    const der = openssl(['x509', '-in', path.join(out, 's.crt'), '-outform', 'DER']);
    assert.equal(der.status, 0);
    const derBytes = fs.readFileSync(path.join(out, 's.crt'), 'utf8');
    assert.ok(derBytes.length > 0);
    fs.writeFileSync(
      path.join(out, 's.der'),
      Buffer.from(leaf!.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64'),
    );
    const viaStdin = mtls(['inspect', '-', '--json'], { input: fs.readFileSync(path.join(out, 's.der')) });
    assert.equal(viaStdin.status, 0, viaStdin.stderr);
    assert.equal(JSON.parse(viaStdin.stdout).format, 'DER');
    const other = outDir();
    issue(['server', 'o', '--dns', 'o.example.org'], other);
    const mismatch = JSON.parse(
      mtls(['inspect', path.join(out, 's.crt'), '--key', path.join(other, 'o.key'), '--json']).stdout,
    );
    assert.deepEqual(mismatch.objects.at(-1).matchesCertificates, []);
  });

  it('opens PKCS#12 files made by openssl (AES default and legacy 3DES)', () => {
    const out = outDir();
    issue(['server', 'x', '--dns', 'x.example.org'], out);
    for (const extra of [[], ['-keypbe', 'PBE-SHA1-3DES', '-certpbe', 'PBE-SHA1-3DES', '-macalg', 'sha1']]) {
      const p12 = path.join(out, `x${extra.length}.p12`);
      const mk = openssl([
        'pkcs12',
        '-export',
        '-in',
        path.join(out, 'x.crt'),
        '-inkey',
        path.join(out, 'x.key'),
        '-out',
        p12,
        '-passout',
        'pass:pw123456',
        ...extra,
      ]);
      assert.equal(mk.status, 0, mk.stderr);
      fs.writeFileSync(path.join(out, 'pw'), 'pw123456\n', { mode: 0o600 });
      const r = mtls(['inspect', p12, '--password-file', path.join(out, 'pw'), '--json']);
      assert.equal(r.status, 0, r.stderr);
      const j = JSON.parse(r.stdout);
      assert.equal(j.format, 'PKCS#12');
      assert.equal(j.objects.filter((o: { kind: string }) => o.kind === 'certificate').length, 2);
      assert.deepEqual(j.objects.find((o: { kind: string }) => o.kind === 'private-key').matchesCertificates.length, 1);
      fs.writeFileSync(path.join(out, 'bad'), 'nope\n', { mode: 0o600 });
      const wrong = mtls(['inspect', p12, '--password-file', path.join(out, 'bad')]);
      assert.equal(wrong.status, 2);
      assert.match(wrong.stderr, /wrong password/);
    }
  });
});

describe('mtls verify', () => {
  it('exits 0 when valid, 1 with every reason when not, 2 for unusable input', () => {
    const out = outDir();
    issue(['server', 'v', '--dns', 'v.example.org'], out);
    const crt = path.join(out, 'v.crt');
    const ca = path.join(out, 'ca.crt');
    const ok = mtls(['verify', crt, '--ca', ca, '--dns', 'v.example.org', '--purpose', 'server']);
    assert.equal(ok.status, 0, ok.stdout + ok.stderr);
    assert.match(ok.stdout, /OK/);
    const bad = mtls([
      'verify',
      crt,
      '--ca',
      ca,
      '--dns',
      'w.example.org',
      '--purpose',
      'client',
      '--at',
      '2099-01-01T00:00Z',
    ]);
    assert.equal(bad.status, 1);
    assert.match(bad.stdout, /not a client certificate/);
    assert.match(bad.stdout, /is for v\.example\.org, not 'w\.example\.org'/);
    assert.match(bad.stdout, /'v' expired .* ago/);
    const json = JSON.parse(mtls(['verify', crt, '--ca', ca, '--purpose', 'client', '--json']).stdout);
    assert.equal(json.valid, false);
    assert.equal(json.problems[0].code, 'WRONG_PURPOSE');
    const garbage = path.join(out, 'garbage.pem');
    fs.writeFileSync(garbage, '-----BEGIN CERTIFICATE-----\nnot base64!!\n-----END CERTIFICATE-----\n');
    const unusable = mtls(['verify', garbage, '--ca', ca]);
    assert.equal(unusable.status, 2);
    assert.equal(unusable.stderr.trim().split('\n').length, 1);
  });

  it('--profile: strict by default; rfc5280 accepts a leaf without EKU; compat a CA without key identifiers', () => {
    const dir = outDir();
    const root = makeCert({ cn: 'Profile Root', ca: true, ski: 'omit' });
    const leaf = makeCert({ cn: 'no-eku', issuer: root, dns: ['p.example.org'] });
    const ca = writePem(dir, 'root.pem', [root]);
    const crt = writePem(dir, 'leaf.pem', [leaf]);
    const run = (...extra: string[]) => mtls(['verify', crt, '--ca', ca, '--purpose', 'server', ...extra]);
    const strict = run();
    assert.equal(strict.status, 1);
    assert.match(strict.stdout, /'no-eku' has no extended key usage; the strict profile requires serverAuth/);
    assert.match(
      strict.stdout,
      /'Profile Root' is a CA certificate without a subjectKeyIdentifier \(RFC 5280 4\.2\.1\.2\)/,
    );
    const rfc = run('--profile', 'rfc5280');
    assert.equal(rfc.status, 1);
    assert.doesNotMatch(rfc.stdout, /extended key usage/);
    const compat = run('--profile', 'compat', '--json');
    assert.equal(compat.status, 0, compat.stdout);
    assert.equal(JSON.parse(compat.stdout).profile, 'compat');
    const bad = run('--profile', 'lenient');
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--profile 'lenient' must be one of strict, rfc5280, compat/);
  });
});

describe('mtls ca list', () => {
  it('lists the inventory as JSON and filters by expiry', () => {
    const out = outDir();
    issue(['client', 'soon', '--validity', '2d'], out);
    const all = JSON.parse(mtls(['ca', 'list', '--json'], { env }).stdout) as {
      subject: string;
      status: string;
      fingerprint256: string;
    }[];
    const soon = all.find((r) => r.subject === 'CN=soon, O=CLI Test')!;
    assert.equal(soon.status, 'valid');
    assert.match(soon.fingerprint256, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
    const expiring = JSON.parse(mtls(['ca', 'list', '--expiring', '7d', '--json'], { env }).stdout) as {
      subject: string;
    }[];
    assert.ok(expiring.some((r) => r.subject === 'CN=soon, O=CLI Test'));
    assert.ok(expiring.length < all.length);
  });
});

describe('bad input: one clear line, non-zero exit, nothing written', () => {
  const cases: [string, string[], number, RegExp][] = [
    [
      'unknown key type',
      ['issue', 'server', 'k', '--dns', 'k.example.org', '--key-type', 'dsa-1024'],
      2,
      /unknown key type 'dsa-1024'; use one of ec-p256/,
    ],
    ['bad duration', ['issue', 'client', 'd', '--validity', '90 days'], 2, /not a duration; use a number with a unit/],
    [
      'invalid SPIFFE ID',
      ['issue', 'spiffe', 'spiffe://example.org/a/../b'],
      2,
      /not a valid SPIFFE ID: the path segment '\.\.'/,
    ],
    ['bad IP', ['issue', 'server', 'i', '--ip', '300.1.1.1'], 2, /'300\.1\.1\.1' is not an IP address/],
    [
      'bad DNS name',
      ['issue', 'server', 'n', '--dns', 'bad_name.example.org'],
      2,
      /DNS name 'bad_name\.example\.org' is not valid/,
    ],
    [
      'server without names',
      ['issue', 'server', 'nonames'],
      2,
      /give the server's names: --dns NAME and\/or --ip ADDRESS/,
    ],
    ['bad file name', ['issue', 'client', '../escape'], 2, /name '\.\.\/escape' must be/],
    [
      'conflicting flags',
      ['verify', 'x.crt', '--ca', 'y.crt', '--dns', 'a', '--ip', '1.1.1.1'],
      2,
      /either --dns or --ip/,
    ],
    ['missing file', ['inspect', '/nonexistent/file.pem'], 2, /does not exist/],
    ['unknown profile', ['sign', 'x.csr', '--profile', 'admin'], 2, /unknown profile 'admin'/],
    ['malformed PEM', ['inspect', '-'], 2, /not terminated/],
    ['not TLS material', ['inspect', '-'], 2, /neither PEM nor a DER certificate/],
    ['unknown command', ['frobnicate'], 2, /unknown command/],
  ];
  const inputs: Record<string, string> = {
    'malformed PEM': '-----BEGIN CERTIFICATE-----\nAAAA\n',
    'not TLS material': 'hello world',
  };
  for (const [name, args, code, msg] of cases) {
    it(name, () => {
      const out = outDir();
      const r = mtls([...args, ...(args[0] === 'issue' ? ['--out', out] : [])], {
        env,
        input: inputs[name] ?? '',
        cwd: out,
      });
      assert.equal(r.status, code, r.stderr);
      assert.match(r.stderr, msg);
      assert.equal(r.stderr.trim().split('\n').length, 1, `more than one line: ${r.stderr}`);
      assert.deepEqual(fs.readdirSync(out), []);
    });
  }

  it('an unwritable --out directory fails cleanly and records nothing', () => {
    const before = JSON.parse(mtls(['ca', 'list', '--json'], { env }).stdout).length;
    // Tests run as root, which ignores permission bits: a path under a regular file cannot be created by anyone.
    const file = path.join(outDir(), 'a-file');
    fs.writeFileSync(file, '');
    const r = mtls(['issue', 'client', 'nowhere', '--out', path.join(file, 'sub')], { env });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /cannot create --out directory/);
    assert.equal(JSON.parse(mtls(['ca', 'list', '--json'], { env }).stdout).length, before);
  });

  it('ca init refuses to overwrite and never prints key material', () => {
    const r = mtls(['ca', 'init'], { env });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /a CA already exists/);
    assert.doesNotMatch(r.stdout + r.stderr, /PRIVATE KEY/);
  });
});

describe('encrypted CA keys from the command line', () => {
  it('ca init --passphrase-file encrypts; issue needs the right passphrase and says so otherwise', () => {
    const dir = tempDir();
    const caHome = path.join(dir, 'ca');
    const good = path.join(dir, 'good');
    const bad = path.join(dir, 'bad');
    fs.writeFileSync(good, 'a long passphrase\n', { mode: 0o600 });
    fs.writeFileSync(bad, 'another passphrase\n', { mode: 0o600 });
    const e = { MTLS_HOME: caHome };
    assert.equal(mtls(['ca', 'init', '--passphrase-file', good], { env: e }).status, 0);
    assert.match(fs.readFileSync(path.join(caHome, 'intermediate.key'), 'utf8'), /ENCRYPTED PRIVATE KEY/);
    const out = path.join(dir, 'out');
    const missing = mtls(['issue', 'client', 'c', '--out', out], { env: e });
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /is encrypted; give its passphrase with --passphrase-file/);
    const wrong = mtls(['issue', 'client', 'c', '--out', out, '--passphrase-file', bad], { env: e });
    assert.equal(wrong.status, 2);
    assert.match(wrong.stderr, /wrong passphrase/);
    assert.doesNotMatch(wrong.stderr, /another passphrase/);
    assert.equal(fs.existsSync(path.join(out, 'c.crt')), false);
    assert.equal(mtls(['issue', 'client', 'c', '--out', out, '--passphrase-file', good], { env: e }).status, 0);
    assert.equal(JSON.parse(mtls(['ca', 'list', '--json'], { env: e }).stdout).length, 1);
  });
});
