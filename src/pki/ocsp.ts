import crypto, { type KeyObject } from 'node:crypto';
import { decodeOid, encodeOid, readChildren, readSingle, seq, tlv, type Tlv } from './der.js';
import type { Certificate } from './certificate.js';
import { REVOCATION_REASONS, type RevocationReason } from './crl-writer.js';
import { signatureSchemeFor, signData, spkiKeyBits } from './keys.js';
import { OID } from './oid.js';
import { algorithmIdentifier } from './signing.js';

/** OCSP (RFC 6960) as a responder needs it: requests decoded with the strict DER reader, responses encoded. */

const NONCE = '1.3.6.1.5.5.7.48.1.2';
const BASIC = '1.3.6.1.5.5.7.48.1.1';
const HASHES: Record<string, 'sha1' | 'sha256' | 'sha384' | 'sha512'> = {
  [OID.sha1]: 'sha1',
  [OID.sha256]: 'sha256',
  '2.16.840.1.101.3.4.2.2': 'sha384',
  '2.16.840.1.101.3.4.2.3': 'sha512',
};
/** Most CertIDs one request may ask about (a request is the client's to make as large as it likes). */
export const MAX_OCSP_REQUESTS = 16;

/** CertID ::= SEQUENCE { hashAlgorithm, issuerNameHash, issuerKeyHash, serialNumber }, kept as its DER too. */
export interface CertId {
  der: Buffer;
  hash: 'sha1' | 'sha256' | 'sha384' | 'sha512';
  issuerNameHash: Buffer;
  issuerKeyHash: Buffer;
  /** Lower-case hex of the INTEGER's content octets (as Certificate.serialHex). */
  serialHex: string;
}

export interface OcspRequest {
  certIds: CertId[];
  nonce?: Buffer;
}

/** The ways a request can fail before any answer about a certificate (OCSPResponseStatus). */
export type OcspFailure = 'malformedRequest' | 'internalError' | 'tryLater' | 'unauthorized';
const STATUS = { successful: 0, malformedRequest: 1, internalError: 2, tryLater: 3, sigRequired: 5, unauthorized: 6 };

/** Decodes an OCSPRequest (RFC 6960 4.1.1); throws a plain Error naming the defect (answer malformedRequest). */
export function parseOcspRequest(der: Buffer): OcspRequest {
  const outer = readSingle(der, 'OCSPRequest');
  const [tbs] = outer.tag === 0x30 ? readChildren(outer.value, 'OCSPRequest') : [];
  if (!tbs || tbs.tag !== 0x30) throw new Error('not an OCSPRequest');
  const fields = readChildren(tbs.value, 'TBSRequest');
  const list = fields.find((f) => f.tag === 0x30);
  if (!list) throw new Error('no requestList');
  const requests = readChildren(list.value, 'requestList');
  if (requests.length === 0 || requests.length > MAX_OCSP_REQUESTS)
    throw new Error(`${requests.length} certificates asked about (1 to ${MAX_OCSP_REQUESTS})`);
  const certIds = requests.map((r) => {
    const [certId] = r.tag === 0x30 ? readChildren(r.value, 'Request') : [];
    if (!certId || certId.tag !== 0x30) throw new Error('a Request has no CertID');
    return parseCertId(r.value.subarray(certId.start, certId.end), certId);
  });
  const out: OcspRequest = { certIds };
  const exts = fields.find((f) => f.tag === 0xa2);
  if (exts) {
    for (const e of readChildren(readSingle(exts.value, 'requestExtensions').value, 'requestExtensions')) {
      const [oid, ...rest] = readChildren(e.value, 'Extension');
      if (oid?.tag !== 0x06 || decodeOid(oid.value) !== NONCE) continue;
      const value = rest.at(-1);
      if (!value || value.tag !== 0x04) throw new Error('the nonce extension is malformed');
      // RFC 8954: the nonce is an OCTET STRING of 1 to 32 octets, inside the extension's OCTET STRING.
      const inner = readSingle(value.value, 'nonce');
      if (inner.tag !== 0x04 || inner.value.length < 1 || inner.value.length > 32)
        throw new Error('the nonce must be 1 to 32 octets (RFC 8954)');
      out.nonce = value.value;
    }
  }
  return out;
}

function parseCertId(der: Buffer, t: Tlv): CertId {
  const [alg, nameHash, keyHash, serial, extra] = readChildren(t.value, 'CertID');
  if (!alg || alg.tag !== 0x30 || nameHash?.tag !== 0x04 || keyHash?.tag !== 0x04 || serial?.tag !== 0x02 || extra)
    throw new Error('a CertID is malformed');
  const [oid] = readChildren(alg.value, 'hashAlgorithm');
  const hash = oid?.tag === 0x06 ? HASHES[decodeOid(oid.value)] : undefined;
  if (!hash) throw new Error('a CertID uses an unknown hash algorithm');
  if (serial.value.length === 0 || serial.value.length > 20) throw new Error('a CertID serial is out of range');
  return {
    der: Buffer.from(der),
    hash,
    issuerNameHash: Buffer.from(nameHash.value),
    issuerKeyHash: Buffer.from(keyHash.value),
    serialHex: serial.value.toString('hex'),
  };
}

/** Whether a CertID names `issuer`: the hashes of its subject DER and of its public key's bits (RFC 6960 4.1.1). */
export function certIdIsFor(id: CertId, issuer: Certificate): boolean {
  const keyHash = crypto.hash(id.hash, spkiKeyBits(issuer.spkiDer), 'buffer');
  const nameHash = crypto.hash(id.hash, issuer.subjectDer, 'buffer');
  return nameHash.equals(id.issuerNameHash) && keyHash.equals(id.issuerKeyHash);
}

export type CertStatus =
  { status: 'good' } | { status: 'unknown' } | { status: 'revoked'; at: Date; reason: RevocationReason };

export interface SingleAnswer {
  certId: CertId;
  status: CertStatus;
}

/** GeneralizedTime (OCSP always uses it), whole seconds. */
function generalizedTime(d: Date): Buffer {
  return tlv(0x18, Buffer.from(d.toISOString().slice(0, 19).replace(/[-:T]/g, '') + 'Z'));
}

/** An OCSPResponse that carries only a failure status (RFC 6960 4.2.1: no responseBytes). */
export function ocspFailure(status: OcspFailure): Buffer {
  return seq(tlv(0x0a, Buffer.from([STATUS[status]])));
}

/**
 * What every answer about the same CertIDs with the same statuses shares, whatever the request's nonce: the
 * responderID (by key hash), the SingleResponses and the certificates sent along. An answer is these signed with a
 * producedAt and the nonce (signOcspAnswer; native/answers.cc signs them too, for requests it has seen before).
 */
export interface OcspAnswerParts {
  responderId: Buffer;
  responses: Buffer;
  certs: Buffer;
}

export function ocspAnswerParts(
  answers: SingleAnswer[],
  o: { signer: Certificate; thisUpdate: Date; nextUpdate: Date },
): OcspAnswerParts {
  const singles = answers.map((a) => {
    const s = a.status;
    const status =
      s.status === 'good'
        ? tlv(0x80, Buffer.alloc(0))
        : s.status === 'unknown'
          ? tlv(0x82, Buffer.alloc(0))
          : tlv(
              0xa1,
              Buffer.concat([
                generalizedTime(s.at),
                ...(s.reason === 'unspecified'
                  ? []
                  : [tlv(0xa0, tlv(0x0a, Buffer.from([REVOCATION_REASONS[s.reason]])))]),
              ]),
            );
    return seq(a.certId.der, status, generalizedTime(o.thisUpdate), tlv(0xa0, generalizedTime(o.nextUpdate)));
  });
  const keyHash = crypto.hash('sha1', spkiKeyBits(o.signer.spkiDer), 'buffer');
  return {
    responderId: tlv(0xa2, tlv(0x04, keyHash)),
    responses: seq(...singles),
    certs: tlv(0xa0, seq(o.signer.der)),
  };
}

/** The signature algorithm of a responder key: its AlgorithmIdentifier (DER) and hash (null: Ed25519). */
export function ocspSignature(key: KeyObject): { algorithm: Buffer; hash: string | null } {
  const scheme = signatureSchemeFor(key);
  return { algorithm: algorithmIdentifier(scheme.oid, scheme.params), hash: scheme.hash };
}

/** A successful OCSPResponse: `parts` signed with `key`, produced at `producedAt`, the nonce echoed when asked. */
export function signOcspAnswer(parts: OcspAnswerParts, key: KeyObject, producedAt: Date, nonce?: Buffer): Buffer {
  const tbs = seq(
    parts.responderId,
    generalizedTime(producedAt),
    parts.responses,
    ...(nonce ? [tlv(0xa1, seq(seq(encodeOid(NONCE), tlv(0x04, nonce))))] : []),
  );
  const basic = seq(
    tbs,
    ocspSignature(key).algorithm,
    tlv(0x03, Buffer.concat([Buffer.from([0]), signData(key, tbs)])),
    parts.certs,
  );
  return seq(tlv(0x0a, Buffer.from([STATUS.successful])), tlv(0xa0, seq(encodeOid(BASIC), tlv(0x04, basic))));
}

/**
 * A successful OCSPResponse with a BasicOCSPResponse signed by `signer` (a delegated responder certificate of the
 * issuer, sent along), responderID by key hash, the nonce echoed when asked.
 */
export function encodeOcspResponse(
  answers: SingleAnswer[],
  o: { signer: Certificate; key: KeyObject; producedAt: Date; thisUpdate: Date; nextUpdate: Date; nonce?: Buffer },
): Buffer {
  return signOcspAnswer(ocspAnswerParts(answers, o), o.key, o.producedAt, o.nonce);
}
