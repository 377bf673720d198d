import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { verifyChain } from '../../src/pki/verify.js';
import { type Purpose, type VerifyProblemCode } from '../../src/pki/path-rules.js';
import { OID } from '../../src/pki/oid.js';
import { encodeOid, seq, tlv } from '../../src/pki/der.js';
import { basicConstraintsExt } from '../../src/pki/extensions.js';
import { makeCert, openssl, tempDir, writePem, type TestCert } from '../helpers/pki.js';

/** authorityInfoAccess with one OCSP URL (RFC 5280 4.2.2.1). */
const OCSP_AIA = seq(seq(encodeOid('1.3.6.1.5.5.7.48.1'), tlv(0x86, Buffer.from('http://ocsp.example/'))));

const DAY = 86400e3;

interface Case {
  name: string;
  leaf: () => TestCert;
  anchors: () => TestCert[];
  untrusted: () => TestCert[];
  purpose: Purpose;
  dns?: string;
  at?: Date;
  /** Our expected first problem code, or null for valid. */
  expect: VerifyProblemCode | null;
  /** OpenSSL's error text for the same case (null = "OK"). */
  openssl: RegExp | null;
}

/**
 * The verify matrix: each case is generated fresh, judged by our verifier and by `openssl verify`, and both
 * must agree (valid or not, and for the same reason).
 */
describe('verify matrix, agreeing with openssl verify', () => {
  let root: TestCert, int: TestCert, leaf: TestCert, otherRoot: TestCert;
  let bareRoot: TestCert | undefined, bareInt: TestCert | undefined, softInt: TestCert | undefined;
  before(() => {
    const long = { notBefore: new Date(Date.now() - 365 * DAY), notAfter: new Date(Date.now() + 365 * DAY) };
    root = makeCert({ cn: 'Matrix Root', ca: true, ...long });
    int = makeCert({ cn: 'Matrix Int', ca: true, pathLen: 0, issuer: root, ...long });
    leaf = makeCert({ cn: 'good', issuer: int, dns: ['good.example.org'], eku: [OID.serverAuth] });
    otherRoot = makeCert({ cn: 'Other Root', ca: true });
  });
  const now = new Date();
  const cases: Case[] = [
    {
      name: 'valid server chain',
      leaf: () => leaf,
      anchors: () => [root],
      untrusted: () => [int],
      purpose: 'server',
      dns: 'good.example.org',
      expect: null,
      openssl: null,
    },
    {
      name: 'expired leaf',
      leaf: () =>
        makeCert({
          cn: 'old',
          issuer: int,
          dns: ['good.example.org'],
          eku: [OID.serverAuth],
          notBefore: new Date(Date.now() - 40 * DAY),
          notAfter: new Date(Date.now() - 3 * DAY),
        }),
      anchors: () => [root],
      untrusted: () => [int],
      purpose: 'server',
      expect: 'EXPIRED',
      openssl: /certificate has expired/,
    },
    {
      name: 'not yet valid leaf',
      leaf: () =>
        makeCert({
          cn: 'future',
          issuer: int,
          eku: [OID.serverAuth],
          notBefore: new Date(Date.now() + 3 * DAY),
          notAfter: new Date(Date.now() + 40 * DAY),
        }),
      anchors: () => [root],
      untrusted: () => [int],
      purpose: 'server',
      expect: 'NOT_YET_VALID',
      openssl: /certificate is not yet valid/,
    },
    {
      name: 'unknown CA',
      leaf: () => leaf,
      anchors: () => [otherRoot],
      untrusted: () => [int],
      purpose: 'server',
      expect: 'UNKNOWN_ISSUER',
      openssl: /unable to get local issuer certificate/,
    },
    {
      name: 'missing intermediate',
      leaf: () => leaf,
      anchors: () => [root],
      untrusted: () => [],
      purpose: 'server',
      expect: 'UNKNOWN_ISSUER',
      openssl: /unable to get local issuer certificate/,
    },
    {
      name: 'path length exceeded',
      leaf: () => makeCert({ cn: 'deep', issuer: sub(), eku: [OID.serverAuth] }),
      anchors: () => [root],
      untrusted: () => [int, sub()],
      purpose: 'server',
      expect: 'PATH_LENGTH_EXCEEDED',
      openssl: /path length constraint exceeded/,
    },
    {
      name: 'name constraints violated',
      leaf: () => makeCert({ cn: 'evil', issuer: constrained(), dns: ['evil.com'], eku: [OID.serverAuth] }),
      anchors: () => [root],
      untrusted: () => [constrained()],
      purpose: 'server',
      expect: 'NAME_CONSTRAINTS',
      openssl: /permitted subtree violation/,
    },
    {
      name: 'excluded IP range',
      leaf: () =>
        makeCert({ cn: 'ip', issuer: constrained(), dns: ['a.example.org'], ip: ['10.1.1.1'], eku: [OID.serverAuth] }),
      anchors: () => [root],
      untrusted: () => [constrained()],
      purpose: 'server',
      expect: 'NAME_CONSTRAINTS',
      openssl: /excluded subtree violation/,
    },
    {
      name: 'wrong EKU (client certificate used as server)',
      leaf: () => makeCert({ cn: 'client', issuer: int, dns: ['good.example.org'], eku: [OID.clientAuth] }),
      anchors: () => [root],
      untrusted: () => [int],
      purpose: 'server',
      expect: 'WRONG_PURPOSE',
      openssl: /unsuitable certificate purpose/,
    },
    {
      name: 'wrong EKU (server certificate used as client)',
      leaf: () => leaf,
      anchors: () => [root],
      untrusted: () => [int],
      purpose: 'client',
      expect: 'WRONG_PURPOSE',
      openssl: /unsuitable certificate purpose/,
    },
    {
      name: 'wrong name',
      leaf: () => leaf,
      anchors: () => [root],
      untrusted: () => [int],
      purpose: 'server',
      dns: 'other.example.org',
      expect: 'NAME_MISMATCH',
      openssl: /hostname mismatch/,
    },
    {
      name: 'leaf signed by a non-CA',
      leaf: () => makeCert({ cn: 'grandchild', issuer: nonCa(), eku: [OID.serverAuth] }),
      anchors: () => [root],
      untrusted: () => [int, nonCa()],
      purpose: 'server',
      expect: 'ISSUER_NOT_CA',
      openssl: /invalid CA certificate/,
    },
    {
      name: 'unknown critical extension',
      leaf: () =>
        makeCert({
          cn: 'crit',
          issuer: int,
          eku: [OID.serverAuth],
          extra: [{ oid: '1.3.6.1.4.1.55555.1', critical: true, value: Buffer.from([0x05, 0x00]) }],
        }),
      anchors: () => [root],
      untrusted: () => [int],
      purpose: 'server',
      expect: 'UNKNOWN_CRITICAL_EXTENSION',
      openssl: /unhandled critical extension/,
    },
    {
      name: 'validity checked at --at (valid then, expired now)',
      leaf: () =>
        makeCert({
          cn: 'was',
          issuer: int,
          eku: [OID.serverAuth],
          notBefore: new Date(Date.now() - 20 * DAY),
          notAfter: new Date(Date.now() - 10 * DAY),
        }),
      anchors: () => [root],
      untrusted: () => [int],
      purpose: 'server',
      at: new Date(Date.now() - 15 * DAY),
      expect: null,
      openssl: null,
    },
    // Key identifiers (issue 13, RFC 5280 4.2.1.1 and 4.2.1.2), as openssl verify -x509_strict checks them.
    {
      name: 'leaf without an authorityKeyIdentifier',
      leaf: () =>
        makeCert({ cn: 'no-aki', issuer: int, dns: ['good.example.org'], eku: [OID.serverAuth], aki: 'omit' }),
      anchors: () => [root],
      untrusted: () => [int],
      purpose: 'server',
      expect: 'KEY_IDENTIFIER',
      openssl: /Missing Authority Key Identifier/,
    },
    {
      name: 'root (trust anchor) without a subjectKeyIdentifier',
      leaf: () => {
        const bare = makeCert({ cn: 'Bare Root', ca: true, ski: 'omit' });
        bareRoot = bare;
        return makeCert({ cn: 'under-bare', issuer: bare, dns: ['good.example.org'], eku: [OID.serverAuth] });
      },
      anchors: () => [bareRoot!],
      untrusted: () => [],
      purpose: 'server',
      expect: 'KEY_IDENTIFIER',
      openssl: /Missing Subject Key Identifier/,
    },
    {
      name: 'intermediate without a subjectKeyIdentifier',
      leaf: () => {
        bareInt = makeCert({ cn: 'Bare Int', ca: true, issuer: root, ski: 'omit' });
        return makeCert({ cn: 'under-bare-int', issuer: bareInt, dns: ['good.example.org'], eku: [OID.serverAuth] });
      },
      anchors: () => [root],
      untrusted: () => [bareInt!],
      purpose: 'server',
      expect: 'KEY_IDENTIFIER',
      openssl: /Missing Subject Key Identifier/,
    },
    {
      name: 'authorityKeyIdentifier marked critical',
      leaf: () =>
        makeCert({ cn: 'aki-crit', issuer: int, dns: ['good.example.org'], eku: [OID.serverAuth], aki: 'critical' }),
      anchors: () => [root],
      untrusted: () => [int],
      purpose: 'server',
      expect: 'KEY_IDENTIFIER',
      openssl: /unhandled critical extension/,
    },
    {
      name: 'subjectKeyIdentifier marked critical',
      leaf: () =>
        makeCert({ cn: 'ski-crit', issuer: int, dns: ['good.example.org'], eku: [OID.serverAuth], ski: 'critical' }),
      anchors: () => [root],
      untrusted: () => [int],
      purpose: 'server',
      expect: 'KEY_IDENTIFIER',
      openssl: /unhandled critical extension/,
    },
    {
      name: 'authorityInfoAccess marked critical (RFC 5280 4.2.2.1)',
      leaf: () =>
        makeCert({
          cn: 'aia-crit',
          issuer: int,
          dns: ['good.example.org'],
          eku: [OID.serverAuth],
          extra: [{ oid: OID.authorityInfoAccess, critical: true, value: OCSP_AIA }],
        }),
      anchors: () => [root],
      untrusted: () => [int],
      purpose: 'server',
      expect: 'KEY_IDENTIFIER',
      openssl: /unhandled critical extension/,
    },
    // What a certificate says about being a CA agrees with itself (RFC 5280 4.2.1.9, 4.2.1.3).
    {
      name: 'intermediate whose basicConstraints is not critical',
      leaf: () => {
        softInt = makeCert({
          cn: 'Soft Int',
          issuer: root,
          noBasicConstraints: true,
          keyUsage: ['keyCertSign', 'cRLSign'],
          extra: [{ ...basicConstraintsExt(true), critical: false }],
        });
        return makeCert({ cn: 'under-soft', issuer: softInt, dns: ['good.example.org'], eku: [OID.serverAuth] });
      },
      anchors: () => [root],
      untrusted: () => [softInt!],
      purpose: 'server',
      expect: 'BASIC_CONSTRAINTS',
      openssl: /Basic Constraints of CA cert not marked critical/,
    },
    {
      name: 'end-entity certificate asserting keyCertSign',
      leaf: () =>
        makeCert({
          cn: 'ee-certsign',
          issuer: int,
          dns: ['good.example.org'],
          eku: [OID.serverAuth],
          keyUsage: ['digitalSignature', 'keyCertSign'],
        }),
      anchors: () => [root],
      untrusted: () => [int],
      purpose: 'server',
      expect: 'BASIC_CONSTRAINTS',
      openssl: /Key usage keyCertSign invalid for non-CA cert/,
    },
  ];
  // Chains that need extra CAs are built once, lazily.
  let subCa: TestCert | undefined, constrainedCa: TestCert | undefined, nonCaCert: TestCert | undefined;
  const sub = () => (subCa ??= makeCert({ cn: 'Sub Int', ca: true, issuer: int }));
  const constrained = () =>
    (constrainedCa ??= makeCert({
      cn: 'Constrained Int',
      ca: true,
      issuer: root,
      nameConstraints: { permittedDns: ['example.org'], excludedIp: ['10.0.0.0/8'] },
    }));
  const nonCa = () => (nonCaCert ??= makeCert({ cn: 'not a ca', issuer: int, eku: [OID.serverAuth] }));

  for (const c of cases) {
    it(c.name, () => {
      const dir = tempDir();
      const l = c.leaf();
      const at = c.at ?? now;
      const ours = verifyChain(l.cert, {
        trustAnchors: c.anchors().map((a) => a.cert),
        intermediates: c.untrusted().map((u) => u.cert),
        at,
        purpose: c.purpose,
        ...(c.dns ? { dns: c.dns } : {}),
      });
      const args = [
        'verify',
        '-x509_strict',
        '-CAfile',
        writePem(dir, 'ca.pem', c.anchors()),
        '-purpose',
        c.purpose === 'server' ? 'sslserver' : 'sslclient',
        '-attime',
        String(Math.floor(at.getTime() / 1000)),
      ];
      const untrusted = c.untrusted();
      if (untrusted.length) args.push('-untrusted', writePem(dir, 'untrusted.pem', untrusted));
      if (c.dns) args.push('-verify_hostname', c.dns);
      args.push(writePem(dir, 'leaf.pem', [l]));
      const theirs = openssl(args);
      const theirText = theirs.stdout + theirs.stderr;
      if (c.expect === null) {
        assert.deepEqual(ours.problems, [], 'mtlskit found problems');
        assert.equal(ours.valid, true);
        assert.equal(theirs.status, 0, `openssl disagrees: ${theirText}`);
      } else {
        assert.equal(ours.valid, false);
        assert.ok(
          ours.problems.some((p) => p.code === c.expect),
          `expected ${c.expect}, got ${JSON.stringify(ours.problems)}`,
        );
        for (const p of ours.problems) assert.ok(p.message.length > 10 && !p.message.includes('\n'));
        assert.notEqual(theirs.status, 0, 'openssl accepted what mtlskit rejected');
        assert.match(theirText, c.openssl!);
      }
    });
  }

  it('reports every problem it finds, in plain words', () => {
    const bad = makeCert({
      cn: 'twice-bad',
      issuer: int,
      dns: ['a.example.org'],
      eku: [OID.clientAuth],
      notBefore: new Date(Date.now() - 40 * DAY),
      notAfter: new Date(Date.now() - 3 * DAY),
    });
    const r = verifyChain(bad.cert, {
      trustAnchors: [root.cert],
      intermediates: [int.cert],
      at: new Date(),
      purpose: 'server',
      dns: 'b.example.org',
    });
    assert.deepEqual(r.problems.map((p) => p.code).sort(), ['EXPIRED', 'NAME_MISMATCH', 'WRONG_PURPOSE']);
    assert.match(
      r.problems.find((p) => p.code === 'EXPIRED')!.message,
      /'twice-bad' expired 3 days ago \(\d{4}-\d\d-\d\dT\d\d:\d\dZ\)/,
    );
    assert.match(
      r.problems.find((p) => p.code === 'NAME_MISMATCH')!.message,
      /is for a\.example\.org, not 'b\.example\.org'/,
    );
  });

  it('says which issuer is not a CA', () => {
    const r = verifyChain(makeCert({ cn: 'x', issuer: nonCa() }).cert, {
      trustAnchors: [root.cert],
      intermediates: [int.cert, nonCa().cert],
      at: new Date(),
    });
    assert.match(r.problems[0]!.message, /issuer 'not a ca' is not a CA/);
  });

  it('checks the SPIFFE ID against a pattern and refuses several URI SANs', () => {
    const svid = makeCert({
      cn: 'svid',
      issuer: int,
      uri: ['spiffe://example.org/ns/prod/sa/api'],
      eku: [OID.serverAuth, OID.clientAuth],
    });
    const opts = { trustAnchors: [root.cert], intermediates: [int.cert], at: new Date(), purpose: 'client' as const };
    assert.equal(verifyChain(svid.cert, { ...opts, spiffeId: 'spiffe://example.org/ns/*/sa/api' }).valid, true);
    const wrong = verifyChain(svid.cert, { ...opts, spiffeId: 'spiffe://example.org/ns/*/sa/web' });
    assert.equal(wrong.problems[0]!.code, 'SPIFFE_ID_MISMATCH');
    const two = makeCert({ cn: 'two', issuer: int, uri: ['spiffe://example.org/a', 'spiffe://example.org/b'] });
    assert.match(
      verifyChain(two.cert, { ...opts, spiffeId: 'spiffe://example.org/*' }).problems[0]!.message,
      /2 URI SANs/,
    );
  });

  it('refuses a CA certificate as a server or client leaf, but verifies it with purpose any', () => {
    const base = { trustAnchors: [root.cert], at: new Date() };
    assert.equal(verifyChain(int.cert, { ...base, purpose: 'any' }).valid, true);
    assert.equal(verifyChain(int.cert, { ...base, purpose: 'server' }).problems[0]!.code, 'CA_AS_LEAF');
  });

  it('limits the number of intermediates with maxDepth', () => {
    const r = verifyChain(leaf.cert, {
      trustAnchors: [root.cert],
      intermediates: [int.cert],
      at: new Date(),
      maxDepth: 0,
    });
    assert.equal(r.problems[0]!.code, 'DEPTH_EXCEEDED');
  });

  it('refuses weak RSA keys and SHA-1 signatures', () => {
    const r = verifyChain(leaf.cert, { trustAnchors: [root.cert], intermediates: [int.cert], at: new Date() });
    assert.equal(r.valid, true);
    const rsaLeaf = makeCert({ cn: 'rsa-ok', issuer: int, keyType: 'rsa-2048' });
    assert.equal(
      verifyChain(rsaLeaf.cert, { trustAnchors: [root.cert], intermediates: [int.cert], at: new Date() }).valid,
      true,
    );
  });

  it('tells a same-named impostor CA from a missing one', () => {
    const impostor = makeCert({ cn: 'Matrix Root', ca: true });
    const r = verifyChain(leaf.cert, { trustAnchors: [impostor.cert], intermediates: [int.cert], at: new Date() });
    assert.equal(r.problems[0]!.code, 'UNKNOWN_ISSUER');
    assert.match(r.problems[0]!.message, /names 'Matrix Root' as its issuer, but .*different CA with the same name/);
  });
});
