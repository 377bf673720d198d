import crypto, { type KeyObject } from 'node:crypto';
import { encodeOid, encodeTime, integerBytes, seq, tlv } from './der.js';
import { extensionDer, type RawExtension } from './extensions.js';
import { signatureSchemeFor, signData, spkiDer } from './keys.js';
import { OID, oidName } from './oid.js';

/** Signatures: making a certificate's (our DER writer + node:crypto) and checking one (RFC 5280 4.1.1.2). */

const WEAK_SIGNATURES: Record<string, string> = {
  [OID.sha1WithRsa]: 'SHA-1',
  [OID.md5WithRsa]: 'MD5',
  [OID.ecdsaWithSha1]: 'SHA-1',
  '1.2.840.113549.1.1.2': 'MD2',
};

const ECDSA: Record<string, string> = {
  [OID.ecdsaWithSha256]: 'sha256',
  [OID.ecdsaWithSha384]: 'sha384',
  [OID.ecdsaWithSha512]: 'sha512',
};
const RSA: Record<string, string> = {
  [OID.sha256WithRsa]: 'sha256',
  [OID.sha384WithRsa]: 'sha384',
  [OID.sha512WithRsa]: 'sha512',
};

/**
 * Whether the signature algorithm is one we accept, with the parameters the RFCs fix, for the issuer's key type:
 * the hash to verify with (null for Ed25519), or why not. Only SHA-256+ ECDSA, RSA PKCS#1 v1.5 and Ed25519.
 */
export function signatureAlgorithmProblem(
  alg: string,
  params: Buffer | undefined,
  keyType: string | undefined,
): { hash: string | null } | { why: string } {
  if (WEAK_SIGNATURES[alg])
    return { why: `signed with ${WEAK_SIGNATURES[alg]}, which is broken (use SHA-256 or stronger)` };
  if (ECDSA[alg]) {
    if (params) return { why: 'ECDSA signature algorithm has parameters (RFC 5758 requires them absent)' };
    if (keyType !== 'ec')
      return { why: `signature algorithm ${oidName(alg)} does not match the issuer's ${keyType} key` };
    return { hash: ECDSA[alg]! };
  }
  if (RSA[alg]) {
    if (params && !params.equals(Buffer.from([0x05, 0x00])))
      return { why: 'RSA signature algorithm parameters must be NULL' };
    if (keyType !== 'rsa')
      return { why: `signature algorithm ${oidName(alg)} does not match the issuer's ${keyType} key` };
    return { hash: RSA[alg]! };
  }
  if (alg === OID.ed25519) {
    if (params) return { why: 'Ed25519 signature algorithm has parameters (RFC 8410 requires them absent)' };
    if (keyType !== 'ed25519') return { why: `signature algorithm Ed25519 does not match the issuer's ${keyType} key` };
    return { hash: null };
  }
  return { why: `signature algorithm ${oidName(alg)} is not supported` };
}

/** The reason checkSignature gives when the bytes do not verify (a different key: an impostor or corruption). */
export const SIGNATURE_MISMATCH = "signature does not verify with the issuer's key";

/** Checks `signature` over `tbs` with the issuer's key. Returns null when valid, else a reason. */
export function checkSignature(
  alg: string,
  params: Buffer | undefined,
  tbs: Buffer,
  signature: Buffer,
  issuerKey: KeyObject,
): string | null {
  const scheme = signatureAlgorithmProblem(alg, params, issuerKey.asymmetricKeyType);
  if ('why' in scheme) return scheme.why;
  try {
    return crypto.verify(scheme.hash, tbs, issuerKey, signature) ? null : SIGNATURE_MISMATCH;
  } catch {
    return 'signature is malformed';
  }
}

/** Everything a new certificate is made of; the caller decides every field (profiles live in profiles.ts). */
export interface CertificateTemplate {
  /** Big-endian serial octets, positive and minimally encoded (see randomSerial). */
  serial: Buffer;
  /** The DER of a Name (buildName's, or e.g. the issuer certificate's subjectDer, reused byte for byte). */
  issuer: Buffer;
  subject: Buffer;
  notBefore: Date;
  notAfter: Date;
  publicKey: KeyObject;
  extensions: RawExtension[];
}

export function algorithmIdentifier(oid: string, params: null | undefined): Buffer {
  return params === null ? seq(encodeOid(oid), Buffer.from([0x05, 0x00])) : seq(encodeOid(oid));
}

/** Encodes the TBSCertificate with our DER writer, signs it with `signingKey` (RFC 5280 4.1) and returns the DER certificate. */
export function signCertificate(t: CertificateTemplate, signingKey: KeyObject): Buffer {
  const scheme = signatureSchemeFor(signingKey);
  const alg = algorithmIdentifier(scheme.oid, scheme.params);
  const exts = t.extensions.map(extensionDer);
  const tbs = seq(
    tlv(0xa0, integerBytes(Buffer.from([2]))),
    integerBytes(t.serial),
    alg,
    t.issuer,
    seq(encodeTime(t.notBefore), encodeTime(t.notAfter)),
    t.subject,
    spkiDer(t.publicKey),
    ...(exts.length ? [tlv(0xa3, seq(...exts))] : []),
  );
  const signature = signData(signingKey, tbs);
  return seq(tbs, alg, tlv(0x03, Buffer.concat([Buffer.from([0]), signature])));
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
