import crypto, { type KeyObject } from 'node:crypto';
import { decodeOid, encodeOid, readChildren, readSingle, seq, tlv, type Tlv } from './der.js';
import { addGeneralName, emptyNames, parseGeneralNames, type SubjectNames } from './general-names.js';
import { spkiDer, spkiKeyBits } from './keys.js';
import { buildName, cidrRange, ipBytes } from './names.js';
import { OID } from './oid.js';

/** An extension as it sits in a certificate. */
export interface RawExtension {
  oid: string;
  critical: boolean;
  value: Buffer;
}

export const KEY_USAGES = [
  'digitalSignature',
  'nonRepudiation',
  'keyEncipherment',
  'dataEncipherment',
  'keyAgreement',
  'keyCertSign',
  'cRLSign',
  'encipherOnly',
  'decipherOnly',
] as const;
export type KeyUsageName = (typeof KEY_USAGES)[number];

export interface BasicConstraints {
  ca: boolean;
  pathLen?: number;
}

/** Permitted and excluded subtrees, by name form (RFC 5280 4.2.1.10). IP entries are CIDR text. */
export interface NameConstraints {
  permitted?: SubjectNames;
  excluded?: SubjectNames;
}

// ---- building ----

/** Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE (absent when false), extnValue OCTET STRING }. */
export function extensionDer(e: RawExtension): Buffer {
  return seq(encodeOid(e.oid), ...(e.critical ? [Buffer.from([0x01, 0x01, 0xff])] : []), tlv(0x04, e.value));
}

export function basicConstraintsExt(ca: boolean, pathLen?: number): RawExtension {
  const parts: Buffer[] = [];
  if (ca) parts.push(Buffer.from([0x01, 0x01, 0xff]));
  if (pathLen !== undefined) parts.push(encodeSmallInteger(pathLen));
  return { oid: OID.basicConstraints, critical: true, value: seq(...parts) };
}

function encodeSmallInteger(n: number): Buffer {
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  if (bytes.length === 0 || bytes[0]! & 0x80) bytes.unshift(0);
  return tlv(0x02, Buffer.from(bytes));
}

/** KeyUsage as a DER BIT STRING with trailing zero bits removed (X.690 11.2.2), always critical. */
export function keyUsageExt(usages: KeyUsageName[]): RawExtension {
  let bits = 0;
  for (const u of usages) bits |= 1 << KEY_USAGES.indexOf(u);
  const highest = 31 - Math.clz32(bits);
  const nbytes = Math.floor(highest / 8) + 1;
  const body = Buffer.alloc(nbytes);
  for (let i = 0; i <= highest; i++) if (bits & (1 << i)) body[i >> 3]! |= 0x80 >> (i & 7);
  const unused = nbytes * 8 - (highest + 1);
  return { oid: OID.keyUsage, critical: true, value: Buffer.concat([Buffer.from([0x03, nbytes + 1, unused]), body]) };
}

export function extKeyUsageExt(oids: string[], critical = false): RawExtension {
  return { oid: OID.extKeyUsage, critical, value: seq(...oids.map(encodeOid)) };
}

export interface SanInput {
  dns?: string[];
  ip?: string[];
  email?: string[];
  uri?: string[];
}

/** A GeneralName of an IA5String form (rfc822Name 0x81, dNSName 0x82, URI 0x86), under its context tag. */
const ia5 = (tag: number) => (v: string) => tlv(tag, Buffer.from(v, 'latin1'));

/** RFC 5280: the SAN must be critical when the subject is empty. */
export function subjectAltNameExt(names: SanInput, critical: boolean): RawExtension {
  const value = seq(
    ...(names.dns ?? []).map(ia5(0x82)),
    ...(names.ip ?? []).map((i) => tlv(0x87, ipBytes(i))),
    ...(names.email ?? []).map(ia5(0x81)),
    ...(names.uri ?? []).map(ia5(0x86)),
  );
  return { oid: OID.subjectAltName, critical, value };
}

export interface NameConstraintsInput {
  permittedDns?: string[];
  permittedIp?: string[];
  permittedUri?: string[];
  permittedEmail?: string[];
  excludedDns?: string[];
  excludedIp?: string[];
  /** Directory names (DNs), as attribute lists in order. */
  permittedDirectory?: { oid: string; value: string }[][];
}

/** NameConstraints, critical as RFC 5280 requires. IPs are CIDR text (`10.0.0.0/8`). */
export function nameConstraintsExt(nc: NameConstraintsInput): RawExtension {
  // GeneralSubtrees ::= SEQUENCE SIZE (1..MAX) OF GeneralSubtree { base GeneralName } (minimum and maximum
  // absent), under the [0] or [1] IMPLICIT tag of its field.
  const subtrees = (
    tag: number,
    dns: string[] = [],
    ip: string[] = [],
    uri: string[] = [],
    email: string[] = [],
    dirs: { oid: string; value: string }[][] = [],
  ): Buffer[] => {
    const bases = [
      ...dirs.map((d) => tlv(0xa4, buildName(d))),
      ...dns.map(ia5(0x82)),
      ...ip.map((i) => tlv(0x87, cidrBytes(i))),
      ...uri.map(ia5(0x86)),
      ...email.map(ia5(0x81)),
    ];
    return bases.length ? [tlv(tag, Buffer.concat(bases.map((base) => seq(base))))] : [];
  };
  const value = seq(
    ...subtrees(0xa0, nc.permittedDns, nc.permittedIp, nc.permittedUri, nc.permittedEmail, nc.permittedDirectory),
    ...subtrees(0xa1, nc.excludedDns, nc.excludedIp),
  );
  return { oid: OID.nameConstraints, critical: true, value };
}

/** A CIDR range (`10.0.0.0/8`, `fd00::/8`) as a name constraint's iPAddress: the address, then the mask. */
function cidrBytes(cidr: string): Buffer {
  const { addr, prefix } = cidrRange(cidr);
  const mask = Buffer.alloc(addr.length);
  for (let i = 0; i < prefix; i++) mask[i >> 3]! |= 0x80 >> (i & 7);
  return Buffer.concat([addr, mask]);
}

/** CRLDistributionPoints (RFC 5280 4.2.1.13) with one full-name URI per point, not critical. */
export function crlDistributionPointsExt(urls: string[]): RawExtension {
  const points = urls.map((u) => seq(tlv(0xa0, tlv(0xa0, tlv(0x86, Buffer.from(u, 'latin1'))))));
  return { oid: OID.crlDistributionPoints, critical: false, value: seq(...points) };
}

/** AuthorityInfoAccess (RFC 5280 4.2.2.1): OCSP responders and issuer certificates by URI, not critical. */
export function authorityInfoAccessExt(a: { ocsp?: string[]; caIssuers?: string[] }): RawExtension {
  const access = (method: string) => (u: string) => seq(encodeOid(method), tlv(0x86, Buffer.from(u, 'latin1')));
  const items = [...(a.ocsp ?? []).map(access(OID.ocsp)), ...(a.caIssuers ?? []).map(access(OID.caIssuers))];
  return { oid: OID.authorityInfoAccess, critical: false, value: seq(...items) };
}

/** RFC 7093 section 2 method 1: the leftmost 160 bits of the SHA-256 of the subjectPublicKey bits. */
export function keyIdentifier(publicKey: KeyObject): Buffer {
  return crypto
    .createHash('sha256')
    .update(spkiKeyBits(spkiDer(publicKey)))
    .digest()
    .subarray(0, 20);
}

export function subjectKeyIdExt(keyId: Buffer): RawExtension {
  return { oid: OID.subjectKeyIdentifier, critical: false, value: tlv(0x04, keyId) };
}

export function authorityKeyIdExt(keyId: Buffer): RawExtension {
  return { oid: OID.authorityKeyIdentifier, critical: false, value: seq(tlv(0x80, keyId)) };
}

// ---- parsing: each returns the value, or throws with a message naming the extension ----

/** BasicConstraints ::= SEQUENCE { cA BOOLEAN DEFAULT FALSE, pathLenConstraint INTEGER (0..MAX) OPTIONAL }. */
export function parseBasicConstraints(value: Buffer): BasicConstraints {
  const t = readSingle(value, 'basicConstraints');
  if (t.tag !== 0x30) throw new Error('not a SEQUENCE');
  const parts = readChildren(t.value, 'basicConstraints');
  let ca = false;
  let i = 0;
  if (parts[0]?.tag === 0x01) {
    if (parts[0].value.length !== 1 || (parts[0].value[0] !== 0 && parts[0].value[0] !== 0xff))
      throw new Error('cA is not a DER BOOLEAN');
    ca = parts[0].value[0] === 0xff;
    i = 1;
  }
  const pl = parts[i];
  if (parts.length > i + 1 || (pl && pl.tag !== 0x02)) throw new Error('unexpected fields');
  if (!pl) return { ca };
  if (pl.value.length === 0 || pl.value.length > 4 || pl.value[0]! & 0x80)
    throw new Error('pathLenConstraint out of range');
  if (!ca) throw new Error('pathLenConstraint without CA:TRUE');
  return { ca, pathLen: pl.value.readUIntBE(0, pl.value.length) };
}

export function parseKeyUsage(value: Buffer): KeyUsageName[] {
  const t = readSingle(value, 'keyUsage');
  if (t.tag !== 0x03 || t.value.length < 1) throw new Error('not a BIT STRING');
  const unused = t.value[0]!;
  const bytes = t.value.subarray(1);
  if (unused > 7 || (bytes.length === 0 && unused !== 0)) throw new Error('bad unused-bits count');
  const out: KeyUsageName[] = [];
  for (let i = 0; i < bytes.length * 8 - unused; i++) {
    if (bytes[i >> 3]! & (0x80 >> (i & 7))) {
      const name = KEY_USAGES[i];
      if (name) out.push(name);
    }
  }
  if (out.length === 0) throw new Error('no key usage bit is set');
  return out;
}

export function parseExtKeyUsage(value: Buffer): string[] {
  const t = readSingle(value, 'extKeyUsage');
  if (t.tag !== 0x30) throw new Error('not a SEQUENCE');
  const list = readChildren(t.value, 'extKeyUsage').map((o) => {
    if (o.tag !== 0x06) throw new Error('not an OBJECT IDENTIFIER');
    return decodeOid(o.value, 'extKeyUsage');
  });
  if (list.length === 0) throw new Error('empty extended key usage list');
  return list;
}

export function parseSubjectAltName(value: Buffer): SubjectNames {
  return parseGeneralNames(value, 'subjectAltName');
}

export function parseNameConstraints(value: Buffer): NameConstraints {
  const seq = readSingle(value, 'nameConstraints');
  if (seq.tag !== 0x30) throw new Error('not a SEQUENCE');
  const out: NameConstraints = {};
  for (const part of readChildren(seq.value, 'nameConstraints')) {
    if (part.tag !== 0xa0 && part.tag !== 0xa1) throw new Error(`unexpected field 0x${part.tag.toString(16)}`);
    const names = emptyNames();
    const subtrees = readChildren(part.value, 'GeneralSubtree');
    if (subtrees.length === 0) throw new Error('an empty subtree list (GeneralSubtrees holds at least one)');
    for (const subtree of subtrees) {
      if (subtree.tag !== 0x30) throw new Error('GeneralSubtree is not a SEQUENCE');
      const [base, ...rest] = readChildren(subtree.value, 'GeneralSubtree');
      if (!base) throw new Error('GeneralSubtree without a base');
      // RFC 5280: minimum MUST be zero (absent in DER) and maximum MUST be absent.
      if (rest.length > 0) throw new Error('minimum/maximum in a GeneralSubtree are not allowed');
      addGeneralName(base, names, true);
    }
    if (names.problems.length) throw new Error(names.problems.join('; '));
    if (part.tag === 0xa0) out.permitted = names;
    else out.excluded = names;
  }
  if (!out.permitted && !out.excluded) throw new Error('neither permitted nor excluded subtrees');
  return out;
}

export function parseKeyId(value: Buffer): Buffer {
  const t = readSingle(value, 'subjectKeyIdentifier');
  if (t.tag !== 0x04) throw new Error('not an OCTET STRING');
  return Buffer.from(t.value);
}

/** The optional fields of a SEQUENCE, each at most once and in the order of `tags` (DER). */
function inOrder(fields: Tlv[], tags: number[], what: string): Tlv[] {
  let last = -1;
  for (const f of fields) {
    const at = tags.indexOf(f.tag);
    if (at <= last) throw new Error(`unexpected or repeated field 0x${f.tag.toString(16)} in ${what}`);
    last = at;
  }
  return fields;
}

/** What an authorityKeyIdentifier holds (RFC 5280 4.2.1.1). */
export interface AuthorityKeyId {
  keyId?: Buffer;
  /** authorityCertIssuer and authorityCertSerialNumber (X.509: both or neither). */
  issuerAndSerial: boolean;
}

/**
 * AuthorityKeyIdentifier ::= SEQUENCE { keyIdentifier [0] IMPLICIT OCTET STRING OPTIONAL,
 * authorityCertIssuer [1] GeneralNames OPTIONAL, authorityCertSerialNumber [2] CertificateSerialNumber OPTIONAL },
 * each field at most once and in this order.
 */
export function parseAuthorityKeyId(value: Buffer): AuthorityKeyId {
  const t = readSingle(value, 'authorityKeyIdentifier');
  if (t.tag !== 0x30) throw new Error('not a SEQUENCE');
  const fields = inOrder(readChildren(t.value, 'authorityKeyIdentifier'), [0x80, 0xa1, 0x82], 'authorityKeyIdentifier');
  const has = (tag: number) => fields.some((f) => f.tag === tag);
  if (has(0xa1) !== has(0x82)) throw new Error('authorityCertIssuer and authorityCertSerialNumber come together');
  const id = fields.find((c) => c.tag === 0x80);
  return { ...(id ? { keyId: Buffer.from(id.value) } : {}), issuerAndSerial: has(0xa1) };
}

/** Where to find an issuer's certificate and its OCSP responder (RFC 5280 4.2.2.1), URIs only. */
export interface AuthorityInfoAccess {
  ocsp: string[];
  caIssuers: string[];
}

/** AuthorityInfoAccessSyntax ::= SEQUENCE SIZE (1..MAX) OF AccessDescription { accessMethod, accessLocation }. */
export function parseAuthorityInfoAccess(value: Buffer): AuthorityInfoAccess {
  const t = readSingle(value, 'authorityInfoAccess');
  if (t.tag !== 0x30) throw new Error('not a SEQUENCE');
  const items = readChildren(t.value, 'authorityInfoAccess');
  if (items.length === 0) throw new Error('empty (at least one access description is required)');
  const out: AuthorityInfoAccess = { ocsp: [], caIssuers: [] };
  for (const item of items) {
    const [method, location, extra] = item.tag === 0x30 ? readChildren(item.value, 'AccessDescription') : [];
    if (!method || method.tag !== 0x06 || !location || extra) throw new Error('AccessDescription is malformed');
    const names = namesOf([location], 'accessLocation');
    const oid = decodeOid(method.value, 'accessMethod');
    if (oid === OID.ocsp) out.ocsp.push(...names.uri);
    else if (oid === OID.caIssuers) out.caIssuers.push(...names.uri);
  }
  return out;
}

/**
 * CRLDistributionPoints ::= SEQUENCE SIZE (1..MAX) OF DistributionPoint { distributionPoint [0]
 * DistributionPointName OPTIONAL, reasons [1] ReasonFlags OPTIONAL, cRLIssuer [2] GeneralNames OPTIONAL }, where
 * a point is not the reasons alone (RFC 5280 4.2.1.13). Returns the URIs of the full names.
 */
export function parseCrlDistributionPoints(value: Buffer): string[] {
  const t = readSingle(value, 'cRLDistributionPoints');
  if (t.tag !== 0x30) throw new Error('not a SEQUENCE');
  const points = readChildren(t.value, 'cRLDistributionPoints');
  if (points.length === 0) throw new Error('empty (at least one distribution point is required)');
  const urls: string[] = [];
  for (const p of points) {
    if (p.tag !== 0x30) throw new Error('DistributionPoint is not a SEQUENCE');
    const fields = inOrder(readChildren(p.value, 'DistributionPoint'), [0xa0, 0x81, 0xa2], 'a DistributionPoint');
    const dp = fields.find((f) => f.tag === 0xa0);
    const issuer = fields.find((f) => f.tag === 0xa2);
    if (!dp && !issuer) throw new Error('a DistributionPoint names neither a point nor a CRL issuer');
    if (issuer) namesOf(readChildren(issuer.value, 'cRLIssuer'), 'cRLIssuer');
    if (dp) {
      const choice = readSingle(dp.value, 'distributionPoint');
      if (choice.tag === 0xa0) urls.push(...namesOf(readChildren(choice.value, 'fullName'), 'fullName').uri);
      else if (choice.tag !== 0xa1) throw new Error('distributionPoint is neither a fullName nor a relative name');
    }
  }
  return urls;
}

/** GeneralName values that must be well formed and at least one. */
function namesOf(list: Tlv[], field: string): SubjectNames {
  if (list.length === 0) throw new Error(`${field} is empty`);
  const names = emptyNames();
  for (const n of list) addGeneralName(n, names);
  if (names.problems.length) throw new Error(`${field}: ${names.problems.join('; ')}`);
  const badUri = names.uri.find((u) => uriProblem(u));
  if (badUri !== undefined) throw new Error(`${field}: ${uriProblem(badUri)}`);
  return names;
}

/**
 * RFC 5280 4.2.1.6 and RFC 3986: a URI name is absolute (a scheme, then a scheme-specific part) and has no
 * characters a URI cannot hold unescaped. Returns why not, or undefined.
 */
export function uriProblem(uri: string): string | undefined {
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):(.+)$/.exec(uri);
  if (!m) return `URI '${uri}' has no scheme and scheme-specific part (a URI name must be absolute)`;
  if (/[\s"<>\\^`{|}]/.test(uri)) return `URI '${uri}' holds characters that must be percent-encoded`;
  if (/%(?![0-9A-Fa-f]{2})/.test(uri)) return `URI '${uri}' has a broken percent-encoding`;
  return undefined;
}
