import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { CertificateAuthority } from '../../src/ca/authority.js';
import { caPaths } from '../../src/ca/home.js';
import { writeIssued } from '../../src/ca/output.js';
import { MtlsError } from '../../src/errors.js';
import { OID } from '../../src/pki/oid.js';
import { verifyChain } from '../../src/pki/verify.js';
import { tempDir } from '../helpers/pki.js';

const isCode = (code: string) => (e: unknown) => e instanceof MtlsError && e.code === code;

async function newCa(opts: Partial<Parameters<typeof CertificateAuthority.init>[0]> = {}) {
  const home = path.join(tempDir(), 'ca');
  return CertificateAuthority.init({ home, name: 'Test', ...opts });
}

describe('ca init', () => {
  it('creates a root (CA, keyCertSign|cRLSign, critical) and an intermediate with pathlen 0', async () => {
    const ca = await newCa();
    const bcRoot = ca.root.extensions.find((e) => e.oid === OID.basicConstraints)!;
    assert.equal(bcRoot.critical, true);
    assert.deepEqual(ca.root.basicConstraints, { ca: true });
    assert.deepEqual(ca.root.keyUsage, ['keyCertSign', 'cRLSign']);
    assert.equal(ca.root.extensions.find((e) => e.oid === OID.keyUsage)!.critical, true);
    assert.deepEqual(ca.intermediate.basicConstraints, { ca: true, pathLen: 0 });
    assert.ok(ca.intermediate.keyUsage!.includes('keyCertSign'));
    assert.deepEqual(ca.intermediate.authorityKeyId, ca.root.subjectKeyId);
    assert.ok(ca.intermediate.notAfter <= ca.root.notAfter);
    await ca.close();
  });

  it('keeps the home 0700 and keys 0600, and refuses to overwrite a CA', async () => {
    const ca = await newCa();
    const p = caPaths(ca.home);
    assert.equal(fs.statSync(ca.home).mode & 0o777, 0o700);
    assert.equal(fs.statSync(p.rootKey).mode & 0o777, 0o600);
    assert.equal(fs.statSync(p.intermediateKey).mode & 0o777, 0o600);
    const before = fs.readFileSync(p.rootKey);
    await assert.rejects(CertificateAuthority.init({ home: ca.home }), isCode('CA_EXISTS'));
    assert.deepEqual(fs.readFileSync(p.rootKey), before);
    await ca.close();
  });

  it('encrypts keys at rest with a passphrase and says so when it is wrong', async () => {
    const ca = await newCa({ passphrase: 'correct horse battery' });
    assert.match(fs.readFileSync(caPaths(ca.home).intermediateKey, 'utf8'), /BEGIN ENCRYPTED PRIVATE KEY/);
    await ca.close();
    const wrong = await CertificateAuthority.open(ca.home, 'wrong passphrase');
    await assert.rejects(
      wrong.issue({ profile: 'client', name: 'x', names: {} }),
      (e: unknown) => isCode('WRONG_PASSPHRASE')(e) && !(e as Error).message.includes('BEGIN'),
    );
    assert.equal(await wrong.store.count(), 0);
    await wrong.close();
    const none = await CertificateAuthority.open(ca.home);
    await assert.rejects(none.issue({ profile: 'client', name: 'x', names: {} }), /is encrypted; give its passphrase/);
    await none.close();
    const right = await CertificateAuthority.open(ca.home, 'correct horse battery');
    await right.issue({ profile: 'client', name: 'x', names: {} });
    assert.equal(await right.store.count(), 1);
    await right.close();
  });

  it('supports every key type', async () => {
    for (const keyType of ['ec-p384', 'ed25519', 'rsa-2048'] as const) {
      const ca = await newCa({ keyType });
      const leaf = await ca.issue({ profile: 'server', name: 's', names: { dns: ['s.example.org'] }, keyType });
      const r = verifyChain(leaf.certificate, {
        trustAnchors: [ca.root],
        intermediates: [ca.intermediate],
        at: new Date(),
        purpose: 'server',
        dns: 's.example.org',
      });
      assert.deepEqual(r.problems, [], keyType);
      await ca.close();
    }
  });

  it('leaves nothing behind when it fails', async () => {
    const parent = tempDir();
    const home = path.join(parent, 'ca');
    await assert.rejects(CertificateAuthority.init({ home, trustDomain: 'Bad.Domain' }), isCode('BAD_SPIFFE_ID'));
    await assert.rejects(CertificateAuthority.init({ home, keyType: 'dsa' as never }), MtlsError);
    await assert.rejects(CertificateAuthority.init({ home, passphrase: 'short' }), /at least 8/);
    assert.deepEqual(fs.readdirSync(parent), []);
  });
});

describe('issuing', () => {
  it(
    'server: CA:FALSE, digitalSignature (critical), serverAuth only, SAN, SKI/AKI, ' + '126+ random serial bits',
    async () => {
      const ca = await newCa();
      const { certificate: c } = await ca.issue({
        profile: 'server',
        name: 'api',
        names: { dns: ['api.example.org', '*.api.example.org'], ip: ['10.0.0.1', '::1'] },
      });
      assert.deepEqual(c.basicConstraints, { ca: false });
      assert.deepEqual(c.keyUsage, ['digitalSignature']);
      assert.deepEqual(c.extKeyUsage, [OID.serverAuth]);
      assert.deepEqual(c.san!.dns, ['api.example.org', '*.api.example.org']);
      assert.deepEqual(c.san!.ip, ['10.0.0.1', '::1']);
      assert.ok(c.subjectKeyId && c.authorityKeyId!.equals(ca.intermediate.subjectKeyId!));
      assert.equal(c.serial.length, 16);
      assert.ok(c.serial[0]! >= 0x40 && c.serial[0]! < 0x80);
      assert.equal(c.signatureAlgorithm, OID.ecdsaWithSha256);
      assert.deepEqual(c.problems, []);
      await ca.close();
    },
  );

  it('serials are distinct', async () => {
    const ca = await newCa();
    const serials = new Set<string>();
    for (let i = 0; i < 20; i++)
      serials.add((await ca.issue({ profile: 'client', name: `c${i}`, names: {} })).record.serial);
    assert.equal(serials.size, 20);
    await ca.close();
  });

  it(
    'spiffe: exactly one URI SAN, digitalSignature critical, serverAuth+clientAuth, ' + 'not a CA (X.509-SVID spec)',
    async () => {
      const ca = await newCa({ trustDomain: 'example.org' });
      const { certificate: c } = await ca.issue({
        profile: 'spiffe',
        name: 'api',
        names: { spiffeId: 'spiffe://example.org/ns/prod/sa/api' },
      });
      assert.deepEqual(c.san!.uri, ['spiffe://example.org/ns/prod/sa/api']);
      assert.deepEqual([c.san!.dns, c.san!.ip, c.san!.email], [[], [], []]);
      assert.deepEqual(c.keyUsage, ['digitalSignature']);
      assert.equal(c.extensions.find((e) => e.oid === OID.keyUsage)!.critical, true);
      assert.deepEqual(c.extKeyUsage, [OID.serverAuth, OID.clientAuth]);
      assert.deepEqual(c.basicConstraints, { ca: false });
      await assert.rejects(
        ca.issue({
          profile: 'spiffe',
          name: 'x',
          names: { spiffeId: 'spiffe://example.org/a', dns: ['a.example.org'] },
        }),
        /carries only its SPIFFE ID/,
      );
      await assert.rejects(ca.issue({ profile: 'spiffe', name: 'x', names: {} }), /exactly one SPIFFE ID/);
      await ca.close();
    },
  );

  it('client: clientAuth only, with SPIFFE ID and email', async () => {
    const ca = await newCa();
    const { certificate: c } = await ca.issue({
      profile: 'client',
      name: 'alice',
      names: { spiffeId: 'spiffe://example.org/u/alice', email: ['alice@example.org'] },
    });
    assert.deepEqual(c.extKeyUsage, [OID.clientAuth]);
    assert.deepEqual(c.san!.email, ['alice@example.org']);
    await ca.close();
  });

  it('refuses names outside the trust domain and the permitted names, and all IPs unless permitted', async () => {
    const ca = await newCa({ trustDomain: 'example.org', permitDns: ['.example.org'] });
    await assert.rejects(
      ca.issue({ profile: 'client', name: 'e', names: { spiffeId: 'spiffe://evil.org/x' } }),
      (e: unknown) => isCode('NAME_NOT_PERMITTED')(e) && /trust domain 'example.org'/.test((e as Error).message),
    );
    await assert.rejects(
      ca.issue({ profile: 'server', name: 'e', names: { dns: ['evil.com'] } }),
      /'evil.com' is outside the permitted names/,
    );
    await assert.rejects(
      ca.issue({ profile: 'server', name: 'e', names: { dns: ['a.example.org'], ip: ['10.0.0.1'] } }),
      /excluded/,
    );
    await ca.issue({ profile: 'server', name: 'ok', names: { dns: ['a.example.org'] } });
    assert.equal(await ca.store.count(), 1);
    await ca.close();
  });

  it("never issues beyond the intermediate's validity", async () => {
    const ca = await newCa({ intermediateValidityMs: 30 * 86400e3 });
    await assert.rejects(
      ca.issue({ profile: 'client', name: 'x', names: {}, validityMs: 31 * 86400e3 }),
      (e: unknown) => isCode('VALIDITY_EXCEEDS_ISSUER')(e) && /--validity (29|30)d or less/.test((e as Error).message),
    );
    assert.equal(await ca.store.count(), 0);
    await ca.close();
  });

  it('records every certificate in the inventory, and none when writing the files fails', async () => {
    const ca = await newCa();
    const out = tempDir();
    const issued = await ca.issue({ profile: 'server', name: 'web', names: { dns: ['web.example.org'] } }, (i) => {
      writeIssued(i, { outDir: out, name: 'web', bundlePem: ca.bundlePem });
    });
    const rec = await ca.store.get(issued.record.serial);
    assert.equal(rec!.fingerprint256, issued.certificate.fingerprint256);
    assert.deepEqual(rec!.sans, ['DNS:web.example.org']);
    assert.equal(rec!.status, 'valid');
    assert.equal(fs.statSync(path.join(out, 'web.key')).mode & 0o777, 0o600);
    const keyBefore = fs.readFileSync(path.join(out, 'web.key'));
    // Same name again: the files exist, so nothing is written and nothing is recorded.
    await assert.rejects(
      ca.issue({ profile: 'server', name: 'web', names: { dns: ['web.example.org'] } }, (i) => {
        writeIssued(i, { outDir: out, name: 'web', bundlePem: ca.bundlePem });
      }),
      isCode('FILE_EXISTS'),
    );
    assert.equal(await ca.store.count(), 1);
    assert.deepEqual(fs.readFileSync(path.join(out, 'web.key')), keyBefore);
    assert.deepEqual(
      fs.readdirSync(out).filter((f) => f.endsWith('.tmp')),
      [],
    );
    await ca.close();
  });

  it('lists certificates that expire within a window', async () => {
    const ca = await newCa();
    await ca.issue({ profile: 'client', name: 'short', names: {}, validityMs: 2 * 86400e3 });
    await ca.issue({ profile: 'client', name: 'long', names: {}, validityMs: 60 * 86400e3 });
    const soon = await ca.store.list({ notAfterBefore: new Date(Date.now() + 7 * 86400e3) });
    assert.deepEqual(
      soon.map((r) => r.subject),
      ['CN=short, O=Test'],
    );
    assert.equal((await ca.store.list()).length, 2);
    await ca.close();
  });
});
