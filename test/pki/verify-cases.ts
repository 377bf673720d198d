/**
 * The verify matrix's cases (issue 13): each a chain made fresh by our DER writer, the verdict and reason code we
 * expect under each profile, and what `openssl verify -x509_strict` and pyca/cryptography's verifier say about it.
 * verify-matrix.test.ts runs all three verifiers on every case.
 */
import crypto from 'node:crypto';
import { seq, tlv, encodeOid } from '../../src/pki/der.js';
import { basicConstraintsExt } from '../../src/pki/extensions.js';
import { OID } from '../../src/pki/oid.js';
import { type Profile, type Purpose, type VerifyProblemCode } from '../../src/pki/path-rules.js';
import { makeCert, type MakeCertOptions, type TestCert } from '../helpers/pki.js';

const DAY = 86400e3;

export interface MatrixCase {
  name: string;
  leaf: TestCert;
  anchors: TestCert[];
  untrusted: TestCert[];
  purpose: Purpose;
  dns?: string;
  at?: Date;
  /** Our verdict under the strict profile: the reason code, or null for valid. */
  expect: VerifyProblemCode | null;
  /** Under the laxer profiles, where it differs from strict. */
  profiles?: Partial<Record<Exclude<Profile, 'strict'>, VerifyProblemCode | null>>;
  /** `openssl verify -x509_strict`: its error text, or null when it accepts. */
  openssl: RegExp | null;
  /** pyca/cryptography's verifier accepts it. */
  pyca: boolean;
  /** OpenSSL refuses it because its path building stops at the first candidate, not because of a rule. */
  opensslMissesPath?: boolean;
}

const ext = (oid: string, value: Buffer, critical = false) => ({ oid, critical, value });
const uri = (u: string) => tlv(0x86, Buffer.from(u));
const GOOD = 'good.example.org';

/** Builds every case; the CAs are shared where a case does not need its own. */
export function buildCases(): MatrixCase[] {
  const long = { notBefore: new Date(Date.now() - 365 * DAY), notAfter: new Date(Date.now() + 365 * DAY) };
  const root = makeCert({ cn: 'Matrix Root', ca: true, ...long });
  const int = makeCert({ cn: 'Matrix Int', ca: true, pathLen: 0, issuer: root, ...long });
  const intKeys = { privateKey: int.key, publicKey: int.cert.publicKey! };
  /** A server leaf under `issuer` (default: the matrix intermediate) for good.example.org. */
  const srv = (o: Partial<MakeCertOptions> = {}) =>
    makeCert({ cn: 'leaf', issuer: int, dns: [GOOD], eku: [OID.serverAuth], ...o });
  const chain = { anchors: [root], untrusted: [int], purpose: 'server' as Purpose, dns: GOOD };
  const constrained = makeCert({
    cn: 'Constrained Int',
    ca: true,
    issuer: root,
    nameConstraints: { permittedDns: ['example.org'], excludedIp: ['10.0.0.0/8'] },
  });
  const under = (issuer: TestCert, o: Partial<MakeCertOptions> = {}) => srv({ issuer, ...o });
  const withCa = (ca: TestCert) => ({ ...chain, untrusted: [ca] });

  const cases: MatrixCase[] = [
    // ---- the basics, as every verifier sees them ----
    { name: 'valid server chain', leaf: srv(), ...chain, expect: null, openssl: null, pyca: true },
    {
      name: 'expired leaf',
      leaf: srv({ notBefore: new Date(Date.now() - 40 * DAY), notAfter: new Date(Date.now() - 3 * DAY) }),
      ...chain,
      expect: 'EXPIRED',
      openssl: /certificate has expired/,
      pyca: false,
    },
    {
      name: 'not yet valid leaf',
      leaf: srv({ notBefore: new Date(Date.now() + 3 * DAY), notAfter: new Date(Date.now() + 40 * DAY) }),
      ...chain,
      expect: 'NOT_YET_VALID',
      openssl: /certificate is not yet valid/,
      pyca: false,
    },
    {
      name: 'unknown CA',
      leaf: srv(),
      ...chain,
      anchors: [makeCert({ cn: 'Other Root', ca: true })],
      expect: 'UNKNOWN_ISSUER',
      openssl: /unable to get local issuer certificate/,
      pyca: false,
    },
    {
      name: 'missing intermediate',
      leaf: srv(),
      ...chain,
      untrusted: [],
      expect: 'UNKNOWN_ISSUER',
      openssl: /unable to get local issuer certificate/,
      pyca: false,
    },
    (() => {
      const sub = makeCert({ cn: 'Sub Int', ca: true, issuer: int });
      return {
        name: 'path length exceeded',
        leaf: under(sub),
        ...chain,
        untrusted: [int, sub],
        expect: 'PATH_LENGTH_EXCEEDED' as const,
        openssl: /path length constraint exceeded/,
        pyca: false,
      };
    })(),
    {
      name: 'name constraints violated',
      leaf: under(constrained, { dns: ['evil.com'] }),
      ...withCa(constrained),
      dns: 'evil.com',
      expect: 'NAME_CONSTRAINTS',
      openssl: /permitted subtree violation/,
      pyca: false,
    },
    {
      name: 'excluded IP range',
      leaf: under(constrained, { dns: ['a.example.org'], ip: ['10.1.1.1'] }),
      ...withCa(constrained),
      dns: 'a.example.org',
      expect: 'NAME_CONSTRAINTS',
      openssl: /excluded subtree violation/,
      pyca: false,
    },
    {
      name: 'wrong EKU (client certificate used as server)',
      leaf: srv({ eku: [OID.clientAuth] }),
      ...chain,
      expect: 'WRONG_PURPOSE',
      openssl: /unsuitable certificate purpose/,
      pyca: false,
    },
    {
      name: 'wrong EKU (server certificate used as client)',
      leaf: srv(),
      ...chain,
      purpose: 'client',
      expect: 'WRONG_PURPOSE',
      openssl: /unsuitable certificate purpose/,
      pyca: false,
    },
    {
      name: 'wrong name',
      leaf: srv(),
      ...chain,
      dns: 'other.example.org',
      expect: 'NAME_MISMATCH',
      openssl: /hostname mismatch/,
      pyca: false,
    },
    (() => {
      const nonCa = makeCert({ cn: 'not a ca', issuer: int, eku: [OID.serverAuth] });
      return {
        name: 'leaf signed by a non-CA',
        leaf: under(nonCa),
        ...chain,
        untrusted: [int, nonCa],
        expect: 'ISSUER_NOT_CA' as const,
        openssl: /invalid CA certificate/,
        pyca: false,
      };
    })(),
    {
      name: 'unknown critical extension',
      leaf: srv({ extra: [ext('1.3.6.1.4.1.55555.1', Buffer.from([0x05, 0x00]), true)] }),
      ...chain,
      expect: 'UNKNOWN_CRITICAL_EXTENSION',
      openssl: /unhandled critical extension/,
      pyca: false,
    },
    {
      name: 'validity checked at --at (valid then, expired now)',
      leaf: srv({ notBefore: new Date(Date.now() - 20 * DAY), notAfter: new Date(Date.now() - 10 * DAY) }),
      ...chain,
      at: new Date(Date.now() - 15 * DAY),
      expect: null,
      openssl: null,
      pyca: true,
    },

    // ---- key identifiers (RFC 5280 4.2.1.1, 4.2.1.2) ----
    {
      name: 'leaf without an authorityKeyIdentifier',
      leaf: srv({ aki: 'omit' }),
      ...chain,
      expect: 'KEY_IDENTIFIER',
      profiles: { compat: null },
      openssl: /Missing Authority Key Identifier/,
      pyca: false,
    },
    (() => {
      const bare = makeCert({ cn: 'Bare Root', ca: true, ski: 'omit' });
      return {
        name: 'root (trust anchor) without a subjectKeyIdentifier',
        leaf: under(bare),
        ...chain,
        anchors: [bare],
        untrusted: [],
        expect: 'KEY_IDENTIFIER' as const,
        profiles: { compat: null },
        openssl: /Missing Subject Key Identifier/,
        pyca: true,
      };
    })(),
    (() => {
      const bare = makeCert({ cn: 'Bare Int', ca: true, issuer: root, ski: 'omit' });
      return {
        name: 'intermediate without a subjectKeyIdentifier',
        leaf: under(bare),
        ...withCa(bare),
        expect: 'KEY_IDENTIFIER' as const,
        profiles: { compat: null },
        openssl: /Missing Subject Key Identifier/,
        pyca: true,
      };
    })(),
    {
      name: 'authorityKeyIdentifier marked critical',
      leaf: srv({ aki: 'critical' }),
      ...chain,
      expect: 'KEY_IDENTIFIER',
      openssl: /unhandled critical extension/,
      pyca: false,
    },
    {
      name: 'subjectKeyIdentifier marked critical',
      leaf: srv({ ski: 'critical' }),
      ...chain,
      expect: 'KEY_IDENTIFIER',
      openssl: /unhandled critical extension/,
      pyca: true,
    },
    (() => {
      const r = makeCert({ cn: 'AKI Issuer Root', ca: true, akiOf: { issuerAndSerial: true } });
      return {
        name: "trust anchor whose authorityKeyIdentifier names an issuer and serial (webpki's rule)",
        leaf: under(r),
        ...chain,
        anchors: [r],
        untrusted: [],
        expect: 'KEY_IDENTIFIER' as const,
        profiles: { rfc5280: null, compat: null },
        openssl: null,
        pyca: true,
      };
    })(),
    (() => {
      const r = makeCert({ cn: 'AKI Other Root', ca: true, akiOf: { keyId: crypto.randomBytes(20) } });
      return {
        name: 'self-issued trust anchor whose authorityKeyIdentifier is not its own',
        leaf: under(r),
        ...chain,
        anchors: [r],
        untrusted: [],
        expect: 'KEY_IDENTIFIER' as const,
        openssl: /unable to get issuer certificate/,
        pyca: true,
      };
    })(),

    // ---- basic constraints and key usage (4.2.1.9, 4.2.1.3) ----
    (() => {
      const soft = makeCert({
        cn: 'Soft Int',
        issuer: root,
        noBasicConstraints: true,
        keyUsage: ['keyCertSign', 'cRLSign'],
        extra: [{ ...basicConstraintsExt(true), critical: false }],
      });
      return {
        name: 'intermediate whose basicConstraints is not critical',
        leaf: under(soft),
        ...withCa(soft),
        expect: 'BASIC_CONSTRAINTS' as const,
        profiles: { compat: null },
        openssl: /Basic Constraints of CA cert not marked critical/,
        pyca: false,
      };
    })(),
    {
      name: 'end-entity certificate asserting keyCertSign',
      leaf: srv({ keyUsage: ['digitalSignature', 'keyCertSign'] }),
      ...chain,
      expect: 'BASIC_CONSTRAINTS',
      profiles: { compat: null },
      openssl: /Key usage keyCertSign invalid for non-CA cert/,
      pyca: false,
    },
    {
      name: 'a CA certificate as the server leaf',
      leaf: srv({ ca: true, keyUsage: ['digitalSignature', 'keyCertSign'] }),
      ...chain,
      expect: 'CA_AS_LEAF',
      openssl: null,
      pyca: false,
    },
    (() => {
      // Int (pathlen:0) -> Int again with a new key (self-issued: key rollover) -> leaf: nothing counts below Int.
      const rolled = makeCert({ cn: 'Matrix Int', ca: true, issuer: int });
      return {
        name: 'pathlen:0 over a self-issued intermediate (RFC 5280 6.1.4 (l) does not count it)',
        leaf: under(rolled),
        ...chain,
        untrusted: [int, rolled],
        expect: null,
        openssl: null,
        pyca: false,
      };
    })(),

    // ---- names (4.1.2.4, 4.1.2.6, 4.2.1.6) ----
    (() => {
      const anon = makeCert({ cn: '', subject: [], ca: true, dns: ['anon-root.example.org'], sanCritical: true });
      return {
        name: 'a CA with an empty subject, and its leaf with an empty issuer',
        leaf: under(anon),
        ...chain,
        anchors: [anon],
        untrusted: [],
        expect: 'NAMES' as const,
        profiles: { compat: null },
        openssl: /Issuer name empty|Subject name empty/,
        pyca: false,
      };
    })(),
    {
      name: 'empty subject with a non-critical subjectAltName',
      leaf: srv({ subject: [] }),
      ...chain,
      expect: 'NAMES',
      profiles: { compat: null },
      openssl: /subject alt name not critical|Subject empty and Subject Alt Name/i,
      pyca: false,
    },
    {
      name: 'empty subject with a critical subjectAltName (valid)',
      leaf: srv({ subject: [], sanCritical: true }),
      ...chain,
      expect: null,
      openssl: null,
      pyca: true,
    },
    {
      name: 'critical subjectAltName beside a non-empty subject',
      leaf: srv({ sanCritical: true }),
      ...chain,
      expect: 'NAMES',
      profiles: { rfc5280: null, compat: null },
      openssl: null,
      pyca: false,
    },
    {
      name: 'a dNSName with an underscore',
      leaf: srv({ dns: [GOOD, 'bad_name.example.org'] }),
      ...chain,
      expect: 'NAMES',
      profiles: { compat: null },
      openssl: null,
      pyca: true,
    },
    {
      name: 'a dNSName with an empty label',
      leaf: srv({ dns: [GOOD, 'a..example.org'] }),
      ...chain,
      expect: 'NAMES',
      profiles: { compat: null },
      openssl: null,
      pyca: true,
    },
    {
      name: 'a URI name that is not absolute',
      leaf: srv({ uri: ['just/a/path'] }),
      ...chain,
      expect: 'NAMES',
      profiles: { compat: null },
      openssl: null,
      pyca: true,
    },
    {
      name: 'an rfc822Name without a domain',
      leaf: srv({ email: ['nobody'] }),
      ...chain,
      expect: 'NAMES',
      profiles: { compat: null },
      openssl: null,
      pyca: true,
    },

    // ---- name constraints (4.2.1.10) ----
    {
      name: 'a name constraint does not make an invalid dNSName acceptable',
      leaf: under(constrained, { dns: ['a.example.org', 'b_c.example.org'] }),
      ...withCa(constrained),
      dns: 'a.example.org',
      expect: 'NAMES',
      profiles: { compat: null },
      openssl: null,
      pyca: false,
    },
    (() => {
      const byOrg = makeCert({
        cn: 'Org Int',
        ca: true,
        issuer: root,
        nameConstraints: { permittedDirectory: [[{ oid: OID.organizationName, value: 'Good Org' }]] },
      });
      const subject = [
        { oid: OID.organizationName, value: 'Evil Org' },
        { oid: OID.commonName, value: 'evil' },
      ];
      return {
        name: 'a directoryName constraint checked against the subject',
        leaf: under(byOrg, { subject }),
        ...withCa(byOrg),
        expect: 'NAME_CONSTRAINTS' as const,
        openssl: /permitted subtree violation/,
        pyca: true,
      };
    })(),
    (() => {
      const empty = makeCert({
        cn: 'Empty Subtree Int',
        ca: true,
        issuer: root,
        extra: [ext(OID.nameConstraints, seq(tlv(0xa0, Buffer.alloc(0))), true)],
      });
      return {
        name: 'nameConstraints with an empty permitted subtree list',
        leaf: under(empty),
        ...withCa(empty),
        expect: 'MALFORMED' as const,
        openssl: null,
        pyca: false,
      };
    })(),

    // ---- extended key usage (4.2.1.12) ----
    {
      name: 'a leaf without extended key usage',
      leaf: srv({ eku: undefined }),
      ...chain,
      expect: 'WRONG_PURPOSE',
      profiles: { rfc5280: null, compat: null },
      openssl: null,
      pyca: true,
    },
    {
      name: 'anyExtendedKeyUsage alone in a leaf',
      leaf: srv({ eku: [OID.anyExtendedKeyUsage] }),
      ...chain,
      expect: 'WRONG_PURPOSE',
      openssl: /unsuitable certificate purpose/,
      pyca: false,
    },
    {
      name: 'a critical extended key usage in a leaf',
      leaf: srv({ ekuCritical: true }),
      ...chain,
      expect: 'WRONG_PURPOSE',
      profiles: { rfc5280: null, compat: null },
      openssl: null,
      pyca: false,
    },
    (() => {
      const clientRoot = makeCert({ cn: 'Client-only Root', ca: true, eku: [OID.clientAuth] });
      return {
        name: 'a trust anchor whose EKU does not allow serverAuth',
        leaf: under(clientRoot),
        ...chain,
        anchors: [clientRoot],
        untrusted: [],
        expect: 'WRONG_PURPOSE' as const,
        openssl: /unsuitable certificate purpose/,
        pyca: false,
      };
    })(),

    // ---- authority information (4.2.2.1, 4.2.1.13) ----
    {
      name: 'authorityInfoAccess marked critical',
      leaf: srv({
        extra: [ext(OID.authorityInfoAccess, seq(seq(encodeOid(OID.ocsp), uri('http://ocsp.example/'))), true)],
      }),
      ...chain,
      expect: 'AUTHORITY_INFO',
      openssl: /unhandled critical extension/,
      pyca: false,
    },
    {
      name: 'an empty authorityInfoAccess',
      leaf: srv({ extra: [ext(OID.authorityInfoAccess, seq())] }),
      ...chain,
      expect: 'MALFORMED',
      openssl: null,
      pyca: true,
    },
    {
      name: 'an authorityInfoAccess whose location is not a URI',
      leaf: srv({ extra: [ext(OID.authorityInfoAccess, seq(seq(encodeOid(OID.ocsp), uri('ocsp.example'))))] }),
      ...chain,
      expect: 'MALFORMED',
      openssl: null,
      pyca: true,
    },
    {
      name: 'a CRL distribution point with only reasons',
      leaf: srv({ extra: [ext(OID.crlDistributionPoints, seq(seq(tlv(0x81, Buffer.from([0x07, 0x80])))))] }),
      ...chain,
      expect: 'MALFORMED',
      openssl: /unable to get local issuer certificate/,
      pyca: true,
    },
    {
      name: 'CRL distribution points marked critical',
      leaf: srv({
        extra: [ext(OID.crlDistributionPoints, seq(seq(tlv(0xa0, tlv(0xa0, uri('http://crl.example/c.crl'))))), true)],
      }),
      ...chain,
      expect: 'AUTHORITY_INFO',
      profiles: { compat: null },
      openssl: null,
      pyca: false,
    },

    // ---- algorithms ----
    {
      name: 'a DSA key',
      leaf: srv({ keys: crypto.generateKeyPairSync('dsa', { modulusLength: 2048, divisorLength: 256 }) }),
      ...chain,
      expect: 'WEAK_KEY',
      openssl: null,
      pyca: true,
    },
    {
      name: 'a P-192 key',
      leaf: srv({ keys: crypto.generateKeyPairSync('ec', { namedCurve: 'prime192v1' }) }),
      ...chain,
      expect: 'WEAK_KEY',
      openssl: null,
      pyca: true,
    },
    {
      name: 'an RSA key of 1024 bits',
      leaf: srv({ keys: crypto.generateKeyPairSync('rsa', { modulusLength: 1024 }) }),
      ...chain,
      expect: 'WEAK_KEY',
      openssl: null,
      pyca: true,
    },
    {
      name: 'a SHA-1 signature',
      leaf: srv({ sha1: true }),
      ...chain,
      expect: 'BAD_SIGNATURE',
      openssl: null,
      pyca: false,
    },

    // ---- path building: several candidates, the first valid path wins ----
    (() => {
      const a = makeCert({ cn: 'Cross Root A', ca: true });
      const b = makeCert({ cn: 'Cross Root B', ca: true });
      const crossA = makeCert({
        cn: 'Cross Root A',
        ca: true,
        issuer: b,
        keys: { privateKey: a.key, publicKey: a.cert.publicKey! },
      });
      const intA = makeCert({ cn: 'Cross Int', ca: true, issuer: a });
      return {
        name: 'cross-signed: the self-signed root is not trusted, its cross-certificate leads to a trusted one',
        leaf: under(intA),
        ...chain,
        anchors: [b],
        untrusted: [intA, a, crossA],
        expect: null,
        openssl: /self-signed certificate in certificate chain/,
        opensslMissesPath: true,
        pyca: true,
      };
    })(),
    (() => {
      const old = makeCert({
        cn: 'Matrix Int',
        ca: true,
        pathLen: 0,
        issuer: root,
        keys: intKeys,
        notBefore: new Date(Date.now() - 90 * DAY),
        notAfter: new Date(Date.now() - DAY),
      });
      return {
        name: 'an expired copy of the intermediate offered first',
        leaf: srv(),
        ...chain,
        untrusted: [old, int],
        expect: null,
        openssl: null,
        pyca: true,
      };
    })(),
    (() => {
      const clientOnly = makeCert({
        cn: 'Matrix Int',
        ca: true,
        pathLen: 0,
        issuer: root,
        keys: intKeys,
        eku: [OID.clientAuth],
      });
      return {
        name: 'a client-only copy of the intermediate offered first',
        leaf: srv(),
        ...chain,
        untrusted: [clientOnly, int],
        expect: null,
        openssl: /unsuitable certificate purpose/,
        opensslMissesPath: true,
        pyca: true,
      };
    })(),
  ];
  return cases;
}
