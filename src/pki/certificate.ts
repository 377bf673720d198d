import crypto, { type KeyObject } from 'node:crypto';
import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import * as asn from '@peculiar/asn1-x509';
import { MtlsError } from '../errors.js';
import { readSingle } from './der.js';
import {
  parseAuthorityKeyId, parseBasicConstraints, parseExtKeyUsage, parseKeyId, parseKeyUsage, parseNameConstraints,
  parseSubjectAltName, type BasicConstraints, type KeyUsageName, type NameConstraints, type RawExtension,
} from './extensions.js';
import type { SubjectNames } from './general-names.js';
import { signatureSchemeFor, signData } from './keys.js';
import { nameAttributes, type DnAttribute } from './names.js';
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
  /** SHA-256 of the DER, upper-case hex with colons (as `openssl x509 -fingerprint -sha256` prints). */
  fingerprint256: string;
  /** Structural defects found while decoding; path validation reports each one. */
  problems: string[];
}

/** Extensions whose semantics we implement (or that carry no constraint), so they may be critical. */
export const UNDERSTOOD_EXTENSIONS: ReadonlySet<string> = new Set([
  OID.basicConstraints, OID.keyUsage, OID.extKeyUsage, OID.subjectAltName, OID.nameConstraints,
  OID.subjectKeyIdentifier, OID.authorityKeyIdentifier, OID.crlDistributionPoints, OID.authorityInfoAccess,
  OID.certificatePolicies, OID.issuerAltName,
]);

export function fingerprint(der: Uint8Array, algo: 'sha256' | 'sha1' = 'sha256'): string {
  return crypto.createHash(algo).update(der).digest('hex').toUpperCase().match(/../g)!.join(':');
}

/** Parses one DER certificate. Throws BAD_DER only when it is not a certificate at all. */
export function parseCertificate(der: Buffer, what = 'certificate'): Certificate {
  let cert: asn.Certificate;
  try {
    readSingle(der, what);
    cert = AsnConvert.parse(der, asn.Certificate);
  } catch (err) {
    throw new MtlsError('BAD_DER', `${what} is not a valid X.509 certificate (${(err as Error).message.split('\n')[0]})`, { cause: err });
  }
  const tbs = cert.tbsCertificate;
  const problems: string[] = [];
  const serial = Buffer.from(tbs.serialNumber);
  if (serial.length > 20) problems.push(`serial number is ${serial.length} bytes (RFC 5280 allows 20 at most)`);
  if (serial.length > 0 && serial[0]! & 0x80) problems.push('serial number is negative');
  else if (serial.every((b) => b === 0)) problems.push('serial number is zero');
  if (serial.length > 1 && serial[0] === 0 && !(serial[1]! & 0x80)) problems.push('serial number is not minimally encoded');

  const outerAlg = cert.signatureAlgorithm;
  const innerAlg = tbs.signature;
  const params = (a: asn.AlgorithmIdentifier) => (a.parameters ? Buffer.from(a.parameters) : undefined);
  if (outerAlg.algorithm !== innerAlg.algorithm || !sameBytes(params(outerAlg), params(innerAlg))) {
    problems.push('the signature algorithm inside the certificate differs from the outer one (RFC 5280 4.1.1.2)');
  }

  const spkiBytes = Buffer.from(AsnConvert.serialize(tbs.subjectPublicKeyInfo));
  let publicKey: KeyObject | undefined;
  try {
    publicKey = crypto.createPublicKey({ key: spkiBytes, format: 'der', type: 'spki' });
  } catch (err) {
    problems.push(`public key cannot be loaded (${(err as Error).message.split('\n')[0]})`);
  }

  const extensions: RawExtension[] = (tbs.extensions ?? []).map((e) => ({ oid: e.extnID, critical: e.critical, value: Buffer.from(e.extnValue.buffer) }));
  if (extensions.length > 0 && tbs.version !== asn.Version.v3) problems.push('extensions in a certificate that is not version 3');
  const seen = new Set<string>();
  const out: Certificate = {
    der, tbsDer: Buffer.from(AsnConvert.serialize(tbs)), version: tbs.version + 1, serial, serialHex: serial.toString('hex'),
    signatureAlgorithm: outerAlg.algorithm, signature: Buffer.from(cert.signatureValue),
    issuer: nameAttributes(tbs.issuer), issuerDer: Buffer.from(AsnConvert.serialize(tbs.issuer)),
    subject: nameAttributes(tbs.subject), subjectDer: Buffer.from(AsnConvert.serialize(tbs.subject)),
    notBefore: tbs.validity.notBefore.getTime(), notAfter: tbs.validity.notAfter.getTime(),
    spkiDer: spkiBytes, extensions, fingerprint256: fingerprint(der), problems,
  };
  if (cert.tbsCertificateRaw) out.tbsDer = Buffer.from(cert.tbsCertificateRaw);
  const sp = params(outerAlg);
  if (sp) out.signatureParams = sp;
  if (publicKey) out.publicKey = publicKey;
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

function applyExtension(c: Certificate, ext: RawExtension): void {
  switch (ext.oid) {
    case OID.basicConstraints: c.basicConstraints = parseBasicConstraints(ext.value); break;
    case OID.keyUsage: c.keyUsage = parseKeyUsage(ext.value); break;
    case OID.extKeyUsage: c.extKeyUsage = parseExtKeyUsage(ext.value); break;
    case OID.subjectAltName: {
      c.san = parseSubjectAltName(ext.value);
      for (const p of c.san.problems) c.problems.push(`subjectAltName: ${p}`);
      break;
    }
    case OID.nameConstraints: c.nameConstraints = parseNameConstraints(ext.value); break;
    case OID.subjectKeyIdentifier: c.subjectKeyId = parseKeyId(ext.value); break;
    case OID.authorityKeyIdentifier: {
      const id = parseAuthorityKeyId(ext.value);
      if (id) c.authorityKeyId = id;
      break;
    }
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
    const blocks = decodePem(data.toString('latin1'), what).filter((b) => b.label === 'CERTIFICATE' || b.label === 'TRUSTED CERTIFICATE');
    if (blocks.length === 0) throw new MtlsError('BAD_PEM', `${what}: no 'BEGIN CERTIFICATE' block found; expected a PEM certificate file`);
    return blocks.map((b, i) => parseCertificate(b.der, blocks.length > 1 ? `${what} (certificate ${i + 1})` : what));
  }
  if (data.length === 0) throw new MtlsError('BAD_INPUT', `${what} is empty; expected a PEM or DER certificate`);
  return [parseCertificate(data, what)];
}

const WEAK_SIGNATURES: Record<string, string> = {
  [OID.sha1WithRsa]: 'SHA-1', [OID.md5WithRsa]: 'MD5', [OID.ecdsaWithSha1]: 'SHA-1', '1.2.840.113549.1.1.2': 'MD2',
};

/**
 * Checks `signature` over `tbs` with the issuer's key. Returns null when valid, else a reason. Only SHA-256+
 * ECDSA, RSA PKCS#1 v1.5 and Ed25519 are accepted; parameters must be as the RFCs fix them.
 */
export function checkSignature(alg: string, params: Buffer | undefined, tbs: Buffer, signature: Buffer, issuerKey: KeyObject): string | null {
  if (WEAK_SIGNATURES[alg]) return `signed with ${WEAK_SIGNATURES[alg]}, which is broken (use SHA-256 or stronger)`;
  const ecdsa: Record<string, string> = { [OID.ecdsaWithSha256]: 'sha256', [OID.ecdsaWithSha384]: 'sha384', [OID.ecdsaWithSha512]: 'sha512' };
  const rsa: Record<string, string> = { [OID.sha256WithRsa]: 'sha256', [OID.sha384WithRsa]: 'sha384', [OID.sha512WithRsa]: 'sha512' };
  const kt = issuerKey.asymmetricKeyType;
  let hash: string | null;
  if (ecdsa[alg]) {
    if (params) return 'ECDSA signature algorithm has parameters (RFC 5758 requires them absent)';
    if (kt !== 'ec') return `signature algorithm ${oidName(alg)} does not match the issuer's ${kt} key`;
    hash = ecdsa[alg]!;
  } else if (rsa[alg]) {
    if (params && !params.equals(Buffer.from([0x05, 0x00]))) return 'RSA signature algorithm parameters must be NULL';
    if (kt !== 'rsa') return `signature algorithm ${oidName(alg)} does not match the issuer's ${kt} key`;
    hash = rsa[alg]!;
  } else if (alg === OID.ed25519) {
    if (params) return 'Ed25519 signature algorithm has parameters (RFC 8410 requires them absent)';
    if (kt !== 'ed25519') return `signature algorithm Ed25519 does not match the issuer's ${kt} key`;
    hash = null;
  } else {
    return `signature algorithm ${oidName(alg)} is not supported`;
  }
  try {
    return crypto.verify(hash, tbs, issuerKey, signature) ? null : 'signature does not verify with the issuer\'s key';
  } catch {
    return 'signature is malformed';
  }
}

/** Everything a new certificate is made of; the caller decides every field (profiles live in profiles.ts). */
export interface CertificateTemplate {
  serial: Buffer;
  issuer: asn.Name;
  subject: asn.Name;
  notBefore: Date;
  notAfter: Date;
  publicKey: KeyObject;
  extensions: RawExtension[];
}

/** Encodes the TBSCertificate, signs it with `signingKey` (RFC 5280 4.1) and returns the DER certificate. */
export function signCertificate(t: CertificateTemplate, signingKey: KeyObject): Buffer {
  const scheme = signatureSchemeFor(signingKey);
  const alg = new asn.AlgorithmIdentifier({ algorithm: scheme.oid });
  if (scheme.params === null) alg.parameters = null;
  const tbs = new asn.TBSCertificate({
    version: asn.Version.v3,
    serialNumber: new Uint8Array(t.serial).buffer,
    signature: alg,
    issuer: t.issuer,
    validity: new asn.Validity({ notBefore: t.notBefore, notAfter: t.notAfter }),
    subject: t.subject,
    subjectPublicKeyInfo: AsnConvert.parse(t.publicKey.export({ type: 'spki', format: 'der' }), asn.SubjectPublicKeyInfo),
    extensions: new asn.Extensions(t.extensions.map((e) => new asn.Extension({ extnID: e.oid, critical: e.critical, extnValue: new OctetString(e.value) }))),
  });
  const tbsDer = Buffer.from(AsnConvert.serialize(tbs));
  const cert = new asn.Certificate({ tbsCertificate: tbs, signatureAlgorithm: alg, signatureValue: new Uint8Array(signData(signingKey, tbsDer)).buffer });
  return Buffer.from(AsnConvert.serialize(cert));
}

/** A positive serial of 16 random bytes (at least 126 random bits), minimally encoded. */
export function randomSerial(): Buffer {
  const b = crypto.randomBytes(16);
  b[0] = (b[0]! & 0x3f) | 0x40;
  return b;
}

/** X.509 validity in whole seconds (the encoding has no fractions; keeps the inventory equal to the DER). */
export function wholeSeconds(d: Date): Date {
  return new Date(Math.floor(d.getTime() / 1000) * 1000);
}
