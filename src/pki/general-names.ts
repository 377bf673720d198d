import { readChildren, readSingle, type Tlv } from './der.js';
import { ipBytesToText, parseNameDer, type DnAttribute } from './names.js';

/** The names a certificate is for, sorted by kind, decoded from DER (never from a string form). */
export interface SubjectNames {
  dns: string[];
  ip: string[];
  email: string[];
  uri: string[];
  directory: DnAttribute[][];
  /** Forms we do not interpret (otherName, x400Address, ediPartyName, registeredID), by name. */
  other: string[];
  /** Syntax problems found while decoding (bad IP length, non-ASCII bytes, NUL bytes, empty names). */
  problems: string[];
}

export function emptyNames(): SubjectNames {
  return { dns: [], ip: [], email: [], uri: [], directory: [], other: [], problems: [] };
}

const OTHER_FORMS: Record<number, string> = { 0: 'otherName', 3: 'x400Address', 5: 'ediPartyName', 8: 'registeredID' };

/** IA5String content: 7-bit ASCII without NUL or control characters (a hostile NUL must never truncate a name). */
function ia5(t: Tlv, kind: string, problems: string[]): string | undefined {
  const v = t.value;
  if (v.length === 0) {
    problems.push(`empty ${kind} name`);
    return undefined;
  }
  for (const b of v) {
    if (b < 0x20 || b > 0x7e) {
      problems.push(`${kind} name contains byte 0x${b.toString(16).padStart(2, '0')} (control or non-ASCII)`);
      return undefined;
    }
  }
  return v.toString('latin1');
}

/** Decodes one GeneralName (RFC 5280 4.2.1.6) into `out`. `allowMask`: iPAddress holds address + mask (name constraints). */
export function addGeneralName(t: Tlv, out: SubjectNames, allowMask = false): void {
  if (t.cls !== 'context') {
    out.problems.push(`GeneralName has a non-context tag 0x${t.tag.toString(16)}`);
    return;
  }
  switch (t.number) {
    case 1: {
      const s = ia5(t, 'email', out.problems);
      if (s !== undefined) out.email.push(s);
      break;
    }
    case 2: {
      const s = ia5(t, 'DNS', out.problems);
      if (s !== undefined) out.dns.push(s);
      break;
    }
    case 6: {
      const s = ia5(t, 'URI', out.problems);
      if (s !== undefined) out.uri.push(s);
      break;
    }
    case 7: {
      const n = t.value.length;
      const ok = allowMask ? n === 8 || n === 32 : n === 4 || n === 16;
      if (!ok) {
        out.problems.push(`IP address of ${n} bytes (must be ${allowMask ? '8 or 32' : '4 or 16'})`);
        break;
      }
      if (allowMask) {
        const half = n / 2;
        const mask = t.value.subarray(half);
        if (!isContiguousMask(mask)) {
          out.problems.push('IP constraint has a non-contiguous mask');
          break;
        }
        out.ip.push(`${ipBytesToText(t.value.subarray(0, half))}/${prefixLength(mask)}`);
      } else {
        out.ip.push(ipBytesToText(t.value));
      }
      break;
    }
    case 4: {
      try {
        readSingle(t.value, 'directoryName');
        out.directory.push(parseNameDer(t.value));
      } catch {
        out.problems.push('malformed directoryName');
      }
      break;
    }
    default:
      out.other.push(OTHER_FORMS[t.number] ?? `[${t.number}]`);
  }
}

/** GeneralNames ::= SEQUENCE SIZE (1..MAX) OF GeneralName. */
export function parseGeneralNames(der: Buffer, field: string): SubjectNames {
  const out = emptyNames();
  const seq = readSingle(der, field);
  if (seq.tag !== 0x30) {
    out.problems.push(`${field} is not a SEQUENCE`);
    return out;
  }
  const items = readChildren(seq.value, field);
  if (items.length === 0) out.problems.push(`${field} is empty (at least one name is required)`);
  for (const t of items) addGeneralName(t, out);
  return out;
}

export function isContiguousMask(mask: Uint8Array): boolean {
  let seenZero = false;
  for (const byte of mask) {
    for (let bit = 7; bit >= 0; bit--) {
      const one = (byte >> bit) & 1;
      if (one && seenZero) return false;
      if (!one) seenZero = true;
    }
  }
  return true;
}

function prefixLength(mask: Uint8Array): number {
  let n = 0;
  for (const byte of mask) for (let bit = 7; bit >= 0; bit--) n += (byte >> bit) & 1;
  return n;
}
