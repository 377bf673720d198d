import type { KeyObject } from 'node:crypto';
import { MtlsError } from '../errors.js';
import { readSignedEnvelope, type Certificate } from './certificate.js';
import {
  decodeOid,
  decodeTime,
  encodeOid,
  encodeTime,
  integerBytes,
  countTlvsInPieces,
  readChildren,
  readSingle,
  readTlv,
  readTlvHeader,
  seq,
  tlv,
  tlvHeader,
  type Tlv,
} from './der.js';
import { signatureSchemeFor, signParts } from './keys.js';
import { chunksOf, rangeOf, readOf, type Part } from './octets.js';
import { OID } from './oid.js';
import { algorithmIdentifier, checkSignature } from './signing.js';

/** CRLReason (RFC 5280 5.3.1) by name, as `mtls revoke --reason` takes it. */
export const REVOCATION_REASONS = {
  unspecified: 0,
  keyCompromise: 1,
  caCompromise: 2,
  affiliationChanged: 3,
  superseded: 4,
  cessationOfOperation: 5,
  privilegeWithdrawn: 9,
} as const;
export type RevocationReason = keyof typeof REVOCATION_REASONS;

export interface CrlEntry {
  /** The serial's INTEGER content octets (Certificate.serial). */
  serial: Buffer;
  revokedAt: Date;
  reason: RevocationReason;
}

export interface CrlTemplate {
  /** The issuing CA's subject, byte for byte (Certificate.subjectDer). */
  issuerDer: Buffer;
  /** The issuing CA's subjectKeyIdentifier, for the CRL's authorityKeyIdentifier (RFC 5280 5.2.1). */
  issuerKeyId: Buffer;
  thisUpdate: Date;
  nextUpdate: Date;
  /** CRLNumber (RFC 5280 5.2.3): increases with every CRL the issuer publishes. */
  number: bigint;
  entries: CrlEntry[];
}

const REASON_CODE = encodeOid('2.5.29.21');
const extension = (oid: Buffer, value: Buffer) => seq(oid, tlv(0x04, value));

/** The two digits of n (0-99) as ASCII, written at `at`. */
function digits2(out: Buffer, at: number, n: number): void {
  out[at] = 0x30 + Math.floor(n / 10);
  out[at + 1] = 0x30 + (n % 10);
}

/**
 * The revokedCertificates' contents, written straight into one buffer: at 100,000 entries, building each entry
 * from small buffers (tlv/seq/encodeTime) cost most of a revocation. Each entry is SEQUENCE { INTEGER serial,
 * UTCTime (GeneralizedTime from 2050), [SEQUENCE { reasonCode }] }; serials are at most 20 octets, so every length
 * fits one octet.
 */
function encodeEntries(entries: CrlEntry[]): Buffer {
  const reasonExt = (code: number) =>
    Buffer.concat([Buffer.from([0x30, 0x0c, 0x30, 0x0a]), REASON_CODE, Buffer.from([0x04, 0x03, 0x0a, 0x01, code])]);
  const exts = new Map<number, Buffer>();
  let size = 0;
  for (const e of entries) {
    if (e.serial.length === 0 || e.serial.length > 20) throw new Error('a CRL entry serial must be 1 to 20 octets');
    const time = e.revokedAt.getUTCFullYear() < 2050 ? 15 : 17;
    const code = REVOCATION_REASONS[e.reason];
    size += 2 + 2 + e.serial.length + time + (code === 0 ? 0 : 14);
  }
  const out = Buffer.alloc(size);
  let p = 0;
  for (const e of entries) {
    const d = e.revokedAt;
    const year = d.getUTCFullYear();
    const utc = year < 2050;
    const code = REVOCATION_REASONS[e.reason];
    let ext = exts.get(code);
    if (code !== 0 && !ext) exts.set(code, (ext = reasonExt(code)));
    const body = 2 + e.serial.length + (utc ? 15 : 17) + (ext?.length ?? 0);
    out[p++] = 0x30;
    out[p++] = body;
    out[p++] = 0x02;
    out[p++] = e.serial.length;
    p += e.serial.copy(out, p);
    out[p++] = utc ? 0x17 : 0x18;
    out[p++] = utc ? 13 : 15;
    if (!utc) {
      digits2(out, p, Math.floor(year / 100));
      p += 2;
    }
    for (const n of [
      year % 100,
      d.getUTCMonth() + 1,
      d.getUTCDate(),
      d.getUTCHours(),
      d.getUTCMinutes(),
      d.getUTCSeconds(),
    ]) {
      digits2(out, p, n);
      p += 2;
    }
    out[p++] = 0x5a; // Z
    if (ext) p += ext.copy(out, p);
  }
  return out;
}

/** A minimal positive DER INTEGER of a non-negative bigint. */
function bigInteger(n: bigint): Buffer {
  let hex = n.toString(16);
  if (hex.length % 2) hex = `0${hex}`;
  const b = Buffer.from(hex, 'hex');
  return integerBytes(b[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), b]) : b);
}

/**
 * A complete v2 CRL (RFC 5280 5.1) with our DER writer, signed by `key`: AKI and CRLNumber, an entry per revoked
 * certificate with its reasonCode (absent for unspecified, as 5.3.1 asks). Linear in the entries: 100,000 are
 * encoded in well under a second (each entry is a few small buffers, joined once).
 */
export function encodeCrl(t: CrlTemplate, key: KeyObject): Buffer {
  return signCrl(t, encodeEntries(t.entries), key);
}

/**
 * encodeCrl with the revokedCertificates already encoded (`entries`: the SEQUENCE's content, empty for none), e.g.
 * the entries of the previous CRL with one appended (appendedEntries): a revocation then costs no re-encoding.
 */
export function signCrl(t: Omit<CrlTemplate, 'entries'>, entries: Buffer, key: KeyObject): Buffer {
  return Buffer.concat(signCrlParts(t, [entries], key) as Buffer[]);
}

/**
 * signCrl with the entries given as parts, and the CRL returned as parts: [everything before the entries'
 * content, ...entries, everything after]. The parts are hashed and written as they are (writev, or piece by piece
 * for octets read from a file), so a revocation at 100,000 entries never copies the 5 MB of entries it appends to.
 */
export function signCrlParts(t: Omit<CrlTemplate, 'entries'>, entries: Part[], key: KeyObject): Part[] {
  const scheme = signatureSchemeFor(key);
  const alg = algorithmIdentifier(scheme.oid, scheme.params);
  const crlExtensions = tlv(
    0xa0,
    seq(
      extension(encodeOid(OID.authorityKeyIdentifier), seq(tlv(0x80, t.issuerKeyId))),
      extension(encodeOid(OID.crlNumber), bigInteger(t.number)),
    ),
  );
  const entriesLength = entries.reduce((n, e) => n + e.length, 0);
  const fields = Buffer.concat([
    tlv(0x02, Buffer.from([1])),
    alg,
    t.issuerDer,
    encodeTime(t.thisUpdate),
    encodeTime(t.nextUpdate),
    ...(entriesLength ? [tlvHeader(0x30, entriesLength)] : []),
  ]);
  const tbsLength = fields.length + entriesLength + crlExtensions.length;
  const tbsHeader = tlvHeader(0x30, tbsLength);
  const signature = signParts(key, [tbsHeader, fields, ...entries, crlExtensions]);
  const tail = Buffer.concat([crlExtensions, alg, tlv(0x03, Buffer.concat([Buffer.from([0]), signature]))]);
  // The CRL: SEQUENCE { tbsCertList, signatureAlgorithm, signatureValue }; `tail` also holds the tbs's extensions.
  const outer = tlvHeader(0x30, tbsHeader.length + tbsLength + tail.length - crlExtensions.length);
  return [Buffer.concat([outer, tbsHeader, fields]), ...entries.filter((e) => e.length), tail];
}

/** The most of a CRL's octets before its entries, and after them, that appendedEntries reads. */
const HEAD_MAX = 16_384;
const TAIL_MAX = 16_384;

/**
 * The entries of `previous` (a CRL this writer made) with `added` appended, when `previous` is exactly the last
 * publication: issued by `issuerDer`, numbered `number` and listing `count` entries. Otherwise undefined, and the
 * caller encodes the CRL from the inventory (never a CRL built on a file someone else changed). `entries` are
 * parts for signCrlParts: the previous entries (a range of `previous`, at `offset`) and the new one. Only the
 * octets around the entries are read whole; the entries are counted piece by piece.
 */
export function appendedEntries(
  previous: Part,
  expect: { issuerDer: Buffer; number: bigint; count: number },
  added: CrlEntry,
): { entries: Part[]; offset: number } | undefined {
  try {
    const size = previous.length;
    const head = readOf(previous, 0, Math.min(size, HEAD_MAX));
    const outer = readTlvHeader(head, 0, 'previous CRL');
    if (outer.tag !== 0x30 || outer.valueStart + outer.length !== size) return undefined;
    const tbs = readTlvHeader(head, outer.valueStart, 'tbsCertList');
    if (tbs.tag !== 0x30) return undefined;
    // version, signature, issuer, thisUpdate, nextUpdate: whole within the head; then [revokedCertificates]
    const f: Tlv[] = [];
    for (let off = tbs.valueStart; f.length < 5; off = f[f.length - 1]!.end) f.push(readTlv(head, off, 'tbsCertList'));
    if (f[0]!.tag !== 0x02 || !head.subarray(f[2]!.start, f[2]!.end).equals(expect.issuerDer)) return undefined;
    const next = readTlvHeader(head, f[4]!.end, 'tbsCertList');
    const revoked = next.tag === 0x30 ? next : undefined;
    const entriesEnd = revoked ? revoked.valueStart + revoked.length : f[4]!.end;
    // After them: [0] crlExtensions (the end of the tbs), signatureAlgorithm, signatureValue (the end of the CRL).
    if (entriesEnd > size || size - entriesEnd > TAIL_MAX) return undefined;
    const tail = readOf(previous, entriesEnd, size);
    const exts = readTlv(tail, 0, 'crlExtensions');
    const alg = readTlv(tail, exts.end, 'signatureAlgorithm');
    const sig = readTlv(tail, alg.end, 'signatureValue');
    if (exts.tag !== 0xa0 || entriesEnd + exts.end !== tbs.valueStart + tbs.length) return undefined;
    if (alg.tag !== 0x30 || sig.tag !== 0x03 || sig.end !== tail.length) return undefined;
    let number: bigint | undefined;
    for (const e of readChildren(readSingle(exts.value, 'crlExtensions').value, 'crlExtensions')) {
      const [oid, ...rest] = readChildren(e.value, 'extension');
      if (oid && oid.tag === 0x06 && decodeOid(oid.value) === OID.crlNumber) {
        const v = readSingle(rest[rest.length - 1]!.value, 'cRLNumber');
        number = BigInt(`0x${v.value.toString('hex') || '0'}`);
      }
    }
    if (number !== expect.number) return undefined;
    const content = revoked ? rangeOf(previous, revoked.valueStart, entriesEnd) : Buffer.alloc(0);
    const count = countTlvsInPieces(chunksOf(content), content.length, (a, b) => readOf(content, a, b));
    if (count !== expect.count) return undefined;
    return { entries: [content, encodeEntries([added])], offset: revoked ? revoked.valueStart : -1 };
  } catch {
    return undefined;
  }
}

/**
 * thisUpdate and nextUpdate of a CRL, from its top-level fields alone (no walk over its entries: cheap at 100,000),
 * and whether `issuer`'s key signed it (when given). Throws if `der` is not a CRL.
 */
export function crlValidity(
  der: Buffer,
  what = 'CRL',
  issuer?: Certificate,
): { thisUpdate: Date; nextUpdate?: Date; signedByIssuer?: boolean } {
  const { tbsT, tbsDer, alg, signature } = readSignedEnvelope(der, what);
  const f = readChildren(tbsT.value, 'tbsCertList');
  // [version], signature, issuer, thisUpdate, [nextUpdate], ...: version is an INTEGER when present.
  const at = f[0]?.tag === 0x02 ? 3 : 2;
  const time = (i: number) => (f[i] && (f[i]!.tag === 0x17 || f[i]!.tag === 0x18) ? f[i] : undefined);
  const thisUpdate = time(at);
  if (!thisUpdate)
    throw new MtlsError('BAD_DER', `${what} is not a valid X.509 CRL (no thisUpdate where a CRL has it)`);
  const next = time(at + 1);
  return {
    thisUpdate: decodeTime(thisUpdate, 'thisUpdate'),
    ...(next ? { nextUpdate: decodeTime(next, 'nextUpdate') } : {}),
    ...(issuer?.publicKey
      ? { signedByIssuer: checkSignature(alg.oid, alg.params, tbsDer, signature, issuer.publicKey) === null }
      : {}),
  };
}
