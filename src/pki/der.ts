import { MtlsError } from '../errors.js';

/** One DER tag-length-value, with offsets into the buffer it came from. */
export interface Tlv {
  /** The identifier octet as-is (class, constructed bit and tag number; tag numbers above 30 are refused). */
  tag: number;
  cls: 'universal' | 'application' | 'context' | 'private';
  constructed: boolean;
  number: number;
  start: number;
  valueStart: number;
  end: number;
  value: Buffer;
}

const CLASSES = ['universal', 'application', 'context', 'private'] as const;

/** A TLV whose value view is made on first use: parsing a certificate reads ~80 TLVs and needs few values. */
class LazyTlv implements Tlv {
  readonly cls: Tlv['cls'];
  readonly constructed: boolean;
  readonly number: number;
  #value: Buffer | undefined;
  constructor(
    private readonly buf: Buffer,
    readonly tag: number,
    readonly start: number,
    readonly valueStart: number,
    readonly end: number,
  ) {
    this.cls = CLASSES[tag >> 6]!;
    this.constructed = (tag & 0x20) !== 0;
    this.number = tag & 0x1f;
  }
  get value(): Buffer {
    return (this.#value ??= this.buf.subarray(this.valueStart, this.end));
  }
}

function derFail(field: string, why: string, offset: number): never {
  throw new MtlsError('BAD_DER', `${field}: ${why} at offset ${offset}`);
}

const HEADER_FAULTS = [
  'truncated DER header',
  'high tag numbers are not supported',
  'indefinite length is not allowed in DER',
  'length field too large',
  'truncated DER length',
  'non-minimal DER length',
];
/** The length of the value whose header headerAt read last. */
let headerLength = 0;

/**
 * The header of the TLV at `offset` (X.690 DER: a low tag, a definite, minimal length of at most 4 octets): returns
 * where its value starts and leaves its length in headerLength, or returns -1 - i for HEADER_FAULTS[i]. The value
 * itself may lie beyond `buf`. One parser, with no object per TLV, for readTlv and for counting 100,000 entries.
 */
function headerAt(buf: Uint8Array, offset: number): number {
  if (offset + 2 > buf.length) return -1;
  if ((buf[offset]! & 0x1f) === 0x1f) return -2;
  let len = buf[offset + 1]!;
  let p = offset + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0) return -3;
    if (n > 4) return -4;
    if (p + n > buf.length) return -5;
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[p + i]!;
    if (buf[p] === 0 || len < 0x80) return -6;
    p += n;
  }
  headerLength = len;
  return p;
}

/**
 * The header of the TLV at `offset`: its tag, where its value starts and how long it is, for a value that may lie
 * beyond `buf` (a CRL read in pieces). Errors name the field and the offset.
 */
export function readTlvHeader(
  buf: Buffer,
  offset: number,
  field: string,
): { tag: number; valueStart: number; length: number } {
  const p = headerAt(buf, offset);
  if (p < 0) derFail(field, HEADER_FAULTS[-1 - p]!, offset);
  return { tag: buf[offset]!, valueStart: p, length: headerLength };
}

/** Reads one TLV at `offset` (X.690 DER: definite, minimal lengths). Errors name the field and the offset. */
export function readTlv(buf: Buffer, offset: number, field: string): Tlv {
  const p = headerAt(buf, offset);
  if (p < 0) derFail(field, HEADER_FAULTS[-1 - p]!, offset);
  const len = headerLength;
  if (p + len > buf.length) derFail(field, `value of ${len} bytes runs past the end of the data`, offset);
  return new LazyTlv(buf, buf[offset]!, offset, p, p + len);
}

/**
 * How many whole TLVs the octets of `chunks` hold (`total` in all, in pieces, each valid only until the next is
 * asked for), or -1 if they do not form whole DER TLVs: the count of readChildren without its objects, in one tight
 * loop, quick even before the JIT has warmed up (readTlv's walk over a CRL's 100,000 entries took ~25 ms in a fresh
 * process). A header cut by a piece's end is read with `read` (at most 6 octets).
 */
export function countTlvsInPieces(
  chunks: Iterable<Uint8Array>,
  total: number,
  read: (from: number, to: number) => Uint8Array,
): number {
  let n = 0;
  let p = 0; // where the next TLV starts
  let base = 0; // where the current piece starts
  for (const c of chunks) {
    const end = base + c.length;
    while (p < end) {
      const whole = end - p >= 6 || end === total;
      const buf = whole ? c : read(p, Math.min(p + 6, total));
      const at = whole ? p - base : 0;
      const v = headerAt(buf, at);
      if (v < 0) return -1;
      p += v - at + headerLength;
      n++;
    }
    base = end;
  }
  return p === total && base === total ? n : -1;
}

/** The children of a constructed value; refuses bytes that do not form whole TLVs. */
export function readChildren(buf: Buffer, field: string): Tlv[] {
  const out: Tlv[] = [];
  let off = 0;
  while (off < buf.length) {
    const t = readTlv(buf, off, field);
    out.push(t);
    off = t.end;
  }
  return out;
}

/** Reads exactly one TLV that spans the whole buffer (rejects trailing bytes). */
export function readSingle(buf: Buffer, field: string): Tlv {
  const t = readTlv(buf, 0, field);
  if (t.end !== buf.length)
    throw new MtlsError('BAD_DER', `${field}: ${buf.length - t.end} trailing bytes after the DER value`);
  return t;
}

// ---- decoding primitives ----

/** Decoded OIDs by their content octets: a certificate holds ~20, nearly all of them the same few dozen. */
const OID_CACHE = new Map<string, string>();

/** OBJECT IDENTIFIER content octets to dotted text (X.690 8.19): base-128 sub-identifiers, the first one X*40+Y. */
export function decodeOid(b: Buffer, field = 'OBJECT IDENTIFIER'): string {
  const key = b.toString('latin1');
  const known = OID_CACHE.get(key);
  if (known !== undefined) return known;
  if (b.length === 0) throw new MtlsError('BAD_DER', `${field}: empty OBJECT IDENTIFIER`);
  if (b[b.length - 1]! & 0x80) throw new MtlsError('BAD_DER', `${field}: truncated OID`);
  const subs: number[] = [];
  let acc = 0;
  let start = true;
  for (let i = 0; i < b.length; i++) {
    const byte = b[i]!;
    if (start && byte === 0x80) throw new MtlsError('BAD_DER', `${field}: non-minimal OID arc`);
    acc = acc * 128 + (byte & 0x7f);
    start = !(byte & 0x80);
    if (start) {
      subs.push(acc);
      acc = 0;
    }
  }
  const first = subs[0]!;
  const head = first < 40 ? [0, first] : first < 80 ? [1, first - 40] : [2, first - 80];
  const text = [...head, ...subs.slice(1)].join('.');
  if (OID_CACHE.size >= 4096) OID_CACHE.clear(); // a peer's random OIDs cannot grow it without bound
  OID_CACHE.set(key, text);
  return text;
}

/** UTCTime (YYMMDDHHMMSSZ, years 1950-2049) or GeneralizedTime (YYYYMMDDHHMMSSZ), DER form only (RFC 5280 4.1.2.5). */
export function decodeTime(t: Tlv, field: string): Date {
  const s = t.value.toString('latin1');
  const m =
    t.tag === 0x17
      ? /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s)
      : t.tag === 0x18
        ? /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s)
        : null;
  if (!m) throw new MtlsError('BAD_DER', `${field}: time '${s}' is not a DER UTCTime or GeneralizedTime`);
  let year = Number(m[1]);
  if (t.tag === 0x17) year += year < 50 ? 2000 : 1900;
  const d = new Date(Date.UTC(year, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])));
  if (Number.isNaN(d.getTime()) || d.getUTCDate() !== Number(m[3]))
    throw new MtlsError('BAD_DER', `${field}: invalid date '${s}'`);
  return d;
}

// ---- encoding primitives (X.690 DER) ----

function lengthBytes(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

export function tlv(tag: number, content: Buffer): Buffer {
  return Buffer.concat([tlvHeader(tag, content.length), content]);
}

/** The tag and length octets of a TLV whose content is `length` octets (written separately, e.g. with writev). */
export function tlvHeader(tag: number, length: number): Buffer {
  return Buffer.concat([Buffer.from([tag]), lengthBytes(length)]);
}

export const seq = (...parts: Buffer[]) => tlv(0x30, Buffer.concat(parts));

/** OBJECT IDENTIFIER from dotted text. */
export function encodeOid(oid: string): Buffer {
  const arcs = oid.split('.').map(Number);
  const out: number[] = [];
  for (const sub of [arcs[0]! * 40 + arcs[1]!, ...arcs.slice(2)]) {
    const chunk: number[] = [sub & 0x7f];
    for (let v = Math.floor(sub / 128); v > 0; v = Math.floor(v / 128)) chunk.unshift(0x80 | (v & 0x7f));
    out.push(...chunk);
  }
  return tlv(0x06, Buffer.from(out));
}

/** INTEGER from big-endian magnitude octets that are already minimal and positive (as randomSerial makes). */
export const integerBytes = (b: Buffer) => tlv(0x02, b);

/** RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050. */
export function encodeTime(d: Date): Buffer {
  const iso = d.toISOString();
  const digits = iso.slice(0, 19).replace(/[-:T]/g, '');
  return d.getUTCFullYear() < 2050
    ? tlv(0x17, Buffer.from(digits.slice(2) + 'Z'))
    : tlv(0x18, Buffer.from(digits + 'Z'));
}
