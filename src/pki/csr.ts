import crypto, { type KeyObject } from 'node:crypto';
import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import * as asnCsr from '@peculiar/asn1-csr';
import * as asn from '@peculiar/asn1-x509';
import { MtlsError } from '../errors.js';
import { checkSignature } from './signing.js';
import { readSingle } from './der.js';
import { parseBasicConstraints, parseSubjectAltName, type RawExtension } from './extensions.js';
import type { SubjectNames } from './general-names.js';
import { keyWeakness, signatureSchemeFor, signData } from './keys.js';
import { parseNameDer, type DnAttribute } from './names.js';
import { OID } from './oid.js';
import { decodePem, looksLikePem } from './pem.js';

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

/** Parses a CSR (PEM or DER), verifies its self-signature and key strength. */
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
  let req: asnCsr.CertificationRequest;
  try {
    readSingle(der, what);
    req = AsnConvert.parse(der, asnCsr.CertificationRequest);
  } catch (err) {
    throw new MtlsError(
      'BAD_CSR',
      `${what} is not a valid PKCS#10 certificate request (${(err as Error).message.split('\n')[0]})`,
    );
  }
  const info = req.certificationRequestInfo;
  const infoDer = req.certificationRequestInfoRaw
    ? Buffer.from(req.certificationRequestInfoRaw)
    : Buffer.from(AsnConvert.serialize(info));
  let publicKey: KeyObject;
  try {
    publicKey = crypto.createPublicKey({
      key: Buffer.from(AsnConvert.serialize(info.subjectPKInfo)),
      format: 'der',
      type: 'spki',
    });
  } catch {
    throw new MtlsError('BAD_CSR', `${what}: its public key cannot be read; generate the request with an EC P-256 key`);
  }
  const weak = keyWeakness(publicKey);
  if (weak) throw new MtlsError('CSR_REFUSED', `${what}: ${weak}`);
  const params = req.signatureAlgorithm.parameters ? Buffer.from(req.signatureAlgorithm.parameters) : undefined;
  const sigProblem = checkSignature(
    req.signatureAlgorithm.algorithm,
    params,
    infoDer,
    Buffer.from(req.signature),
    publicKey,
  );
  if (sigProblem)
    throw new MtlsError('BAD_CSR', `${what}: ${sigProblem}; the request was altered or not signed by its own key`);

  const extensions: RawExtension[] = [];
  for (const attr of info.attributes) {
    if (attr.type !== OID.extensionRequest) continue;
    for (const v of attr.values) {
      const exts = AsnConvert.parse(v, asn.Extensions);
      for (const e of exts)
        extensions.push({ oid: e.extnID, critical: e.critical, value: Buffer.from(e.extnValue.buffer) });
    }
  }
  const out: CertificateRequest = {
    der,
    subject: parseNameDer(Buffer.from(AsnConvert.serialize(info.subject))),
    publicKey,
    extensions,
    requestsCa: false,
  };
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

/** Builds a signed PKCS#10 request (for clients that enroll, and for tests). */
export function createCsr(key: KeyObject, subject: asn.Name, extensions: RawExtension[] = []): Buffer {
  const spki = AsnConvert.parse(
    crypto.createPublicKey(key).export({ type: 'spki', format: 'der' }),
    asn.SubjectPublicKeyInfo,
  );
  const attributes = new asnCsr.Attributes();
  if (extensions.length > 0) {
    const exts = new asn.Extensions(
      extensions.map(
        (e) => new asn.Extension({ extnID: e.oid, critical: e.critical, extnValue: new OctetString(e.value) }),
      ),
    );
    attributes.push(new asn.Attribute({ type: OID.extensionRequest, values: [AsnConvert.serialize(exts)] }));
  }
  const info = new asnCsr.CertificationRequestInfo({ version: 0, subject, subjectPKInfo: spki, attributes });
  const infoDer = Buffer.from(AsnConvert.serialize(info));
  const scheme = signatureSchemeFor(key);
  const alg = new asn.AlgorithmIdentifier({ algorithm: scheme.oid });
  if (scheme.params === null) alg.parameters = null;
  const req = new asnCsr.CertificationRequest({
    certificationRequestInfo: info,
    signatureAlgorithm: alg,
    signature: new Uint8Array(signData(key, infoDer)).buffer,
  });
  return Buffer.from(AsnConvert.serialize(req));
}
