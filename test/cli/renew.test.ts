/** `mtls renew CERT` (issue 16): same names, profile and lifetime, a new key; refused for what this CA did not issue. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { before, it } from 'node:test';
import { parseCertificate, readCertificates } from '../../src/pki/certificate.js';
import { mtls, openssl, tempDir } from '../helpers/pki.js';

let env: NodeJS.ProcessEnv;
let other: NodeJS.ProcessEnv;
before(() => {
  env = { MTLS_HOME: path.join(tempDir(), 'ca') };
  other = { MTLS_HOME: path.join(tempDir(), 'ca') };
  assert.equal(mtls(['ca', 'init', '--name', 'Renew Test', '--trust-domain', 'example.org'], { env }).status, 0);
  assert.equal(mtls(['ca', 'init', '--name', 'Other CA'], { env: other }).status, 0);
});

const leaf = (file: string) => readCertificates(fs.readFileSync(file), file)[0]!;

it('renews in place: same SANs and profile, same lifetime, new serial and new key; openssl verifies it', () => {
  const out = tempDir('mtls-renew-');
  const issued = mtls(
    ['issue', 'server', 'api', '--dns', 'api.example.org', '--ip', '127.0.0.1', '--validity', '30d', '--out', out],
    { env },
  );
  assert.equal(issued.status, 0, issued.stderr);
  const crt = path.join(out, 'api.crt');
  const before = leaf(crt);
  const oldKey = fs.readFileSync(path.join(out, 'api.key'), 'utf8');

  const r = mtls(['renew', crt, '--json'], { env });
  assert.equal(r.status, 0, r.stderr);
  const after = leaf(crt);
  assert.notEqual(after.serialHex, before.serialHex);
  assert.deepEqual(after.san?.dns, ['api.example.org']);
  assert.deepEqual(after.san?.ip, ['127.0.0.1']);
  assert.deepEqual(after.extKeyUsage, before.extKeyUsage);
  const life = (c: ReturnType<typeof parseCertificate>) => c.notAfter.getTime() - c.notBefore.getTime();
  assert.ok(Math.abs(life(after) - life(before)) < 5000, 'the same lifetime');
  assert.notEqual(fs.readFileSync(path.join(out, 'api.key'), 'utf8'), oldKey, 'a new key');
  assert.equal(fs.statSync(path.join(out, 'api.key')).mode & 0o777, 0o600);
  const v = openssl([
    'verify',
    '-x509_strict',
    '-CAfile',
    path.join(out, 'ca.crt'),
    '-untrusted',
    crt,
    '-purpose',
    'sslserver',
    crt,
  ]);
  assert.equal(v.status, 0, v.stdout + v.stderr);
  const list = JSON.parse(mtls(['ca', 'list', '--json'], { env }).stdout) as { serial: string }[];
  assert.ok(list.some((x) => x.serial === before.serialHex) && list.some((x) => x.serial === after.serialHex));
});

it('a certificate of another CA is refused with one line, and nothing is written', () => {
  const out = tempDir('mtls-renew-');
  assert.equal(mtls(['issue', 'client', 'web', '--out', out], { env: other }).status, 0);
  const crt = path.join(out, 'web.crt');
  const bytes = fs.readFileSync(crt);
  const r = mtls(['renew', crt], { env });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /was not issued by the CA at .*; renew it with the CA that issued it \(--home\)/);
  assert.equal(r.stderr.trim().split('\n').length, 1);
  assert.deepEqual(fs.readFileSync(crt), bytes);
  assert.equal(mtls(['renew', path.join(out, 'missing.crt')], { env }).status, 2);
});
