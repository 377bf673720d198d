import crypto, { type KeyObject } from 'node:crypto';
import { MtlsError } from '../errors.js';
import { readExtension, readSignedEnvelope } from './certificate.js';
import { decodeOid, encodeOid, readChildren, seq, tlv, type Tlv } from './der.js';
import { extensionDer, parseBasicConstraints, parseSubjectAltName, type RawExtension } from './extensions.js';
import type { SubjectNames } from './general-names.js';
import { keyWeakness, signatureSchemeFor, signData, spkiDer } from './keys.js';
import { parseNameDer, type DnAttribute } from './names.js';
import { OID } from './oid.js';
import { decodePem, looksLikePem } from './pem.js';
import { algorithmIdentifier, checkSignature } from './signing.js';

/** A PKCS#10 certificate request whose signature has been checked. */
export interface CertificateRequest {
  der: Buffer;
  subject: DnAttribute[];
  publicKey: KeyObject;
  /** The extensions asked for in the extensionRequest attribute. */
  extensions: RawExtension[];
  san?: SubjectNames;
  requestsCa: boolean;
}

/** Parses a CSR (PEM or DER) with the strict DER reader, verifies its self-signature and key strength. */
export function parseCsr(data: Buffer, what = 'CSR'): CertificateRequest {
  let der = data;
  if (looksLikePem(data)) {
    const blocks = decodePem(data.toString('latin1'), what).filter(
      (b) => b.label === 'CERTIFICATE REQUEST' || b.label === 'NEW CERTIFICATE REQUEST',
    );
    if (blocks.length !== 1)
      throw new MtlsError('BAD_CSR', `${what}: expected one 'BEGIN CERTIFICATE REQUEST' block, found ${blocks.length}`);
    der = blocks[0]!.der;
  }
  let request: ReturnType<typeof readRequest>;
  try {
    request = readRequest(Buffer.from(der), what);
  } catch (err) {
    throw new MtlsError(
      'BAD_CSR',
      `${what} is not a valid PKCS#10 certificate request (${(err as Error).message.split('\n')[0]})`,
    );
  }
  const { envelope, subjectDer, spkiDer: spki, extensions } = request;
  let publicKey: KeyObject;
  try {
    publicKey = crypto.createPublicKey({ key: spki, format: 'der', type: 'spki' });
  } catch {
    throw new MtlsError('BAD_CSR', `${what}: its public key cannot be read; generate the request with an EC P-256 key`);
  }
  const weak = keyWeakness(publicKey);
  if (weak) throw new MtlsError('CSR_REFUSED', `${what}: ${weak}`);
  const sigProblem = checkSignature(
    envelope.alg.oid,
    envelope.alg.params,
    envelope.tbsDer,
    envelope.signature,
    publicKey,
  );
  if (sigProblem)
    throw new MtlsError('BAD_CSR', `${what}: ${sigProblem}; the request was altered or not signed by its own key`);
  const out: CertificateRequest = { der, subject: parseNameDer(subjectDer), publicKey, extensions, requestsCa: false };
  for (const e of extensions) {
    try {
      if (e.oid === OID.subjectAltName) out.san = parseSubjectAltName(e.value);
      if (e.oid === OID.basicConstraints && parseBasicConstraints(e.value).ca) out.requestsCa = true;
    } catch (err) {
      throw new MtlsError('BAD_CSR', `${what}: requested extension ${e.oid} is malformed (${(err as Error).message})`);
    }
  }
  if (out.san?.problems.length)
    throw new MtlsError('BAD_CSR', `${what}: requested subjectAltName: ${out.san.problems.join('; ')}`);
  return out;
}

/**
 * CertificationRequest ::= SEQUENCE { certificationRequestInfo, signatureAlgorithm, signature BIT STRING }, where
 * CertificationRequestInfo ::= SEQUENCE { version INTEGER (v1: 0), subject Name, subjectPKInfo, attributes [0]
 * IMPLICIT SET OF Attribute } (RFC 2986 4). The subject and key are sliced from the input, and the signature is
 * checked over the exact bytes signed. Extensions come from extensionRequest attributes (RFC 2985 5.4.2).
 */
function readRequest(der: Buffer, what: string) {
  const envelope = readSignedEnvelope(der, what);
  const [versionT, subjectT, spkiT, attributesT, extra] = readChildren(envelope.tbsT.value, 'certificationRequestInfo');
  if (!versionT || versionT.tag !== 0x02 || versionT.value.length !== 1 || versionT.value[0] !== 0)
    throw new Error('version is not v1 (0)');
  if (!subjectT || subjectT.tag !== 0x30 || !spkiT || spkiT.tag !== 0x30)
    throw new Error('subject or subjectPKInfo is missing');
  // The attributes are required by RFC 2986; some clients leave the empty set out, which costs nothing to accept.
  if ((attributesT && attributesT.tag !== 0xa0) || extra) throw new Error('unexpected fields after subjectPKInfo');
  const slice = (t: Tlv) => envelope.tbsT.value.subarray(t.start, t.end);
  const extensions: RawExtension[] = [];
  for (const attr of attributesT ? readChildren(attributesT.value, 'attributes') : []) {
    const [typeT, valuesT, more] = attr.tag === 0x30 ? readChildren(attr.value, 'Attribute') : [];
    if (!typeT || typeT.tag !== 0x06 || !valuesT || valuesT.tag !== 0x31 || more)
      throw new Error('an attribute is malformed');
    if (decodeOid(typeT.value, 'attribute type') !== OID.extensionRequest) continue;
    for (const list of readChildren(valuesT.value, 'extensionRequest')) {
      if (list.tag !== 0x30) throw new Error('extensionRequest is not a SEQUENCE of extensions');
      for (const e of readChildren(list.value, 'extensionRequest')) extensions.push(readExtension(e, []));
    }
  }
  return { envelope, subjectDer: slice(subjectT), spkiDer: slice(spkiT), extensions };
}

/** Builds a signed PKCS#10 request (for clients that enroll, and for tests); `subject` is a Name's DER (buildName). */
export function createCsr(key: KeyObject, subject: Buffer, extensions: RawExtension[] = []): Buffer {
  const attributes = extensions.length
    ? [seq(encodeOid(OID.extensionRequest), tlv(0x31, seq(...extensions.map(extensionDer))))]
    : [];
  const info = seq(
    tlv(0x02, Buffer.from([0])),
    subject,
    spkiDer(crypto.createPublicKey(key)),
    tlv(0xa0, Buffer.concat(attributes)),
  );
  const scheme = signatureSchemeFor(key);
  const alg = algorithmIdentifier(scheme.oid, scheme.params);
  return seq(info, alg, tlv(0x03, Buffer.concat([Buffer.from([0]), signData(key, info)])));
}
