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

/** Reads one TLV at `offset` (X.690 DER: definite, minimal lengths). Errors name the field and the offset. */
export function readTlv(buf: Buffer, offset: number, field: string): Tlv {
  const fail = (why: string): never => {
    throw new MtlsError('BAD_DER', `${field}: ${why} at offset ${offset}`);
  };
  if (offset + 2 > buf.length) fail('truncated DER header');
  const tag = buf[offset]!;
  if ((tag & 0x1f) === 0x1f) fail('high tag numbers are not supported');
  let len = buf[offset + 1]!;
  let p = offset + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0) fail('indefinite length is not allowed in DER');
    if (n > 4) fail('length field too large');
    if (p + n > buf.length) fail('truncated DER length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[p + i]!;
    if (buf[p] === 0 || len < 0x80) fail('non-minimal DER length');
    p += n;
  }
  if (p + len > buf.length) fail(`value of ${len} bytes runs past the end of the data`);
  return {
    tag, cls: CLASSES[tag >> 6]!, constructed: (tag & 0x20) !== 0, number: tag & 0x1f,
    start: offset, valueStart: p, end: p + len, value: buf.subarray(p, p + len),
  };
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
  if (t.end !== buf.length) throw new MtlsError('BAD_DER', `${field}: ${buf.length - t.end} trailing bytes after the DER value`);
  return t;
}
