import crypto from 'node:crypto';
import { MtlsError } from '../errors.js';
import { parseCertificate, readAlgorithm, type Certificate } from './certificate.js';
import { decodeOid, decodeTime, encodeOid, readChildren, readSingle, seq, tlv, type Tlv } from './der.js';
import { REVOCATION_REASONS, type RevocationReason } from './crl-writer.js';
import { spkiKeyBits } from './keys.js';
import { OID } from './oid.js';
import { algorithmIdentifier, checkSignature } from './signing.js';

/**
 * OCSP as a relying party needs it (RFC 6960, RFC 5019): a request for one certificate, and the checks that make a
 * response worth believing. A response is trusted only when signed by the issuer itself or by a responder
 * certificate the issuer signed for OCSP (id-kp-OCSPSigning), when it answers for exactly our CertID, is current,
 * and echoes our nonce if it echoes one. Anything else throws REVOCATION_UNKNOWN: never read as "good".
 */

const NONCE = '1.3.6.1.5.5.7.48.1.2';
const BASIC = '1.3.6.1.5.5.7.48.1.1';
/** How far the responder's clock may run ahead of ours, and how long an answer without nextUpdate is believed. */
const CLOCK_SKEW_MS = 5 * 60_000;
const NO_NEXT_UPDATE_MAX_AGE_MS = 24 * 3600e3;
/** A response is small (one answer, one responder certificate): more is a hostile or broken responder. */
export const MAX_OCSP_RESPONSE_BYTES = 64 * 1024;
const FAILURES = ['successful', 'malformedRequest', 'internalError', 'tryLater', '?', 'sigRequired', 'unauthorized'];
const REASON_BY_CODE = new Map<number, RevocationReason>(
  Object.entries(REVOCATION_REASONS).map(([name, code]) => [code, name as RevocationReason]),
);

/** What an OCSP responder said about one certificate, after every check passed. */
export interface OcspStatus {
  status: 'good' | 'revoked' | 'unknown';
  revokedAt?: Date;
  /** The revocation reason; codes we do not name read 'unspecified'. */
  reason?: RevocationReason;
  thisUpdate: Date;
  nextUpdate?: Date;
  producedAt: Date;
  /** Who signed: 'the issuer' or the delegated responder's subject DN. */
  signedBy: string;
  /** The DER OCSPResponse as received (what a server staples). */
  der: Buffer;
}

/** The CertID (SHA-1, as RFC 5019 requires responders to accept) of `cert` issued by `issuer`. */
export function ocspCertId(cert: Certificate, issuer: Certificate): Buffer {
  return seq(
    algorithmIdentifier(OID.sha1, null),
    tlv(0x04, crypto.hash('sha1', issuer.subjectDer, 'buffer')),
    tlv(0x04, crypto.hash('sha1', spkiKeyBits(issuer.spkiDer), 'buffer')),
    tlv(0x02, cert.serial),
  );
}

/** A DER OCSPRequest for `cert`, with a 16-octet nonce (RFC 8954) unless `nonce` is false. */
export function ocspRequest(
  cert: Certificate,
  issuer: Certificate,
  o: { nonce?: boolean } = {},
): { der: Buffer; nonce?: Buffer } {
  const request = seq(ocspCertId(cert, issuer));
  if (o.nonce === false) return { der: seq(seq(seq(request))) };
  const nonce = tlv(0x04, crypto.randomBytes(16));
  const exts = tlv(0xa2, seq(seq(encodeOid(NONCE), tlv(0x04, nonce))));
  return { der: seq(seq(seq(request), exts)), nonce };
}

const unknown = (why: string, cause?: unknown) =>
  new MtlsError('REVOCATION_UNKNOWN', why, cause === undefined ? {} : { cause });

/**
 * Checks a DER OCSPResponse about `cert` (issued by `issuer`) at `now` and returns what it says. `nonce`: the one
 * we sent (a response that echoes a different one is refused; one without any is accepted, as RFC 5019
 * responders answer from a cache). Throws REVOCATION_UNKNOWN with one line naming the defect.
 */
export function checkOcspResponse(
  der: Buffer,
  cert: Certificate,
  issuer: Certificate,
  o: { now?: Date; nonce?: Buffer; what?: string } = {},
): OcspStatus {
  const what = o.what ?? 'the OCSP response';
  const now = o.now ?? new Date();
  // The issuer must be the one that signed the certificate: a peer's chain may carry an impostor with the issuer's
  // name and key id (Node's getPeerCertificate picks issuers by name, not by signature), whose key would then
  // "sign" a good answer about a revoked certificate.
  if (!issuedBy(cert, issuer))
    throw unknown(`cannot check ${what}: the issuer given did not sign the certificate (an impostor in the chain?)`);
  if (der.length > MAX_OCSP_RESPONSE_BYTES)
    throw unknown(`${what} is ${der.length} bytes; an OCSP response is at most ${MAX_OCSP_RESPONSE_BYTES}`);
  let parsed: ReturnType<typeof parseBasic>;
  try {
    parsed = parseBasic(der);
  } catch (err) {
    if (err instanceof MtlsError && err.code === 'REVOCATION_UNKNOWN')
      throw new MtlsError(err.code, `${what} ${err.message}`);
    throw unknown(`${what} is not a valid OCSP response (${(err as Error).message.split('\n')[0]})`, err);
  }
  const signer = responderOf(parsed, issuer, now, what);
  const problem = checkSignature(parsed.alg.oid, parsed.alg.params, parsed.tbsDer, parsed.signature, signer.key);
  if (problem) throw unknown(`${what}: the responder's ${problem}`);
  if (o.nonce && parsed.nonce && !parsed.nonce.equals(o.nonce))
    throw unknown(`${what} echoes another request's nonce (a replayed answer)`);
  const wanted = ocspCertId(cert, issuer);
  const single = parsed.singles.find((s) => sameCertId(s.certId, cert, issuer, wanted));
  if (!single) throw unknown(`${what} has no answer for serial ${cert.serialHex}`);
  if (single.thisUpdate.getTime() > now.getTime() + CLOCK_SKEW_MS)
    throw unknown(`${what} is dated ${single.thisUpdate.toISOString()}, in the future: check the clocks`);
  const expires = single.nextUpdate?.getTime() ?? single.thisUpdate.getTime() + NO_NEXT_UPDATE_MAX_AGE_MS;
  if (expires < now.getTime() - CLOCK_SKEW_MS)
    throw unknown(
      `${what} expired at ${new Date(expires).toISOString()}; the responder must answer again (is it stuck?)`,
    );
  const out: OcspStatus = {
    status: single.status,
    thisUpdate: single.thisUpdate,
    producedAt: parsed.producedAt,
    signedBy: signer.name,
    der,
  };
  if (single.nextUpdate) out.nextUpdate = single.nextUpdate;
  if (single.revokedAt) out.revokedAt = single.revokedAt;
  if (single.reason) out.reason = single.reason;
  return out;
}

/** Whether `issuer`'s key signed `cert` (the name alone proves nothing). */
export function issuedBy(cert: Certificate, issuer: Certificate): boolean {
  if (!issuer.publicKey || !cert.issuerDer.equals(issuer.subjectDer)) return false;
  return (
    checkSignature(cert.signatureAlgorithm, cert.signatureParams, cert.tbsDer, cert.signature, issuer.publicKey) ===
    null
  );
}

interface Single {
  certId: Tlv & { der: Buffer };
  status: 'good' | 'revoked' | 'unknown';
  revokedAt?: Date;
  reason?: RevocationReason;
  thisUpdate: Date;
  nextUpdate?: Date;
}

function parseBasic(der: Buffer) {
  const outer = readSingle(der, 'OCSPResponse');
  const [statusT, bytesT, extra] = outer.tag === 0x30 ? readChildren(outer.value, 'OCSPResponse') : [];
  if (statusT?.tag !== 0x0a || statusT.value.length !== 1 || extra) throw new Error('not an OCSPResponse');
  const code = statusT.value[0]!;
  if (code !== 0)
    throw unknown(`is a failure: ${FAILURES[code] ?? `status ${code}`} (no answer about the certificate)`);
  if (bytesT?.tag !== 0xa0) throw new Error('a successful response without responseBytes');
  const rb = readSingle(bytesT.value, 'responseBytes');
  const [typeT, bodyT] = rb.tag === 0x30 ? readChildren(rb.value, 'ResponseBytes') : [];
  if (typeT?.tag !== 0x06 || bodyT?.tag !== 0x04) throw new Error('ResponseBytes is malformed');
  if (decodeOid(typeT.value) !== BASIC) throw new Error('not a BasicOCSPResponse');
  const basicT = readSingle(bodyT.value, 'BasicOCSPResponse');
  const [tbsT, algT, sigT, certsT, more] = basicT.tag === 0x30 ? readChildren(basicT.value, 'BasicOCSPResponse') : [];
  if (tbsT?.tag !== 0x30 || !algT || sigT?.tag !== 0x03 || more || (certsT && certsT.tag !== 0xa0))
    throw new Error('BasicOCSPResponse is malformed');
  if (sigT.value[0] !== 0) throw new Error('signature BIT STRING has unused bits');
  const certsSeq = certsT ? readSingle(certsT.value, 'certs') : undefined;
  const certs = certsSeq
    ? readChildren(certsSeq.value, 'certs')
        .slice(0, 4)
        .map((c, i) => parseCertificate(certsSeq.value.subarray(c.start, c.end), `responder certificate ${i + 1}`))
    : [];
  const fields = readChildren(tbsT.value, 'ResponseData');
  let i = 0;
  if (fields[0]?.tag === 0xa0) i++; // version, v1 by default
  const [ridT, producedT, responsesT, extsT] = fields.slice(i);
  if (!ridT || (ridT.tag !== 0xa1 && ridT.tag !== 0xa2) || producedT?.tag !== 0x18 || responsesT?.tag !== 0x30)
    throw new Error('ResponseData is malformed');
  const rid = readSingle(ridT.value, 'responderID');
  const responderId =
    ridT.tag === 0xa1
      ? { byName: Buffer.from(ridT.value.subarray(rid.start, rid.end)) }
      : { byKey: Buffer.from(rid.value) };
  const singles = readChildren(responsesT.value, 'responses').slice(0, 64).map(parseSingle);
  let nonce: Buffer | undefined;
  if (extsT?.tag === 0xa1) {
    for (const e of readChildren(readSingle(extsT.value, 'responseExtensions').value, 'responseExtensions')) {
      const [oid, ...rest] = readChildren(e.value, 'Extension');
      if (oid?.tag === 0x06 && decodeOid(oid.value) === NONCE && rest.at(-1)?.tag === 0x04)
        nonce = Buffer.from(rest.at(-1)!.value);
    }
  }
  return {
    tbsDer: Buffer.from(basicT.value.subarray(tbsT.start, tbsT.end)),
    alg: readAlgorithm(algT, 'signatureAlgorithm'),
    signature: Buffer.from(sigT.value.subarray(1)),
    certs,
    responderId,
    producedAt: decodeTime(producedT, 'producedAt'),
    singles,
    nonce,
  };
}

function parseSingle(t: Tlv): Single {
  const [idT, statusT, thisT, ...rest] = t.tag === 0x30 ? readChildren(t.value, 'SingleResponse') : [];
  if (idT?.tag !== 0x30 || !statusT || thisT?.tag !== 0x18) throw new Error('a SingleResponse is malformed');
  const s: Single = {
    certId: Object.assign(idT, { der: Buffer.from(t.value.subarray(idT.start, idT.end)) }),
    status: 'good',
    thisUpdate: decodeTime(thisT, 'thisUpdate'),
  };
  if (statusT.tag === 0x80) s.status = 'good';
  else if (statusT.tag === 0x82) s.status = 'unknown';
  else if (statusT.tag === 0xa1) {
    s.status = 'revoked';
    const [atT, reasonT] = readChildren(statusT.value, 'RevokedInfo');
    if (atT?.tag !== 0x18) throw new Error('RevokedInfo has no revocationTime');
    s.revokedAt = decodeTime(atT, 'revocationTime');
    s.reason = 'unspecified';
    if (reasonT?.tag === 0xa0) {
      const r = readSingle(reasonT.value, 'revocationReason');
      if (r.tag === 0x0a && r.value.length === 1) s.reason = REASON_BY_CODE.get(r.value[0]!) ?? 'unspecified';
    }
  } else throw new Error('a SingleResponse has an unknown certStatus');
  const next = rest.find((f) => f.tag === 0xa0);
  if (next) {
    const n = readSingle(next.value, 'nextUpdate');
    if (n.tag !== 0x18) throw new Error('nextUpdate is not a GeneralizedTime');
    s.nextUpdate = decodeTime(n, 'nextUpdate');
  }
  return s;
}

/** Whether a CertID of the response names `cert`: the same DER as ours, or the same serial and issuer hashes. */
function sameCertId(id: Single['certId'], cert: Certificate, issuer: Certificate, ours: Buffer): boolean {
  if (id.der.equals(ours)) return true;
  const [algT, nameT, keyT, serialT] = readChildren(id.value, 'CertID');
  if (!algT || nameT?.tag !== 0x04 || keyT?.tag !== 0x04 || serialT?.tag !== 0x02) return false;
  const hash = { [OID.sha256]: 'sha256', [OID.sha1]: 'sha1' }[readAlgorithm(algT, 'hashAlgorithm').oid];
  if (!hash || !serialT.value.equals(cert.serial)) return false;
  return (
    crypto.hash(hash, issuer.subjectDer, 'buffer').equals(nameT.value) &&
    crypto.hash(hash, spkiKeyBits(issuer.spkiDer), 'buffer').equals(keyT.value)
  );
}

/**
 * Who may sign answers about the issuer's certificates (RFC 6960 4.2.2.2): the issuer itself, or a responder
 * certificate in the response that the issuer signed, with id-kp-OCSPSigning, valid now, and named by responderID.
 */
function responderOf(
  r: ReturnType<typeof parseBasic>,
  issuer: Certificate,
  now: Date,
  what: string,
): { key: crypto.KeyObject; name: string } {
  const names = (c: Certificate) =>
    'byKey' in r.responderId
      ? crypto.hash('sha1', spkiKeyBits(c.spkiDer), 'buffer').equals(r.responderId.byKey!)
      : c.subjectDer.equals(r.responderId.byName!);
  if (names(issuer) && issuer.publicKey) return { key: issuer.publicKey, name: 'the issuer' };
  const delegated = r.certs.find(names);
  if (!delegated || !delegated.publicKey)
    throw unknown(`${what} is signed by a responder that is neither the issuer nor a certificate it sent`);
  const label = `the responder certificate '${delegated.subject.map((a) => a.value).join(', ')}'`;
  if (!delegated.issuerDer.equals(issuer.subjectDer) || !issuer.publicKey)
    throw unknown(`${what} is signed by ${label}, which the certificate's issuer did not issue`);
  const sigProblem = checkSignature(
    delegated.signatureAlgorithm,
    delegated.signatureParams,
    delegated.tbsDer,
    delegated.signature,
    issuer.publicKey,
  );
  if (sigProblem) throw unknown(`${what}: ${label}: ${sigProblem}`);
  if (!delegated.extKeyUsage?.includes(OID.ocspSigning))
    throw unknown(`${what} is signed by ${label}, which lacks the OCSPSigning purpose`);
  if (delegated.notAfter < now || delegated.notBefore.getTime() > now.getTime() + CLOCK_SKEW_MS)
    throw unknown(
      `${what} is signed by ${label}, valid ${delegated.notBefore.toISOString()} to ${delegated.notAfter.toISOString()}`,
    );
  return { key: delegated.publicKey, name: label.slice('the responder certificate '.length) };
}
