import crypto, { type KeyObject } from 'node:crypto';
import { MtlsError } from '../errors.js';
import { decodeOid, decodeTime, readChildren, readSingle, type Tlv } from './der.js';
import {
  parseAuthorityInfoAccess,
  parseAuthorityKeyId,
  parseCrlDistributionPoints,
  parseBasicConstraints,
  parseExtKeyUsage,
  parseKeyId,
  parseKeyUsage,
  parseNameConstraints,
  parseSubjectAltName,
  type BasicConstraints,
  type KeyUsageName,
  type NameConstraints,
  type RawExtension,
} from './extensions.js';
import type { SubjectNames } from './general-names.js';
import { parseNameDer, type DnAttribute } from './names.js';
import { loadSpki } from './keys.js';
import { OID, oidName } from './oid.js';
import { decodePem, looksLikePem } from './pem.js';

/** A parsed X.509 certificate: the facts path validation and inspection need, decoded once. */
export interface Certificate {
  der: Buffer;
  tbsDer: Buffer;
  version: number;
  /** The serial's INTEGER content octets; `serialHex` is their lower-case hex. */
  serial: Buffer;
  serialHex: string;
  signatureAlgorithm: string;
  signatureParams?: Buffer;
  signature: Buffer;
  issuer: DnAttribute[];
  issuerDer: Buffer;
  subject: DnAttribute[];
  subjectDer: Buffer;
  notBefore: Date;
  notAfter: Date;
  spkiDer: Buffer;
  /** undefined when Node cannot load the key (then `problems` says why). */
  publicKey?: KeyObject;
  extensions: RawExtension[];
  basicConstraints?: BasicConstraints;
  keyUsage?: KeyUsageName[];
  extKeyUsage?: string[];
  /** undefined when the certificate has no subjectAltName extension. */
  san?: SubjectNames;
  nameConstraints?: NameConstraints;
  subjectKeyId?: Buffer;
  authorityKeyId?: Buffer;
  /** The authorityKeyIdentifier also names the issuer's issuer and serial (a trust anchor's must not). */
  authorityKeyIdNamesIssuer?: boolean;
  /** URIs of the authorityInfoAccess (OCSP responders, issuer certificates) and CRL distribution points. */
  ocspUrls?: string[];
  caIssuersUrls?: string[];
  crlUrls?: string[];
  /** SHA-256 of the DER, upper-case hex with colons (as `openssl x509 -fingerprint -sha256` prints). */
  fingerprint256: string;
  /** Structural defects found while decoding; path validation reports each one. */
  problems: string[];
}

/** Extensions whose semantics we implement (or that carry no constraint), so they may be critical. */
export const UNDERSTOOD_EXTENSIONS: ReadonlySet<string> = new Set([
  OID.basicConstraints,
  OID.keyUsage,
  OID.extKeyUsage,
  OID.subjectAltName,
  OID.nameConstraints,
  OID.subjectKeyIdentifier,
  OID.authorityKeyIdentifier,
  OID.crlDistributionPoints,
  OID.authorityInfoAccess,
  OID.certificatePolicies,
  OID.issuerAltName,
]);

export function fingerprint(der: Uint8Array, algo: 'sha256' | 'sha1' = 'sha256'): string {
  const hex = crypto.hash(algo, der, 'hex').toUpperCase();
  let out = hex.slice(0, 2);
  for (let i = 2; i < hex.length; i += 2) out += ':' + hex.slice(i, i + 2);
  return out;
}

/** AlgorithmIdentifier: the OID and the parameters' whole TLV (absent when there are none). */
export function readAlgorithm(t: Tlv, field: string): { oid: string; params?: Buffer } {
  if (t.tag !== 0x30) throw new MtlsError('BAD_DER', `${field} is not a SEQUENCE`);
  const [oid, params, extra] = readChildren(t.value, field);
  if (!oid || oid.tag !== 0x06 || extra) throw new MtlsError('BAD_DER', `${field} is malformed`);
  const out: { oid: string; params?: Buffer } = { oid: decodeOid(oid.value, field) };
  if (params) out.params = t.value.subarray(params.start, params.end);
  return out;
}

/**
 * Parses one DER certificate with the strict DER reader (no re-encoding: the TBS, names and key are sliced
 * from the input, so signatures are checked over the exact bytes that were signed). Throws BAD_DER only when
 * it is not a certificate at all; softer defects land in `problems`.
 */
export function parseCertificate(der: Buffer, what = 'certificate'): Certificate {
  try {
    // One copy of the input; every field below is a view into it (the caller may reuse its buffer).
    return parseCertificateStrict(Buffer.from(der), what);
  } catch (err) {
    const why = err instanceof MtlsError ? err.message : (err as Error).message.split('\n')[0];
    throw new MtlsError('BAD_DER', `${what} is not a valid X.509 certificate (${why})`, { cause: err });
  }
}

/**
 * The envelope every signed X.509 structure shares (RFC 5280 4.1.1, 5.1.1): SEQUENCE { tbs, signatureAlgorithm,
 * signature BIT STRING }. Throws a plain Error naming the defect; callers wrap it with what they parse.
 */
export function readSignedEnvelope(
  der: Buffer,
  what: string,
): { tbsT: Tlv; tbsDer: Buffer; alg: { oid: string; params?: Buffer }; signature: Buffer } {
  const outer = readSingle(der, what);
  if (outer.tag !== 0x30) throw new Error('not a SEQUENCE');
  const [tbsT, algT, sigT, extra] = readChildren(outer.value, what);
  if (!tbsT || !algT || !sigT || extra || tbsT.tag !== 0x30 || sigT.tag !== 0x03) throw new Error('wrong structure');
  if (sigT.value[0] !== 0) throw new Error('signature BIT STRING has unused bits');
  return {
    tbsT,
    tbsDer: outer.value.subarray(tbsT.start, tbsT.end),
    alg: readAlgorithm(algT, 'signatureAlgorithm'),
    signature: sigT.value.subarray(1),
  };
}

function parseCertificateStrict(der: Buffer, what: string): Certificate {
  const { tbsT, tbsDer, alg: outerAlg, signature } = readSignedEnvelope(der, what);
  const problems: string[] = [];
  const fields = readChildren(tbsT.value, 'tbsCertificate');
  let i = 0;
  let version = 1;
  if (fields[0]?.tag === 0xa0) {
    const v = readSingle(fields[0].value, 'version');
    if (v.tag !== 0x02 || v.value.length !== 1 || v.value[0]! > 2) throw new Error('bad version');
    version = v.value[0]! + 1;
    if (version === 1) problems.push('version 1 is encoded explicitly (DER requires it absent)');
    i = 1;
  }
  const [serialT, innerAlgT, issuerT, validityT, subjectT, spkiT, ...rest] = fields.slice(i);
  if (
    !serialT ||
    serialT.tag !== 0x02 ||
    !innerAlgT ||
    !issuerT ||
    issuerT.tag !== 0x30 ||
    !validityT ||
    validityT.tag !== 0x30 ||
    !subjectT ||
    subjectT.tag !== 0x30 ||
    !spkiT ||
    spkiT.tag !== 0x30
  ) {
    throw new Error('tbsCertificate is missing fields');
  }
  const serial = serialT.value;
  if (serial.length === 0) throw new Error('empty serial number');
  if (serial.length > 20) problems.push(`serial number is ${serial.length} bytes (RFC 5280 allows 20 at most)`);
  if (serial[0]! & 0x80) problems.push('serial number is negative');
  else if (serial.every((b) => b === 0)) problems.push('serial number is zero');
  if (serial.length > 1 && serial[0] === 0 && !(serial[1]! & 0x80))
    problems.push('serial number is not minimally encoded');
  const innerAlg = readAlgorithm(innerAlgT, 'tbsCertificate.signature');
  if (outerAlg.oid !== innerAlg.oid || !sameBytes(outerAlg.params, innerAlg.params)) {
    problems.push('the signature algorithm inside the certificate differs from the outer one (RFC 5280 4.1.1.2)');
  }
  const [nb, na, more] = readChildren(validityT.value, 'validity');
  if (!nb || !na || more) throw new Error('validity is malformed');
  const slice = (t: Tlv) => tbsT.value.subarray(t.start, t.end);
  const spkiBytes = slice(spkiT);
  const extensions: RawExtension[] = [];
  for (const t of rest) {
    if (t.tag === 0x81 || t.tag === 0x82) {
      problems.push('issuer/subject unique identifiers are present (not allowed for CAs that follow RFC 5280)');
      continue;
    }
    if (t.tag !== 0xa3) throw new Error(`unexpected field 0x${t.tag.toString(16)} in tbsCertificate`);
    const list = readSingle(t.value, 'extensions');
    if (list.tag !== 0x30) throw new Error('extensions is not a SEQUENCE');
    const items = readChildren(list.value, 'extensions');
    if (items.length === 0) problems.push('empty extensions list');
    for (const e of items) extensions.push(readExtension(e, problems));
  }
  if (extensions.length > 0 && version !== 3) problems.push('extensions in a certificate that is not version 3');
  const issuerDer = slice(issuerT);
  const subjectDer = slice(subjectT);
  const out: Certificate = {
    der,
    tbsDer,
    version,
    serial,
    serialHex: serial.toString('hex'),
    signatureAlgorithm: outerAlg.oid,
    signature,
    issuer: parseNameDer(issuerDer),
    issuerDer,
    subject: parseNameDer(subjectDer),
    subjectDer,
    notBefore: decodeTime(nb, 'notBefore'),
    notAfter: decodeTime(na, 'notAfter'),
    spkiDer: spkiBytes,
    extensions,
    fingerprint256: fingerprint(der),
    problems,
  };
  if (outerAlg.params) out.signatureParams = outerAlg.params;
  definePublicKey(out, problems);
  const seen = new Set<string>();
  for (const ext of extensions) {
    if (seen.has(ext.oid)) problems.push(`extension ${oidName(ext.oid)} appears twice`);
    seen.add(ext.oid);
    try {
      applyExtension(out, ext);
    } catch (err) {
      problems.push(`extension ${oidName(ext.oid)} is malformed (${(err as Error).message.split('\n')[0]})`);
    }
  }
  return out;
}

/**
 * `publicKey` is loaded on first use: OpenSSL 3.0's decoder costs ~300 µs per key, and most parses (inventory,
 * inspection, the leaf in a handshake) never need it. The algorithm is checked at parse time from the DER.
 */
function definePublicKey(c: Certificate, problems: string[]): void {
  let cached: KeyObject | null | undefined;
  const [alg] = readChildren(readSingle(c.spkiDer, 'SubjectPublicKeyInfo').value, 'SubjectPublicKeyInfo');
  const algOid = alg && alg.tag === 0x30 ? readAlgorithm(alg, 'SubjectPublicKeyInfo.algorithm').oid : '';
  // DSA loads, and path validation refuses it as a weak key (WEAK_KEY) rather than as a malformed certificate.
  if (![OID.ecPublicKey, OID.rsaEncryption, OID.ed25519, OID.rsaPss, OID.ed448, OID.dsa].includes(algOid as never)) {
    problems.push(`public key algorithm ${oidName(algOid)} is not supported`);
  }
  Object.defineProperty(c, 'publicKey', {
    enumerable: true,
    get(): KeyObject | undefined {
      if (cached === undefined) {
        try {
          cached = loadSpki(c.spkiDer);
        } catch (err) {
          cached = null;
          problems.push(`public key cannot be loaded (${(err as Error).message.split('\n')[0]})`);
        }
      }
      return cached ?? undefined;
    },
  });
}

/** Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }. */
export function readExtension(t: Tlv, problems: string[]): RawExtension {
  if (t.tag !== 0x30) throw new Error('extension is not a SEQUENCE');
  const parts = readChildren(t.value, 'extension');
  const [oidT, a, b, extra] = parts;
  if (!oidT || oidT.tag !== 0x06 || extra) throw new Error('extension is malformed');
  const oid = decodeOid(oidT.value, 'extnID');
  let critical = false;
  let valueT = a;
  if (a?.tag === 0x01) {
    if (a.value.length !== 1 || (a.value[0] !== 0 && a.value[0] !== 0xff))
      throw new Error('critical flag is not a DER BOOLEAN');
    critical = a.value[0] === 0xff;
    if (!critical)
      problems.push(`extension ${oidName(oid)} encodes critical=FALSE explicitly (DER requires it absent)`);
    valueT = b;
  } else if (b) {
    throw new Error('extension has extra fields');
  }
  if (!valueT || valueT.tag !== 0x04) throw new Error('extnValue is not an OCTET STRING');
  return { oid, critical, value: valueT.value };
}

function applyExtension(c: Certificate, ext: RawExtension): void {
  switch (ext.oid) {
    case OID.basicConstraints:
      c.basicConstraints = parseBasicConstraints(ext.value);
      break;
    case OID.keyUsage:
      c.keyUsage = parseKeyUsage(ext.value);
      break;
    case OID.extKeyUsage:
      c.extKeyUsage = parseExtKeyUsage(ext.value);
      break;
    case OID.subjectAltName: {
      c.san = parseSubjectAltName(ext.value);
      for (const p of c.san.problems) c.problems.push(`subjectAltName: ${p}`);
      break;
    }
    case OID.nameConstraints:
      c.nameConstraints = parseNameConstraints(ext.value);
      break;
    case OID.subjectKeyIdentifier:
      c.subjectKeyId = parseKeyId(ext.value);
      break;
    case OID.authorityKeyIdentifier: {
      const aki = parseAuthorityKeyId(ext.value);
      if (aki.keyId) c.authorityKeyId = aki.keyId;
      if (aki.issuerAndSerial) c.authorityKeyIdNamesIssuer = true;
      break;
    }
    case OID.authorityInfoAccess: {
      const aia = parseAuthorityInfoAccess(ext.value);
      c.ocspUrls = aia.ocsp;
      c.caIssuersUrls = aia.caIssuers;
      break;
    }
    case OID.crlDistributionPoints:
      c.crlUrls = parseCrlDistributionPoints(ext.value);
      break;
    default:
  }
}

function sameBytes(a: Buffer | undefined, b: Buffer | undefined): boolean {
  if (!a || !b) return a === b;
  return a.equals(b);
}

/** Reads certificates from PEM (every CERTIFICATE block, in order) or a single DER certificate. */
export function readCertificates(data: Buffer, what: string): Certificate[] {
  if (looksLikePem(data)) {
    const blocks = decodePem(data.toString('latin1'), what).filter(
      (b) => b.label === 'CERTIFICATE' || b.label === 'TRUSTED CERTIFICATE',
    );
    if (blocks.length === 0)
      throw new MtlsError('BAD_PEM', `${what}: no 'BEGIN CERTIFICATE' block found; expected a PEM certificate file`);
    return blocks.map((b, i) => parseCertificate(b.der, blocks.length > 1 ? `${what} (certificate ${i + 1})` : what));
  }
  if (data.length === 0) throw new MtlsError('BAD_INPUT', `${what} is empty; expected a PEM or DER certificate`);
  return [parseCertificate(data, what)];
}
