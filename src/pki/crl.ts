import { MtlsError } from '../errors.js';
import { readAlgorithm, readSignedEnvelope, type Certificate } from './certificate.js';
import { checkSignature } from './signing.js';
import { decodeTime, readChildren, type Tlv } from './der.js';
import { sameDn } from './name-match.js';
import { formatDn, parseNameDer, type DnAttribute } from './names.js';
import { decodePem, looksLikePem } from './pem.js';

/** A CRL issued this much in the future still loads: the CA's clock may run a little ahead of ours. */
const CLOCK_SKEW_MS = 5 * 60_000;

/** A certificate revocation list (RFC 5280 section 5), decoded with our strict DER reader (fast at 100,000 entries). */
export interface Crl {
  der: Buffer;
  tbsDer: Buffer;
  issuer: DnAttribute[];
  issuerDer: Buffer;
  thisUpdate: Date;
  nextUpdate?: Date;
  /** The serials it revokes, as Certificate.serialHex (lower-case hex of the INTEGER's content octets). */
  revoked: Set<string>;
  signatureAlgorithm: string;
  signatureParams?: Buffer;
  signature: Buffer;
}

/** Parses one DER CertificateList. Throws an MtlsError naming `what` and the defect. */
export function parseCrl(der: Buffer, what = 'CRL'): Crl {
  try {
    return parseCrlStrict(der, what);
  } catch (err) {
    const why = (err as Error).message.split('\n')[0];
    throw new MtlsError('BAD_DER', `${what} is not a valid X.509 CRL (${why})`, { cause: err });
  }
}

function parseCrlStrict(der: Buffer, what: string): Crl {
  const { tbsT, tbsDer, alg, signature } = readSignedEnvelope(der, what);
  const fields = readChildren(tbsT.value, 'tbsCertList');
  let i = 0;
  if (fields[0]?.tag === 0x02) {
    if (fields[0].value.length !== 1 || fields[0].value[0] !== 1)
      throw new Error('unsupported version (only v2 may be written)');
    i = 1;
  }
  const [innerAlgT, issuerT, thisT, ...rest] = fields.slice(i);
  if (!innerAlgT || innerAlgT.tag !== 0x30 || !issuerT || issuerT.tag !== 0x30 || !thisT)
    throw new Error('tbsCertList is missing fields');
  if (readAlgorithm(innerAlgT, 'tbsCertList.signature').oid !== alg.oid)
    throw new Error('the inner and outer signature algorithms differ');
  const isTime = (t: Tlv | undefined) => t !== undefined && (t.tag === 0x17 || t.tag === 0x18);
  let nextUpdate: Date | undefined;
  if (isTime(rest[0])) nextUpdate = decodeTime(rest.shift()!, 'nextUpdate');
  const revoked = new Set<string>();
  if (rest[0]?.tag === 0x30) {
    for (const entry of readChildren(rest.shift()!.value, 'revokedCertificates')) {
      if (entry.tag !== 0x30) throw new Error('a revoked entry is not a SEQUENCE');
      const serial = readChildren(entry.value, 'revokedCertificate')[0];
      if (!serial || serial.tag !== 0x02 || serial.value.length === 0)
        throw new Error('a revoked entry has no serial number');
      revoked.add(serial.value.toString('hex'));
    }
  }
  if (rest[0]?.tag === 0xa0) rest.shift();
  if (rest.length) throw new Error(`unexpected field 0x${rest[0]!.tag.toString(16)} in tbsCertList`);
  const issuerDer = Buffer.from(tbsT.value.subarray(issuerT.start, issuerT.end));
  const crl: Crl = {
    der,
    tbsDer,
    issuerDer,
    issuer: parseNameDer(issuerDer),
    thisUpdate: decodeTime(thisT, 'thisUpdate'),
    revoked,
    signatureAlgorithm: alg.oid,
    signature,
  };
  if (nextUpdate) crl.nextUpdate = nextUpdate;
  if (alg.params) crl.signatureParams = alg.params;
  return crl;
}

/**
 * Every CRL in `data`: PEM (every `X509 CRL` block; a file with none, or with blocks of another kind, is refused) or
 * one DER CRL. An empty or garbage file is an error, never "no revocation".
 */
export function readCrls(data: Buffer, what: string): Crl[] {
  if (data.length === 0)
    throw new MtlsError('BAD_INPUT', `${what} is empty; expected PEM CRLs (BEGIN X509 CRL), one for every CA`);
  if (!looksLikePem(data)) return [parseCrl(data, what)];
  const blocks = decodePem(data.toString('latin1'), what);
  const other = blocks.find((b) => b.label !== 'X509 CRL');
  if (other)
    throw new MtlsError('BAD_PEM', `${what}: holds a '${other.label}' block; a CRL file holds only 'X509 CRL' blocks`);
  if (blocks.length === 0)
    throw new MtlsError('BAD_PEM', `${what}: no 'BEGIN X509 CRL' block found; expected PEM CRLs`);
  return blocks.map((b, i) => parseCrl(b.der, blocks.length > 1 ? `${what} (CRL ${i + 1})` : what));
}

/**
 * What must hold before a server enforces `crls` for clients chaining to `anchors` (its trust bundle), at `at`:
 * each CRL is signed by a known CA of that name (an anchor, or one of `intermediates`, e.g. the CAs of the server's
 * own chain), so a forged or foreign CRL is refused at load rather than found out at the first handshake; it is
 * current (thisUpdate passed, nextUpdate not); and every CA of the bundle has one (OpenSSL refuses a chain through
 * a CA without a CRL: UNABLE_TO_GET_CRL). Returns the first problem, one line.
 */
export function crlSetProblem(
  crls: Crl[],
  anchors: Certificate[],
  intermediates: Certificate[],
  at: Date,
  what: string,
): string | undefined {
  const cas = [...anchors, ...intermediates.filter((c) => c.basicConstraints?.ca)];
  for (const crl of crls) {
    const issuers = cas.filter((c) => sameDn(c.subject, crl.issuer));
    const name = formatDn(crl.issuer) || '(empty issuer)';
    if (issuers.length === 0)
      return (
        `${what}: the CRL of '${name}' is from a CA that is neither in the trust ` +
        `bundle nor in our certificate chain, so its signature cannot be checked; ` +
        `add that CA's certificate to the trust bundle (--ca)`
      );
    const signer = issuers.find(
      (c) =>
        c.publicKey &&
        checkSignature(crl.signatureAlgorithm, crl.signatureParams, crl.tbsDer, crl.signature, c.publicKey) === null,
    );
    if (!signer)
      return `${what}: the CRL of '${name}' is not signed by that CA's key; get the CRL from the CA that issued it`;
    if (signer.keyUsage && !signer.keyUsage.includes('cRLSign'))
      return `${what}: '${name}' may not sign CRLs (its key usage lacks cRLSign)`;
    if (crl.thisUpdate.getTime() > at.getTime() + CLOCK_SKEW_MS)
      return `${what}: the CRL of '${name}' is not valid before ${crl.thisUpdate.toISOString()}; check the clocks`;
    if (crl.nextUpdate && crl.nextUpdate.getTime() < at.getTime())
      return `${what}: the CRL of '${name}' expired at ${crl.nextUpdate.toISOString()}; publish a new one`;
  }
  const missing = anchors.find((c) => c.basicConstraints?.ca && !crls.some((r) => sameDn(r.issuer, c.subject)));
  if (missing)
    return (
      `${what}: no CRL for the CA '${formatDn(missing.subject)}' of the trust bundle; ` +
      `every client chained through it would be refused (UNABLE_TO_GET_CRL): add its CRL`
    );
  return undefined;
}

/** Where a certificate's revocation status came from, and what it is. */
export interface RevocationStatus {
  status: 'good' | 'revoked' | 'unknown';
  /** The CRL that says so (absent for unknown: no CRL of its issuer). */
  crl?: Crl;
}

/**
 * The status of each certificate of a verified `chain` (leaf first) by `crls` (checked with crlSetProblem first):
 * the trust anchor itself is not judged by a CRL (it is trusted as configured) and reads 'good' without one.
 */
export function revocationStatus(chain: readonly Certificate[], crls: readonly Crl[]): RevocationStatus[] {
  return chain.map((cert, i) => {
    if (i === chain.length - 1 && i > 0 && sameDn(cert.issuer, cert.subject)) return { status: 'good' };
    const crl = crls.find((c) => sameDn(c.issuer, cert.issuer));
    if (!crl) return { status: 'unknown' };
    return { status: crl.revoked.has(cert.serialHex) ? 'revoked' : 'good', crl };
  });
}

/** The CRL of `crls` that revokes `cert` (same issuer name, its serial listed), if any. */
export function revokedBy(crls: readonly Crl[], cert: Pick<Certificate, 'issuer' | 'serialHex'>): Crl | undefined {
  return crls.find((c) => c.revoked.has(cert.serialHex) && sameDn(c.issuer, cert.issuer));
}
