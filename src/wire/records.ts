import { MtlsError } from '../errors.js';
import { WireReader } from './reader.js';

/** A TLS record as on the wire (RFC 8446 5.1). */
export interface TlsRecord {
  type: number;
  version: number;
  fragment: Buffer;
  /** The 5-byte header (the AEAD additional data in TLS 1.3). */
  header: Buffer;
}

/** RFC 8446 5.2: a TLSCiphertext fragment is at most 2^14 + 256 bytes. */
export const MAX_RECORD = 16384 + 256;

/**
 * Splits a byte stream into records. Bytes may arrive in any chunks; a partial record waits for more. A length
 * over the limit is a decode error, so a hostile peer cannot make us buffer without bound.
 */
export class RecordSplitter {
  private pending: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): TlsRecord[] {
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    const out: TlsRecord[] = [];
    while (this.pending.length >= 5) {
      const len = this.pending.readUInt16BE(3);
      if (len > MAX_RECORD)
        throw new MtlsError(
          'BAD_INPUT',
          `TLS record of ${len} bytes is over the ${MAX_RECORD}-byte limit (not TLS, or corrupt)`,
        );
      if (this.pending.length < 5 + len) break;
      const header = this.pending.subarray(0, 5);
      out.push({
        type: header[0]!,
        version: header.readUInt16BE(1),
        fragment: this.pending.subarray(5, 5 + len),
        header,
      });
      this.pending = this.pending.subarray(5 + len);
    }
    return out;
  }

  get buffered(): number {
    return this.pending.length;
  }
}

/** Parses one whole record (for vectors and tests). */
export function parseRecord(bytes: Buffer): TlsRecord {
  const r = new WireReader(bytes, 'record');
  const type = r.u8('content type');
  const version = r.u16('legacy version');
  const fragment = r.vec(2, 'fragment');
  r.end();
  return { type, version, fragment, header: bytes.subarray(0, 5) };
}
