/**
 * Revocation with the root key offline, as `mtls ca init` suggests (issue 14): a revocation never waits for the root
 * key. The root's CRL is published at init; later publications keep the published one (and say when it is due)
 * until the key is back. Before, `mtls revoke` failed whenever the root's CRL had a month or less left (or had never
 * been published), and the stolen key stayed valid.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { CertificateAuthority } from '../../src/ca/authority.js';
import { DAY } from '../../src/ca/init.js';
import { crlPaths } from '../../src/ca/revocation.js';
import { mtls, openssl, tempDir } from '../helpers/pki.js';

/** A CA home whose root key is moved away after `prepare` (which runs with the key at hand). */
async function offlineRoot(prepare: (ca: CertificateAuthority) => Promise<void> = async () => {}) {
  const dir = tempDir('mtls-root-offline-');
  const home = path.join(dir, 'ca');
  const env = { MTLS_HOME: home };
  assert.equal(mtls(['ca', 'init', '--name', 'Offline'], { env }).status, 0);
  const ca = await CertificateAuthority.open(home);
  await prepare(ca);
  await ca.close();
  fs.renameSync(path.join(home, 'root.key'), path.join(dir, 'root.key'));
  const issue = (name: string) => assert.equal(mtls(['issue', 'client', name, '--out', dir], { env }).status, 0);
  /** openssl's verdict on `name`'s certificate with the published crl.pem, both CRLs checked. */
  const verdict = (name: string) => {
    const [root, int] = [path.join(home, 'root.crt'), path.join(home, 'intermediate.crt')];
    const check = ['-crl_check_all', '-CAfile', root, '-untrusted', int, '-CRLfile', crlPaths(home).pem];
    const r = openssl(['verify', ...check, path.join(dir, `${name}.crt`)]);
    return r.stdout + r.stderr;
  };
  return { dir, home, env, issue, verdict };
}

describe('revocation with the root key offline', () => {
  it('ca init publishes the CRLs, the root CRL for a year; a revocation then needs only the intermediate key', async () => {
    const h = await offlineRoot();
    const rootCrl = fs.readFileSync(crlPaths(h.home).root);
    h.issue('bob');
    const r = mtls(['revoke', path.join(h.dir, 'bob.crt')], { env: h.env });
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /warning/, 'the root CRL has a year left');
    assert.match(h.verdict('bob'), /certificate revoked/);
    assert.ok(fs.readFileSync(crlPaths(h.home).root).equals(rootCrl), "the root's CRL as published at init");
  });

  it('a root CRL with a month or less left is kept, and each publication says so; the revocation is recorded', async () => {
    const h = await offlineRoot(async (ca) => {
      // The root's CRL signed 340 days ago: 25 days left.
      fs.rmSync(crlPaths(ca.home).root);
      await ca.publishCrl({ now: new Date(Date.now() - 340 * DAY) });
    });
    const rootCrl = fs.readFileSync(crlPaths(h.home).root);
    h.issue('alice');
    h.issue('carol');
    const r = mtls(['revoke', path.join(h.dir, 'alice.crt')], { env: h.env });
    assert.equal(r.status, 0, r.stderr);
    assert.match(
      r.stderr,
      /warning: the root's CRL expires at .* \(in 2[45] days\); put root\.key back in .*'mtls ca crl'/,
    );
    assert.match(h.verdict('alice'), /certificate revoked/);
    assert.match(h.verdict('carol'), /: OK/);
    assert.ok(fs.readFileSync(crlPaths(h.home).root).equals(rootCrl), 'kept, not signed again');
    const crl = mtls(['ca', 'crl'], { env: h.env });
    assert.equal(crl.status, 0, crl.stderr);
    assert.match(crl.stderr, /warning: the root's CRL expires at/);
    assert.match(mtls(['ca', 'list'], { env: h.env }).stdout, /alice.*revoked|revoked.*alice/i);
  });

  it('with no root CRL at all, the revocation is still recorded and the intermediate CRL published, with a warning', async () => {
    const h = await offlineRoot(async (ca) => fs.rmSync(crlPaths(ca.home).dir, { recursive: true }));
    h.issue('dave');
    const r = mtls(['revoke', path.join(h.dir, 'dave.crt')], { env: h.env });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /warning: the root's CRL is not published/);
    const text = openssl(['crl', '-inform', 'DER', '-in', crlPaths(h.home).intermediate, '-noout', '-text']).stdout;
    const serial = openssl(['x509', '-in', path.join(h.dir, 'dave.crt'), '-noout', '-serial']).stdout.split('=')[1]!;
    assert.match(text, new RegExp(serial.trim(), 'i'));
    assert.equal(fs.readFileSync(crlPaths(h.home).pem, 'utf8').match(/BEGIN X509 CRL/g)?.length, 1);
  });
});
