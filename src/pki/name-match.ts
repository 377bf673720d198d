import type { NameConstraints } from './extensions.js';
import type { SubjectNames } from './general-names.js';
import { ipBytes, parseCidr, type DnAttribute } from './names.js';

/**
 * Host name matching as RFC 6125 and rustls-webpki do it: case-insensitive; a wildcard is only the whole
 * left-most label, matches exactly one label and never the bare parent (`*.example.org` does not match
 * `example.org`); no CN fallback.
 */
export function dnsNameMatches(pattern: string, host: string): boolean {
  const p = pattern.toLowerCase();
  const h = host.toLowerCase().replace(/\.$/, '');
  if (!p.startsWith('*.')) return p === h;
  const suffix = p.slice(1);
  if (p.split('.').length < 3) return false;
  const dot = h.indexOf('.');
  return dot > 0 && h.slice(dot) === suffix;
}

/** RFC 5280 4.2.1.10 for dNSName: `example.org` covers it and all subdomains; `.example.org` only subdomains. */
export function dnsWithinConstraint(name: string, constraint: string): boolean {
  const n = name.toLowerCase();
  const c = constraint.toLowerCase();
  if (c === '') return true;
  if (c.startsWith('.')) return n.endsWith(c);
  return n === c || n.endsWith('.' + c);
}

export function ipWithinCidr(addr: string, cidr: string): boolean {
  const a = ipBytes(addr);
  const range = parseCidr(cidr);
  if (!range || a.length !== range.addr.length) return false;
  for (let i = 0, bits = range.prefix; i < a.length && bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((a[i]! & mask) !== (range.addr[i]! & mask)) return false;
  }
  return true;
}

/** rfc822Name constraints: a full mailbox, a host (`example.org`), or a domain (`.example.org`). */
export function emailWithinConstraint(email: string, constraint: string): boolean {
  const at = email.lastIndexOf('@');
  const host = email.slice(at + 1).toLowerCase();
  const c = constraint.toLowerCase();
  if (c.includes('@'))
    return (
      email.slice(0, at) === constraint.slice(0, constraint.lastIndexOf('@')) &&
      host === c.slice(c.lastIndexOf('@') + 1)
    );
  if (c.startsWith('.')) return host.endsWith(c);
  return host === c;
}

/** URI constraints apply to the host part: `example.org` exactly, `.example.org` its subdomains. */
export function uriWithinConstraint(uri: string, constraint: string): boolean {
  const host = uriHost(uri);
  if (host === undefined) return false;
  const c = constraint.toLowerCase();
  if (c.startsWith('.')) return host.endsWith(c);
  return host === c;
}

function uriHost(uri: string): string | undefined {
  const m = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)/i.exec(uri);
  if (!m) return undefined;
  const authority = m[1]!.replace(/^.*@/, '');
  const host = authority.startsWith('[')
    ? authority.slice(0, authority.indexOf(']') + 1)
    : authority.replace(/:\d*$/, '');
  return host.length ? host.toLowerCase() : undefined;
}

function normalizeValue(v: string): string {
  return v.trim().replace(/\s+/g, ' ').toLowerCase();
}

/** RFC 5280 7.1 name comparison (case-insensitive, whitespace folded), attribute by attribute. */
export function sameDn(a: DnAttribute[], b: DnAttribute[]): boolean {
  return (
    a.length === b.length &&
    a.every((x, i) => x.oid === b[i]!.oid && normalizeValue(x.value) === normalizeValue(b[i]!.value))
  );
}

function dnWithin(subject: DnAttribute[], base: DnAttribute[]): boolean {
  return base.length <= subject.length && sameDn(subject.slice(0, base.length), base);
}

/** Every reason the names of a certificate break a CA's name constraints (empty when they comply). */
export function nameConstraintViolations(names: SubjectNames, subject: DnAttribute[], nc: NameConstraints): string[] {
  const out: string[] = [];
  const dirs = subject.length ? [subject, ...names.directory] : names.directory;
  const forms: [string, string[], (n: string, c: string) => boolean, keyof SubjectNames][] = [
    ['DNS name', names.dns, (n, c) => dnsWithinConstraint(n.replace(/^\*\./, 'x.'), c), 'dns'],
    ['IP address', names.ip, ipWithinCidr, 'ip'],
    ['email', names.email, emailWithinConstraint, 'email'],
    ['URI', names.uri, uriWithinConstraint, 'uri'],
  ];
  for (const [label, values, within, key] of forms) {
    const permitted = nc.permitted?.[key] as string[] | undefined;
    const excluded = nc.excluded?.[key] as string[] | undefined;
    for (const v of values) {
      if (permitted && permitted.length > 0 && !permitted.some((c) => within(v, c))) {
        out.push(`${label} '${v}' is outside the permitted names (${permitted.join(', ')})`);
      }
      const hit = excluded?.find(
        (c) => within(v, c) || (key === 'dns' && v.startsWith('*.') && dnsWithinConstraint(c, v.slice(2))),
      );
      if (hit !== undefined) out.push(`${label} '${v}' is in the excluded names (${hit})`);
    }
  }
  const permittedDirs = nc.permitted?.directory ?? [];
  for (const d of dirs) {
    if (permittedDirs.length && !permittedDirs.some((base) => dnWithin(d, base)))
      out.push('the subject name is outside the permitted directory names');
    if ((nc.excluded?.directory ?? []).some((base) => dnWithin(d, base)))
      out.push('the subject name is in the excluded directory names');
  }
  const unsupported = [...(nc.permitted?.other ?? []), ...(nc.excluded?.other ?? [])];
  if (unsupported.length && names.other.length)
    out.push(`name constraints of type ${unsupported.join(', ')} cannot be checked`);
  return out;
}
