import { MtlsError } from '../errors.js';
import { printable } from '../text/printable.js';

/** IP addresses as certificates carry them (RFC 5280 4.2.1.6: 4 or 16 bytes), parsed and printed by our own code. */

const V4_PART = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]\d|\d)$/;
const V6_GROUP = /^[0-9a-f]{1,4}$/i;

function parseIpv4(text: string): number[] | undefined {
  const parts = text.split('.');
  if (parts.length !== 4 || !parts.every((p) => V4_PART.test(p))) return undefined;
  return parts.map(Number);
}

/** RFC 4291 2.2 text forms: eight groups, one `::` for a run of zeros, an IPv4 tail in the last 32 bits. */
function parseIpv6(text: string): Buffer | undefined {
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const groups = (half: string, last: boolean): number[] | undefined => {
    if (half === '') return [];
    const out: number[] = [];
    const parts = half.split(':');
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i]!;
      if (last && i === parts.length - 1 && p.includes('.')) {
        const v4 = parseIpv4(p);
        if (!v4) return undefined;
        out.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
      } else if (V6_GROUP.test(p)) {
        out.push(parseInt(p, 16));
      } else {
        return undefined;
      }
    }
    return out;
  };
  const head = groups(halves[0]!, halves.length === 1);
  const tail = halves.length === 2 ? groups(halves[1]!, true) : [];
  if (!head || !tail) return undefined;
  const explicit = head.length + tail.length;
  if (halves.length === 1 ? explicit !== 8 : explicit > 7) return undefined;
  const words = [...head, ...new Array<number>(8 - explicit).fill(0), ...tail];
  const b = Buffer.alloc(16);
  words.forEach((w, i) => b.writeUInt16BE(w, i * 2));
  return b;
}

/**
 * The bytes of an IP address in text (4 for IPv4 in dotted decimal without leading zeros, 16 for IPv6), or
 * undefined when the text is not one. Our own parser: the pure layers do no I/O, so no `node:net`.
 */
export function parseIp(text: string): Buffer | undefined {
  if (text.includes(':')) return parseIpv6(text);
  const v4 = parseIpv4(text);
  return v4 ? Buffer.from(v4) : undefined;
}

/** A CIDR range (`10.0.0.0/8`, `fd00::/8`): its address octets and prefix length, or undefined when it is not one. */
export function parseCidr(text: string): { addr: Buffer; prefix: number } | undefined {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(text);
  const addr = m ? parseIp(m[1]!) : undefined;
  const prefix = m ? Number(m[2]) : -1;
  return addr && prefix <= addr.length * 8 ? { addr, prefix } : undefined;
}

/** parseCidr, throwing a one-line BAD_NAME when the text is not a range. */
export function cidrRange(cidr: string): { addr: Buffer; prefix: number } {
  const range = parseCidr(cidr);
  if (!range)
    throw new MtlsError('BAD_NAME', `'${printable(cidr)}' is not a CIDR range; write it like 10.0.0.0/8 or fd00::/8`);
  return range;
}

/** Validates a CIDR range (for a name constraint or an issuance policy) and returns it. */
export function checkCidr(cidr: string): string {
  cidrRange(cidr);
  return cidr;
}

/** Validates an IPv4 or IPv6 address and returns its canonical text form. */
export function checkIpAddress(addr: string): string {
  if (addr.includes('%'))
    throw new MtlsError(
      'BAD_NAME',
      `'${printable(addr)}' has an IPv6 zone (%...), which a certificate cannot carry; drop it`,
    );
  const b = parseIp(addr);
  if (!b) throw new MtlsError('BAD_NAME', `'${printable(addr)}' is not an IP address; write it like 10.0.0.1 or ::1`);
  return b.length === 4 ? addr : ipBytesToText(b);
}

/** 16 bytes of an IPv6 address, or 4 of an IPv4 one. */
export function ipBytes(addr: string): Buffer {
  const b = parseIp(addr);
  if (!b) throw new MtlsError('BAD_NAME', `'${printable(addr)}' is not an IP address; write it like 10.0.0.1 or ::1`);
  return b;
}

/** Text form of a 4- or 16-byte address (RFC 5952 compression for IPv6). */
export function ipBytesToText(b: Uint8Array): string {
  if (b.length === 4) return Array.from(b).join('.');
  if (b.length !== 16) return `<invalid ${b.length}-byte address>`;
  const words = Array.from({ length: 8 }, (_, i) => (b[i * 2]! << 8) | b[i * 2 + 1]!);
  let best = -1,
    bestLen = 0;
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen && j - i > 1) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = words.map((w) => w.toString(16));
  if (best < 0) return hex.join(':');
  return hex.slice(0, best).join(':') + '::' + hex.slice(best + bestLen).join(':');
}
