import { MtlsError } from '../errors.js';

/** A bounds-checked reader over TLS wire bytes; every error names the field and the offset. */
export class WireReader {
  private pos = 0;

  constructor(
    private readonly buf: Buffer,
    readonly where = 'message',
    private readonly base = 0,
  ) {}

  get offset(): number {
    return this.pos;
  }

  get remaining(): number {
    return this.buf.length - this.pos;
  }

  private need(n: number, field: string): void {
    if (this.pos + n > this.buf.length) {
      throw new MtlsError(
        'BAD_INPUT',
        `${this.where}: ${field} needs ${n} bytes at offset ${this.base + this.pos}, only ${this.remaining} left`,
      );
    }
  }

  u8(field: string): number {
    this.need(1, field);
    return this.buf[this.pos++]!;
  }

  u16(field: string): number {
    this.need(2, field);
    const v = this.buf.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }

  u24(field: string): number {
    this.need(3, field);
    const v = this.buf.readUIntBE(this.pos, 3);
    this.pos += 3;
    return v;
  }

  bytes(n: number, field: string): Buffer {
    this.need(n, field);
    const v = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }

  /** A vector with a 1-, 2- or 3-byte length prefix (RFC 8446 3.4). */
  vec(lenBytes: 1 | 2 | 3, field: string): Buffer {
    const n =
      lenBytes === 1
        ? this.u8(`${field} length`)
        : lenBytes === 2
          ? this.u16(`${field} length`)
          : this.u24(`${field} length`);
    return this.bytes(n, field);
  }

  /** A sub-reader over a length-prefixed vector. */
  sub(lenBytes: 1 | 2 | 3, field: string): WireReader {
    const start = this.pos + lenBytes;
    return new WireReader(this.vec(lenBytes, field), `${this.where} ${field}`, this.base + start);
  }

  /** Refuses trailing bytes. */
  end(): void {
    if (this.remaining !== 0)
      throw new MtlsError(
        'BAD_INPUT',
        `${this.where}: ${this.remaining} unexpected trailing bytes at offset ${this.base + this.pos}`,
      );
  }
}
