import { type MtlsErrorCode } from '../errors.js';
import { relativeTime, shortTime } from '../text/duration.js';
import { UNDERSTOOD_EXTENSIONS, type Certificate } from './certificate.js';
import { keyWeakness, spkiWeakness } from './keys.js';
import { dnsNameMatches, nameConstraintViolations, sameDn } from './name-match.js';
import { uriProblem } from './extensions.js';
import { dnsNameProblem, emailProblem, formatDn, parseSpiffeId, type SpiffeId } from './names.js';
import { OID, oidName } from './oid.js';

/**
 * The rules a candidate path must pass (RFC 5280 6.1, and where the strict profile is stricter: docs/verify.md),
 * each finding a problem with its code; verify.ts builds the candidate paths and picks the first that passes.
 */

export type Purpose = 'server' | 'client' | 'any';

/**
 * How strict (docs/verify.md has the table): `strict` (the default) adds the webpki/pyca rules to RFC 5280's;
 * `rfc5280` accepts what the RFC allows (a leaf without EKU, anyExtendedKeyUsage, a critical EKU or SAN);
 * `compat` also accepts what conforming CAs must not issue but `openssl verify` accepts (no key identifiers, a
 * non-critical basicConstraints, empty names), for old private PKIs. No profile accepts what OpenSSL refuses.
 */
export const PROFILES = ['strict', 'rfc5280', 'compat'] as const;
export type Profile = (typeof PROFILES)[number];
const RANK: Record<Profile, number> = { compat: 0, rfc5280: 1, strict: 2 };
/** Whether a rule of profile `rule` applies when validating under `profile`. */
const applies = (profile: Profile, rule: Profile) => RANK[profile] >= RANK[rule];

/** What path validation can find, each mapped once to the error code that reports it (src/errors.ts). */
export const VERIFY_PROBLEMS = {
  EXPIRED: 'CERT_EXPIRED',
  NOT_YET_VALID: 'CERT_NOT_YET_VALID',
  UNKNOWN_ISSUER: 'CERT_UNTRUSTED',
  BAD_SIGNATURE: 'CERT_UNTRUSTED',
  ISSUER_NOT_CA: 'CERT_INVALID',
  PATH_LENGTH_EXCEEDED: 'CERT_INVALID',
  DEPTH_EXCEEDED: 'CERT_INVALID',
  KEY_USAGE: 'CERT_INVALID',
  WRONG_PURPOSE: 'CERT_WRONG_PURPOSE',
  CA_AS_LEAF: 'CERT_INVALID',
  NAME_CONSTRAINTS: 'CERT_INVALID',
  NAME_MISMATCH: 'SERVER_IDENTITY_MISMATCH',
  SPIFFE_ID_MISMATCH: 'SERVER_IDENTITY_MISMATCH',
  UNKNOWN_CRITICAL_EXTENSION: 'CERT_INVALID',
  MALFORMED: 'CERT_INVALID',
  WEAK_KEY: 'CERT_INVALID',
  PATH_BUDGET: 'CERT_INVALID',
  KEY_IDENTIFIER: 'CERT_INVALID',
  BASIC_CONSTRAINTS: 'CERT_INVALID',
  NAMES: 'CERT_INVALID',
  AUTHORITY_INFO: 'CERT_INVALID',
  /** Listed by the CRL of its issuer, or revoked by its OCSP responder (mtls verify --crl, --ocsp). */
  REVOKED: 'CERT_REVOKED',
  /** No revocation status could be had: no CRL of its issuer, a responder down or an answer not to be trusted. */
  REVOCATION_UNKNOWN: 'REVOCATION_UNKNOWN',
} as const satisfies Record<string, MtlsErrorCode>;

export type VerifyProblemCode = keyof typeof VERIFY_PROBLEMS;

export interface VerifyProblem {
  code: VerifyProblemCode;
  /** One sentence in plain words, naming the certificate. */
  message: string;
  /** Index of the certificate in `chain` (0 = the leaf). */
  depth: number;
}

export interface VerifyResult {
  valid: boolean;
  /** The path that was judged (leaf first, the trust anchor last when one was reached). */
  chain: Certificate[];
  problems: VerifyProblem[];
  /** The leaf's SPIFFE ID when it has exactly one valid one. */
  spiffeId?: SpiffeId;
}

/** A short name for messages: the CN, else the first SAN, else the DN, else the serial. */
export function certLabel(c: Certificate): string {
  const cn = c.subject.filter((a) => a.oid === OID.commonName).at(-1)?.value;
  return cn ?? c.san?.dns[0] ?? c.san?.uri[0] ?? (c.subject.length ? formatDn(c.subject) : `serial ${c.serialHex}`);
}

export const isSelfIssued = (c: Certificate) => sameDn(c.subject, c.issuer);

export interface JudgeContext {
  at: Date;
  purpose: Purpose;
  dns: string | undefined;
  ip: string | undefined;
  pattern: ((id: SpiffeId) => boolean) | undefined;
  patternText: string | undefined;
  maxDepth: number;
  profile: Profile;
}

export function judgePath(chain: Certificate[], anchored: boolean, ctx: JudgeContext): VerifyResult {
  const problems: VerifyProblem[] = [];
  const add = (code: VerifyProblemCode, depth: number, message: string) => problems.push({ code, depth, message });
  const leaf = chain[0]!;
  const purposeOid = ctx.purpose === 'server' ? OID.serverAuth : ctx.purpose === 'client' ? OID.clientAuth : undefined;

  chain.forEach((c, i) => {
    const name = `'${certLabel(c)}'`;
    // The leaf's key is judged from its DER (loading it costs more than the rest of the validation); an issuer's
    // is loaded already, its signature checked. A failure to load is recorded in c.problems, so first.
    const fast = i === 0 ? spkiWeakness(c.spkiDer) : undefined;
    const key = fast === undefined ? c.publicKey : undefined;
    for (const p of c.problems) add('MALFORMED', i, `${name}: ${p}`);
    if (ctx.at < c.notBefore)
      add(
        'NOT_YET_VALID',
        i,
        `${name} is not valid until ${shortTime(c.notBefore)} (${relativeTime(c.notBefore, ctx.at)})`,
      );
    if (ctx.at > c.notAfter)
      add('EXPIRED', i, `${name} expired ${relativeTime(c.notAfter, ctx.at)} (${shortTime(c.notAfter)})`);
    for (const e of c.extensions) {
      if (e.critical && !UNDERSTOOD_EXTENSIONS.has(e.oid))
        add(
          'UNKNOWN_CRITICAL_EXTENSION',
          i,
          `${name} has a critical extension ${oidName(e.oid)} that we do not understand`,
        );
    }
    const selfSigned = i < chain.length - 1 ? chain[i + 1]!.spkiDer.equals(c.spkiDer) : isSelfSignedAlone(c);
    for (const problem of identifierProblems(c, selfSigned, ctx.profile))
      add('KEY_IDENTIFIER', i, `${name} ${problem}`);
    for (const [code, problem] of criticalityProblems(c, ctx.profile)) add(code, i, `${name} ${problem}`);
    if (anchored && i === chain.length - 1 && i > 0)
      for (const problem of anchorProblems(c, ctx.profile)) add('KEY_IDENTIFIER', i, `${name} ${problem}`);
    for (const problem of constraintProblems(c, ctx.profile)) add('BASIC_CONSTRAINTS', i, `${name} ${problem}`);
    for (const problem of nameProblems(c, ctx.profile)) add('NAMES', i, `${name} ${problem}`);
    if (fast) add(fast.malformed ? 'MALFORMED' : 'WEAK_KEY', i, `${name}: ${fast.why}`);
    const weak = key ? keyWeakness(key) : null;
    if (weak) add('WEAK_KEY', i, `${name}: ${weak}`);
    if (i === 0) return;
    // c issues chain[i-1]: it must be a CA allowed to sign certificates (RFC 5280 6.1.4 (k), (n)).
    const anchorV1 = anchored && i === chain.length - 1 && c.version === 1;
    if (!anchorV1 && !c.basicConstraints?.ca)
      add(
        'ISSUER_NOT_CA',
        i,
        `issuer ${name} is not a CA (${c.basicConstraints ? 'basicConstraints CA:FALSE' : 'no basicConstraints'}), ` +
          `so it cannot sign '${certLabel(chain[i - 1]!)}'`,
      );
    if (c.keyUsage && !c.keyUsage.includes('keyCertSign'))
      add('KEY_USAGE', i, `issuer ${name} lacks the keyCertSign key usage, so it cannot sign certificates`);
    const pathLen = c.basicConstraints?.pathLen;
    const below = chain.slice(1, i).filter((x) => !isSelfIssued(x)).length;
    if (pathLen !== undefined && below > pathLen) {
      add(
        'PATH_LENGTH_EXCEEDED',
        i,
        `issuer ${name} allows ${pathLen} intermediate CA${pathLen === 1 ? '' : 's'} ` +
          `below it (pathlen:${pathLen}) but the chain has ${below}`,
      );
    }
    if (
      purposeOid &&
      c.extKeyUsage &&
      !c.extKeyUsage.includes(purposeOid) &&
      !c.extKeyUsage.includes(OID.anyExtendedKeyUsage)
    ) {
      add(
        'WRONG_PURPOSE',
        i,
        `issuer ${name} is restricted to ${c.extKeyUsage.map(oidName).join(', ')} ` +
          `and cannot vouch for ${oidName(purposeOid)}`,
      );
    }
    if (c.nameConstraints) {
      chain.slice(0, i).forEach((sub, j) => {
        if (j > 0 && isSelfIssued(sub)) return;
        for (const v of nameConstraintViolations(sub.san ?? emptySan(), sub.subject, c.nameConstraints!)) {
          add('NAME_CONSTRAINTS', j, `'${certLabel(sub)}' violates the name constraints of ${name}: ${v}`);
        }
      });
    }
  });

  // Like a pathLenConstraint on the trust anchor: self-issued intermediates (key rollover) do not count (6.1.4 (l)).
  const intermediates = chain.slice(1, anchored ? -1 : undefined).filter((x) => !isSelfIssued(x)).length;
  if (intermediates > ctx.maxDepth)
    add(
      'DEPTH_EXCEEDED',
      chain.length - 1,
      `the chain has ${intermediates} intermediate CA${intermediates === 1 ? '' : 's'} (not counting self-issued ones), more than the allowed ${ctx.maxDepth}`,
    );

  const leafName = `'${certLabel(leaf)}'`;
  if (purposeOid) {
    if (leaf.basicConstraints?.ca && chain.length > 1)
      add(
        'CA_AS_LEAF',
        0,
        `${leafName} is a CA certificate, not a ${ctx.purpose} certificate; issue an end-entity certificate for it`,
      );
    for (const problem of leafPurposeProblems(leaf, purposeOid, ctx)) add('WRONG_PURPOSE', 0, `${leafName} ${problem}`);
    if (leaf.keyUsage && !leaf.keyUsage.includes('digitalSignature')) {
      add('KEY_USAGE', 0, `${leafName} lacks the digitalSignature key usage needed to sign a TLS handshake`);
    }
  }
  if (ctx.dns !== undefined) {
    const dns = leaf.san?.dns ?? [];
    if (!dns.some((p) => dnsNameMatches(p, ctx.dns!))) {
      add(
        'NAME_MISMATCH',
        0,
        dns.length
          ? `${leafName} is for ${dns.join(', ')}, not '${ctx.dns}'`
          : `${leafName} has no DNS names, so it is not valid for '${ctx.dns}' (the subject ` +
              `CN is not used as a host name)`,
      );
    }
  }
  if (ctx.ip !== undefined) {
    const ips = leaf.san?.ip ?? [];
    if (!ips.includes(ctx.ip))
      add(
        'NAME_MISMATCH',
        0,
        ips.length
          ? `${leafName} is for IP ${ips.join(', ')}, not ${ctx.ip}`
          : `${leafName} has no IP addresses, so it is not valid for ${ctx.ip}`,
      );
  }
  const result: VerifyResult = { valid: false, chain, problems };
  const spiffe = leafSpiffeId(leaf);
  if (spiffe.id) result.spiffeId = spiffe.id;
  if (ctx.pattern) {
    if (!spiffe.id) add('SPIFFE_ID_MISMATCH', 0, `${leafName} ${spiffe.why}`);
    else if (!ctx.pattern(spiffe.id))
      add(
        'SPIFFE_ID_MISMATCH',
        0,
        `${leafName} has SPIFFE ID ${spiffe.id.uri}, which does not match ${ctx.patternText}`,
      );
  }
  result.valid = problems.length === 0 && anchored;
  return result;
}

export function emptySan() {
  return { dns: [], ip: [], email: [], uri: [], directory: [], other: [], problems: [] };
}

/** Extensions RFC 5280 says a conforming CA marks non-critical (4.2.1.1, 4.2.1.2, 4.2.1.13, 4.2.2.1). */
const NEVER_CRITICAL: ReadonlyMap<string, { section: string; profile: Profile; code: VerifyProblemCode }> = new Map([
  // OpenSSL processes none of the first three, so even plain `openssl verify` refuses them critical.
  [OID.authorityKeyIdentifier, { section: '4.2.1.1', profile: 'compat', code: 'KEY_IDENTIFIER' }],
  [OID.subjectKeyIdentifier, { section: '4.2.1.2', profile: 'compat', code: 'KEY_IDENTIFIER' }],
  [OID.authorityInfoAccess, { section: '4.2.2.1', profile: 'compat', code: 'AUTHORITY_INFO' }],
  [OID.crlDistributionPoints, { section: '4.2.1.13', profile: 'rfc5280', code: 'AUTHORITY_INFO' }],
]);

/**
 * Key identifiers as RFC 5280 requires them of a conforming CA, and as `openssl verify -x509_strict` checks them:
 * an authorityKeyIdentifier with a keyIdentifier in every certificate but a self-signed one (4.2.1.1; a self-issued
 * key-rollover certificate needs one) and a subjectKeyIdentifier in every CA certificate (4.2.1.2).
 */
export function identifierProblems(c: Certificate, selfSigned: boolean, profile: Profile): string[] {
  const out: string[] = [];
  if (applies(profile, 'rfc5280')) {
    if (!selfSigned && !c.authorityKeyId)
      out.push(
        'has no authorityKeyIdentifier with a keyIdentifier (RFC 5280 4.2.1.1: every certificate but a self-signed root carries one)',
      );
    if (c.basicConstraints?.ca && !c.subjectKeyId)
      out.push('is a CA certificate without a subjectKeyIdentifier (RFC 5280 4.2.1.2)');
  }
  return out;
}

/** Extensions RFC 5280 wants non-critical, marked critical: [code, why] pairs. */
export function criticalityProblems(c: Certificate, profile: Profile): [VerifyProblemCode, string][] {
  const out: [VerifyProblemCode, string][] = [];
  for (const e of c.extensions) {
    const rule = NEVER_CRITICAL.get(e.oid);
    if (e.critical && rule && applies(profile, rule.profile))
      out.push([rule.code, `marks ${oidName(e.oid)} critical, which RFC 5280 ${rule.section} forbids`]);
  }
  return out;
}

/** A certificate that is the last of its path: self-signed when self-issued and its AKI, if any, names itself. */
function isSelfSignedAlone(c: Certificate): boolean {
  return isSelfIssued(c) && (!c.authorityKeyId || !c.subjectKeyId || c.authorityKeyId.equals(c.subjectKeyId));
}

/**
 * A trust anchor's authorityKeyIdentifier, when it has one, holds only a keyIdentifier (strict, as rustls-webpki)
 * and it is the anchor's own (every profile: OpenSSL then looks for the anchor's issuer and fails too).
 */
export function anchorProblems(c: Certificate, profile: Profile): string[] {
  if (!isSelfIssued(c)) return [];
  const out: string[] = [];
  if (c.authorityKeyIdNamesIssuer && applies(profile, 'strict'))
    out.push(
      'is a trust anchor whose authorityKeyIdentifier names an issuer and serial; a root holds only its own key identifier',
    );
  if (c.authorityKeyId && c.subjectKeyId && !c.authorityKeyId.equals(c.subjectKeyId))
    out.push('is a self-issued trust anchor whose authorityKeyIdentifier is not its own subjectKeyIdentifier');
  return out;
}

/**
 * What a certificate says about being a CA must agree with itself (RFC 5280 4.2.1.9 and 4.2.1.3, as
 * `openssl verify -x509_strict` checks it): a CA certificate marks basicConstraints critical, and only a CA
 * asserts keyCertSign, or carries name constraints (4.2.1.10, which must be critical).
 */
export function constraintProblems(c: Certificate, profile: Profile): string[] {
  const out: string[] = [];
  if (!applies(profile, 'rfc5280')) return out;
  const bc = c.extensions.find((e) => e.oid === OID.basicConstraints);
  if (c.basicConstraints?.ca && bc && !bc.critical) {
    out.push('is a CA certificate whose basicConstraints is not marked critical (RFC 5280 4.2.1.9)');
  }
  if (!c.basicConstraints?.ca && c.keyUsage?.includes('keyCertSign')) {
    out.push('asserts keyCertSign without being a CA (basicConstraints CA:TRUE), which RFC 5280 4.2.1.3 forbids');
  }
  // RFC 5280 4.2.1.10: only in a CA certificate and always critical (an empty one is MALFORMED when parsed).
  // OpenSSL -x509_strict checks neither; pyca/cryptography refuses the first (docs/verify.md).
  const nc = c.extensions.find((e) => e.oid === OID.nameConstraints);
  if (nc) {
    if (!c.basicConstraints?.ca)
      out.push('carries nameConstraints, which only a CA certificate may (RFC 5280 4.2.1.10)');
    if (!nc.critical) out.push('marks nameConstraints non-critical; RFC 5280 4.2.1.10 requires it critical');
  }
  return out;
}

/**
 * Names as RFC 5280 requires them: a non-empty issuer (4.1.2.4); a CA with a non-empty subject (4.1.2.6); an empty
 * subject only with a critical subjectAltName (4.2.1.6), which is non-critical beside a non-empty subject (a
 * SHOULD, so strict only, as pyca/cryptography); every SAN a valid name of its type (4.2.1.6: a dNSName in the
 * preferred name syntax of RFC 1034 with RFC 1123's change, an rfc822Name a mailbox, a URI absolute).
 */
export function nameProblems(c: Certificate, profile: Profile): string[] {
  const out: string[] = [];
  if (!applies(profile, 'rfc5280')) return out;
  if (c.issuer.length === 0) out.push('has an empty issuer name (RFC 5280 4.1.2.4)');
  const san = c.extensions.find((e) => e.oid === OID.subjectAltName);
  if (c.subject.length === 0) {
    if (c.basicConstraints?.ca) out.push('is a CA certificate with an empty subject name (RFC 5280 4.1.2.6)');
    if (!san) out.push('has an empty subject and no subjectAltName, so it names nobody (RFC 5280 4.2.1.6)');
    else if (!san.critical)
      out.push('has an empty subject, so its subjectAltName must be marked critical (RFC 5280 4.2.1.6)');
  } else if (san?.critical && applies(profile, 'strict')) {
    out.push('marks subjectAltName critical beside a non-empty subject (RFC 5280 4.2.1.6 says non-critical)');
  }
  for (const d of c.san?.dns ?? []) {
    const why = dnsNameProblem(d, { wildcard: true });
    if (why) out.push(`has a DNS name '${d}' that is not a host name: ${why} (RFC 5280 4.2.1.6)`);
  }
  for (const e of c.san?.email ?? []) {
    const why = emailProblem(e);
    if (why) out.push(`has an email name '${e}' that is not a mailbox: ${why}`);
  }
  for (const u of c.san?.uri ?? []) {
    const why = uriProblem(u);
    if (why) out.push(`has a subjectAltName that is not a URI: ${why}`);
  }
  return out;
}

/**
 * The leaf's extended key usage for a server or client purpose (RFC 5280 4.2.1.12). When present it must name the
 * purpose; anyExtendedKeyUsage does not (as OpenSSL and webpki), in every profile. The strict profile also wants it
 * present (a leaf without EKU is no TLS certificate, as webpki and pyca/cryptography hold) and not critical (the
 * CA/Browser Forum profiles forbid a critical EKU in a leaf).
 */
export function leafPurposeProblems(leaf: Certificate, purposeOid: string, ctx: JudgeContext): string[] {
  const strict = applies(ctx.profile, 'strict');
  const purpose = oidName(purposeOid);
  const eku = leaf.extKeyUsage;
  if (!eku)
    return strict
      ? [`has no extended key usage; the strict profile requires ${purpose} in a ${ctx.purpose} certificate`]
      : [];
  const out: string[] = [];
  if (!eku.includes(purposeOid))
    out.push(
      `is not a ${ctx.purpose} certificate: its extended key usage is ${eku.map(oidName).join(', ')}, not ${purpose}`,
    );
  if (strict && leaf.extensions.some((e) => e.oid === OID.extKeyUsage && e.critical))
    out.push('marks its extended key usage critical, which the strict profile refuses in a leaf');
  return out;
}

export function leafSpiffeId(c: Certificate): { id?: SpiffeId; why: string } {
  const uris = c.san?.uri ?? [];
  const spiffe = uris.filter((u) => u.toLowerCase().startsWith('spiffe:'));
  if (spiffe.length === 0) return { why: 'has no SPIFFE ID' };
  if (uris.length > 1) return { why: `has ${uris.length} URI SANs; an X.509-SVID has exactly one` };
  try {
    return { id: parseSpiffeId(spiffe[0]!), why: '' };
  } catch (err) {
    return { why: `has an invalid SPIFFE ID: ${(err as Error).message}` };
  }
}
