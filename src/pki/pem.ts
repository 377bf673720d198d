import { MtlsError } from '../errors.js';
import { rangeOf, sliceParts, type Part } from './octets.js';

export interface PemBlock {
  /** The label between BEGIN and END, e.g. `CERTIFICATE`. */
  label: string;
  der: Buffer;
}

const BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([\s\S]*?)-----END ([A-Z0-9 ]+)-----/g;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** Is this buffer PEM text (as opposed to DER)? */
export function looksLikePem(data: Buffer | string): boolean {
  const head = typeof data === 'string' ? data.slice(0, 4096) : data.subarray(0, 4096).toString('latin1');
  return head.includes('-----BEGIN ');
}

/**
 * Decodes every PEM block in `text` (RFC 7468 strict form: matching labels, base64 body, no headers).
 * Text outside the blocks is ignored, as OpenSSL does, so `openssl x509 -text` output still parses.
 */
export function decodePem(text: string, what = 'input'): PemBlock[] {
  const blocks: PemBlock[] = [];
  for (const m of text.matchAll(BLOCK)) {
    const [, begin, body, end] = m as unknown as [string, string, string, string];
    if (begin !== end) {
      throw new MtlsError(
        'BAD_PEM',
        `${what}: PEM block 'BEGIN ${begin}' ends with 'END ${end}'; the file is damaged, re-export it`,
      );
    }
    if (/^[A-Za-z-]+:/m.test(body)) {
      throw new MtlsError(
        'BAD_PEM',
        `${what}: PEM block '${begin}' has headers (legacy OpenSSL encryption); convert it with 'openssl pkcs8 -topk8'`,
      );
    }
    const b64 = body.replace(/\s+/g, '');
    if (!BASE64.test(b64) || b64.length % 4 !== 0 || b64.length === 0) {
      throw new MtlsError(
        'BAD_PEM',
        `${what}: PEM block '${begin}' is not valid base64; the file is damaged, re-export it`,
      );
    }
    blocks.push({ label: begin, der: Buffer.from(b64, 'base64') });
  }
  if (blocks.length === 0 && text.includes('-----BEGIN ')) {
    throw new MtlsError(
      'BAD_PEM',
      `${what}: a PEM block is not terminated (no matching END line); the file is truncated or damaged`,
    );
  }
  return blocks;
}

/** Encodes DER as PEM with 64-column lines (RFC 7468). */
export function encodePem(label: string, der: Uint8Array): string {
  return `-----BEGIN ${label}-----\n${pemLines(der)}-----END ${label}-----\n`;
}

/** The base64 lines of `der`, each ending in a newline (64 columns: 48 octets a line). */
function pemLines(der: Uint8Array): string {
  // No copy of `der`, and slices rather than a regular expression: a 5 MB CRL took 50 ms with match(/.{1,64}/g).
  const b64 = Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString('base64');
  const lines: string[] = new Array<string>(Math.ceil(b64.length / 64));
  for (let i = 0, j = 0; i < b64.length; i += 64, j++) lines[j] = b64.slice(i, i + 64);
  return lines.length ? `${lines.join('\n')}\n` : '';
}

/** The length of encodePem(label, der) for a DER of `n` octets. */
export function pemLength(label: string, n: number): number {
  const b64 = 4 * Math.ceil(n / 3);
  return 17 + label.length + b64 + Math.ceil(b64 / 64) + 15 + label.length;
}

/**
 * encodePem of the DER made of `parts`, as parts, taking the lines of the octets [same[0], same[1]) from
 * `previous`: the PEM (exactly encodePem(label, old)) of an older DER that has the same octets at the same
 * offsets. Only the lines around them are encoded: a revocation appended to a 5 MB CRL re-encodes a few lines
 * of its 6.6 MB PEM instead of all 100,000, and never holds the rest (parts and `previous` may be read in pieces).
 */
export function encodePemReusing(label: string, parts: Part[], previous: Part, same: [number, number]): Part[] {
  const total = parts.reduce((n, p) => n + p.length, 0);
  const first = Math.ceil(same[0] / 48);
  const end = Math.floor(same[1] / 48);
  if (end <= first || same[1] > total) return [Buffer.from(encodePem(label, sliceParts(parts, 0, total)))];
  const begin = 17 + label.length;
  return [
    Buffer.from(`-----BEGIN ${label}-----\n${pemLines(sliceParts(parts, 0, first * 48))}`),
    rangeOf(previous, begin + 65 * first, begin + 65 * end),
    Buffer.from(`${pemLines(sliceParts(parts, end * 48, total))}-----END ${label}-----\n`),
  ];
}

/** The certificates of a PEM bundle, in file order. Throws if there is none. */
export function decodeCertificatesPem(text: string, what: string): Buffer[] {
  const certs = decodePem(text, what)
    .filter((b) => b.label === 'CERTIFICATE' || b.label === 'TRUSTED CERTIFICATE')
    .map((b) => b.der);
  if (certs.length === 0)
    throw new MtlsError('BAD_PEM', `${what}: no 'BEGIN CERTIFICATE' block found; expected a PEM certificate file`);
  return certs;
}
