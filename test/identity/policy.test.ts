import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MtlsError } from '../../src/errors.js';
import { identityFromCertificate, type PeerIdentity } from '../../src/identity/identity.js';
import { compilePolicy, compileRule } from '../../src/identity/policy.js';
import { parseCertificate } from '../../src/pki/certificate.js';
import { randomSerial, signCertificate } from '../../src/pki/signing.js';
import { encodeOid, seq, tlv } from '../../src/pki/der.js';
import { subjectAltNameExt } from '../../src/pki/extensions.js';
import { generateKeyPair } from '../../src/pki/keys.js';
import { OID } from '../../src/pki/oid.js';

const issuerKey = generateKeyPair().privateKey;

/** A certificate with a hand-encoded subject (values may hold NUL, commas, anything) and raw SANs. */
function identity(
  subject: [string, string][],
  san: { dns?: string[]; uri?: string[]; ip?: string[]; email?: string[] } = {},
): PeerIdentity {
  const name = seq(...subject.map(([oid, v]) => tlv(0x31, seq(encodeOid(oid), tlv(0x0c, Buffer.from(v, 'utf8'))))));
  const { publicKey } = generateKeyPair();
  const der = signCertificate(
    {
      serial: randomSerial(),
      issuer: seq(tlv(0x31, seq(encodeOid(OID.commonName), tlv(0x0c, Buffer.from('Issuer'))))),
      subject: name,
      notBefore: new Date(),
      notAfter: new Date(Date.now() + 3600e3),
      publicKey,
      extensions: Object.keys(san).length ? [subjectAltNameExt(san, false)] : [],
    },
    issuerKey,
  );
  return identityFromCertificate(parseCertificate(der));
}

const CN = OID.commonName,
  O = OID.organizationName,
  OU = OID.organizationalUnitName;

describe('identity from DER', () => {
  it('takes the SPIFFE ID only when it is the single, valid URI SAN', () => {
    assert.equal(
      identity([], { uri: ['spiffe://prod.example.org/ns/a/sa/api'] }).spiffeId?.trustDomain,
      'prod.example.org',
    );
    assert.equal(identity([], { uri: ['spiffe://a.org/x', 'spiffe://b.org/y'] }).spiffeId, undefined);
    assert.equal(identity([], { uri: ['https://example.org/x'] }).spiffeId, undefined);
    assert.equal(identity([], { uri: ['spiffe://Prod.Example.org/x'] }).spiffeId, undefined);
    assert.equal(identity([], { uri: ['spiffe://example.org/a/../b'] }).spiffeId, undefined);
  });

  it('keeps NUL bytes and commas in DN values as data, and escapes them when printed', () => {
    const id = identity([
      [O, 'Acme, Inc.'],
      [CN, 'api\0.evil.org'],
    ]);
    assert.deepEqual(
      id.subject.map((a) => a.value),
      ['Acme, Inc.', 'api\0.evil.org'],
    );
    assert.equal(id.subjectDn, 'CN=api\\00.evil.org, O=Acme\\, Inc.');
  });

  it('handles very long SANs', () => {
    const long = `${'a'.repeat(60)}.${'b'.repeat(60)}.${'c'.repeat(60)}.example.org`;
    const id = identity([], { dns: [long], uri: [`spiffe://example.org/${'x'.repeat(1800)}`] });
    assert.equal(id.dns[0], long);
    assert.equal(id.spiffeId?.path.length, 1801);
  });
});

describe('policy', () => {
  const api = identity(
    [
      [O, 'Acme'],
      [OU, 'payments'],
      [CN, 'api'],
    ],
    {
      uri: ['spiffe://prod.example.org/ns/pay/sa/api'],
      dns: ['api.example.org'],
      ip: ['10.0.0.7'],
      email: ['api@example.org'],
    },
  );
  const web = identity(
    [
      [O, 'Acme'],
      [OU, 'web'],
      [CN, 'web'],
    ],
    { uri: ['spiffe://prod.example.org/ns/web/sa/frontend'] },
  );
  const evil = identity(
    [
      [O, 'Acme, OU=payments'],
      [CN, 'evil'],
    ],
    { uri: ['spiffe://prod.example.org/ns/pay/sa/api', 'spiffe://evil.org/x'] },
  );

  const table: [string, PeerIdentity, boolean][] = [
    ['spiffe://prod.example.org/ns/*/sa/api', api, true],
    ['spiffe://prod.example.org/ns/*/sa/api', web, false],
    ['spiffe://prod.example.org/ns/*/sa/api', evil, false], // two URI SANs: no SPIFFE ID at all
    ['spiffe://prod.example.org/**', web, true],
    ['trust-domain:prod.example.org', web, true],
    ['trust-domain:prod.example.org', evil, false],
    ['dns:*.example.org', api, true],
    ['dns:example.org', api, false],
    ['ip:10.0.0.7', api, true],
    ['email:API@example.org', api, true],
    ['dn:O=Acme, OU=payments', api, true],
    ['dn:O=Acme, OU=payments', web, false],
    ['dn:O=Acme, OU=payments', evil, false], // a comma inside O must not forge an OU
    ['dn:o=acme', web, true],
    ['cn:api', api, true],
    ['any', evil, true],
  ];
  for (const [rule, id, expected] of table) {
    it(`${rule} ${expected ? 'matches' : 'does not match'} ${id.subjectDn}`, () => {
      assert.equal(compileRule(rule).match(id), expected);
    });
  }

  it('matches a fingerprint rule', () => {
    assert.equal(compileRule(`fingerprint:${api.fingerprint256}`).match(api), true);
    assert.equal(compileRule(`fingerprint:${api.fingerprint256.replace(/:/g, '').toLowerCase()}`).match(web), false);
  });

  it('denies by default, lets deny win, and explains every decision', () => {
    const p = compilePolicy({
      allow: ['trust-domain:prod.example.org'],
      deny: ['spiffe://prod.example.org/ns/web/**'],
    });
    const a = p.decide(api);
    assert.equal(a.allowed, true);
    assert.equal(
      a.reason,
      "spiffe://prod.example.org/ns/pay/sa/api is allowed by rule 'trust-domain:prod.example.org'",
    );
    const w = p.decide(web);
    assert.equal(w.allowed, false);
    assert.equal(w.rule, 'spiffe://prod.example.org/ns/web/**');
    assert.match(w.reason, /is denied by rule/);
    const e = p.decide(evil);
    assert.equal(e.allowed, false);
    assert.match(e.reason, /matches no allow rule \(deny by default\)/);
    assert.equal(compilePolicy({ allow: [] }).decide(api).allowed, false);
    assert.equal(p.decide(undefined).reason, 'no verified client certificate');
  });

  it('audit mode reports what it would deny without enforcing it', () => {
    const p = compilePolicy({ allow: ['cn:api'], audit: true });
    const d = p.decide(web);
    assert.equal(d.allowed, true);
    assert.equal(d.auditOnly, true);
    assert.match(d.reason, /^audit: would deny: /);
    assert.equal(p.decide(api).auditOnly, undefined);
  });

  it('per-route rules: the longest prefix wins, on segment boundaries', () => {
    const p = compilePolicy({
      allow: ['any'],
      routes: [
        { prefix: '/admin', allow: ['cn:api'] },
        { prefix: '/admin/web', allow: ['cn:web'] },
      ],
    });
    assert.equal(p.decide(web, '/admin').allowed, false);
    assert.equal(p.decide(web, '/admin/web/x').allowed, true);
    assert.equal(p.decide(api, '/admin/web').allowed, false);
    assert.equal(p.decide(web, '/administrator').allowed, true);
    assert.match(p.decide(web, '/admin/x').reason, /for \/admin/);
  });

  const badRules: [string, RegExp][] = [
    ['spiffe://x.org/a*', /whole segment/],
    ['role:admin', /start it with spiffe:\/\//],
    ['dns:a.*.example.org', /left-most label/],
    ['ip:999.1.1.1', /not an IP address/],
    ['trust-domain:Prod.org', /lower-case/],
    ['fingerprint:abcd', /64 hex digits/],
    ['dn:XX=1', /unknown attribute type/],
    ['cn:', /empty/],
  ];
  for (const [rule, why] of badRules) {
    it(`rejects the rule '${rule}' at compile time`, () => {
      assert.throws(
        () => compilePolicy({ allow: [rule] }),
        (e: unknown) => e instanceof MtlsError && why.test(e.message),
      );
    });
  }
});

describe('identityOf cache', () => {
  it('identities from connections are frozen (shared per certificate)', async () => {
    const { identityOf: idOf } = await import('../../src/identity/identity.js');
    const { testPki, listen, close } = await import('../helpers/endpoints.js');
    const { connectMtls } = await import('../../src/tls/client.js');
    const { createMtlsServer } = await import('../../src/tls/server.js');
    const pki = await testPki();
    const seen: PeerIdentity[] = [];
    const server = createMtlsServer(
      { credentials: pki.creds('server'), policy: compilePolicy({ allow: ['any'] }) },
      (s) => {
        seen.push(idOf(s)!);
        s.end('ok');
      },
    );
    const port = await listen(server);
    try {
      // confirmMs: in TLS 1.3 the server finishes after the client; closing at once can race its Finished.
      for (let i = 0; i < 2; i++)
        (
          await connectMtls({
            host: 'localhost',
            port,
            ca: pki.bundle,
            credentials: pki.creds('billing'),
            confirmMs: 200,
          })
        ).socket.destroy();
      assert.equal(seen.length, 2);
      assert.equal(seen[0], seen[1]);
      assert.throws(() => {
        (seen[0]!.uris as string[]).push('spiffe://evil/x');
      });
      assert.ok(Object.isFrozen(seen[0]));
    } finally {
      await close(server);
      await pki.ca.close();
    }
  });
});
