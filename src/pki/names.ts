import { MtlsError } from '../errors.js';
import { decodeOid, encodeOid, readChildren, readSingle, seq, tlv } from './der.js';
import { OID } from './oid.js';
import { printable } from '../text/printable.js';
import { checkIpAddress, parseIp } from './ip.js';

export { printable };
export { checkCidr, checkIpAddress, cidrRange, ipBytes, ipBytesToText, parseCidr, parseIp } from './ip.js';

/** One attribute of a distinguished name, as parsed (not as Node's string form). */
export interface DnAttribute {
  /** Short name (CN, O, OU, ...) or the dotted OID. */
  type: string;
  oid: string;
  value: string;
}

const SHORT: Record<string, string> = {
  [OID.commonName]: 'CN',
  [OID.organizationName]: 'O',
  [OID.organizationalUnitName]: 'OU',
  [OID.countryName]: 'C',
  [OID.stateOrProvinceName]: 'ST',
  [OID.localityName]: 'L',
  [OID.streetAddress]: 'STREET',
  [OID.domainComponent]: 'DC',
  [OID.userId]: 'UID',
  [OID.serialNumber]: 'serialNumber',
  [OID.emailAddress]: 'emailAddress',
};
const BY_SHORT: Record<string, string> = Object.fromEntries(
  Object.entries(SHORT).map(([oid, s]) => [s.toUpperCase(), oid]),
);

/** Decodes a DER Name (SEQUENCE OF SET OF AttributeTypeAndValue) into attributes, in order. */
export function parseNameDer(der: Buffer): DnAttribute[] {
  const out: DnAttribute[] = [];
  for (const rdn of readChildren(readSingle(der, 'Name').value, 'Name')) {
    if (rdn.tag !== 0x31) throw new MtlsError('BAD_DER', 'Name: an RDN is not a SET');
    for (const atv of readChildren(rdn.value, 'RDN')) {
      const [typeT, valueT, extra] = readChildren(atv.value, 'AttributeTypeAndValue');
      if (atv.tag !== 0x30 || !typeT || typeT.tag !== 0x06 || !valueT || extra)
        throw new MtlsError('BAD_DER', 'Name: malformed attribute');
      const oid = decodeOid(typeT.value, 'attribute type');
      out.push({ type: SHORT[oid] ?? oid, oid, value: directoryString(valueT.tag, valueT.value) });
    }
  }
  return out;
}

/** DirectoryString and friends to text; unknown types print as `#hex` (RFC 4514 2.4). */
function directoryString(tag: number, v: Buffer): string {
  switch (tag) {
    case 0x0c:
      return v.toString('utf8');
    case 0x13:
    case 0x16:
    case 0x14:
      return v.toString('latin1');
    case 0x1e: {
      const b = Buffer.from(v);
      return b.length % 2 ? '#' + v.toString('hex') : b.swap16().toString('utf16le');
    }
    case 0x1c: {
      let s = '';
      for (let i = 0; i + 3 < v.length; i += 4) {
        const cp = v.readUInt32BE(i);
        if (cp > 0x10ffff) return '#' + v.toString('hex');
        s += String.fromCodePoint(cp);
      }
      return s;
    }
    default:
      return '#' + v.toString('hex');
  }
}

/** RFC 4514 escaping of one attribute value. */
export function escapeDnValue(value: string): string {
  let s = value.replace(/[\\,+"<>;=]/g, (c) => '\\' + c).replace(/\0/g, '\\00');
  if (s.startsWith('#') || s.startsWith(' ')) s = '\\' + s;
  if (s.endsWith(' ') && !s.endsWith('\\ ')) s = s.slice(0, -1) + '\\ ';
  return s;
}

/** RFC 4514 string form (last RDN first): `CN=api, O=Acme`. */
export function formatDn(attrs: DnAttribute[]): string {
  return [...attrs]
    .reverse()
    .map((a) => `${a.type}=${escapeDnValue(a.value)}`)
    .join(', ');
}

/**
 * The DER of a Name from attributes listed most-general first (C, O, OU, CN): one attribute per RDN
 * (RFC 5280 4.1.2.4), countryName a PrintableString, every other value a UTF8String.
 */
export function buildName(attrs: { oid: string; value: string }[]): Buffer {
  return seq(
    ...attrs.map(({ oid, value }) => {
      if (value.length === 0)
        throw new MtlsError('BAD_NAME', `empty value for ${SHORT[oid] ?? oid} in a distinguished name`);
      if (value.includes('\0'))
        throw new MtlsError('BAD_NAME', `NUL byte in ${SHORT[oid] ?? oid} of a distinguished name`);
      if (oid === OID.commonName && value.length > 64) {
        throw new MtlsError(
          'BAD_NAME',
          `common name '${value.slice(0, 20)}...' is ${value.length} characters; X.509 allows 64 at most`,
        );
      }
      const av =
        oid === OID.countryName
          ? tlv(0x13, Buffer.from(checkCountry(value), 'latin1'))
          : tlv(0x0c, Buffer.from(value, 'utf8'));
      return tlv(0x31, seq(encodeOid(oid), av));
    }),
  );
}

function checkCountry(v: string): string {
  if (!/^[A-Z]{2}$/.test(v))
    throw new MtlsError('BAD_NAME', `country '${v}' must be two upper-case letters (ISO 3166), e.g. US`);
  return v;
}

/** Parses `O=Acme, OU=payments, CN=api` (most general first) into attributes. Commas in values need `\,`. */
export function parseDnString(text: string): { oid: string; value: string }[] {
  const parts = text
    .split(/(?<!\\),/)
    .map((p) => p.trim())
    .filter((p) => p.length > 0);
  if (parts.length === 0)
    throw new MtlsError('BAD_NAME', `distinguished name '${text}' is empty; write it like 'O=Acme, CN=api'`);
  return parts.map((p) => {
    const eq = p.indexOf('=');
    if (eq <= 0)
      throw new MtlsError('BAD_NAME', `'${p}' in distinguished name is not TYPE=value; write it like 'O=Acme, CN=api'`);
    const key = p.slice(0, eq).trim();
    const oid = BY_SHORT[key.toUpperCase()] ?? (/^\d+(\.\d+)+$/.test(key) ? key : undefined);
    if (!oid)
      throw new MtlsError(
        'BAD_NAME',
        `unknown attribute type '${key}' in distinguished name; use CN, O, OU, C, ST, L, DC or a dotted OID`,
      );
    return {
      oid,
      value: p
        .slice(eq + 1)
        .trim()
        .replace(/\\(.)/g, '$1'),
    };
  });
}

const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

/**
 * Why `name` is not a DNS name for a certificate (RFC 1034 preferred syntax as RFC 1123 relaxed it, which RFC 5280
 * 4.2.1.6 requires; `*.` allowed as the whole left-most label when `wildcard`), or undefined when it is one.
 */
export function dnsNameProblem(name: string, opts: { wildcard?: boolean } = {}): string | undefined {
  const n = name.toLowerCase();
  if (n.length === 0) return 'it is empty';
  if (n.length > 253) return 'longer than 253 characters';
  if (n.endsWith('.')) return 'it has a trailing dot';
  if (parseIp(n)) return 'it is an IP address';
  const labels = n.split('.');
  for (const [i, l] of labels.entries()) {
    if (i === 0 && l === '*' && opts.wildcard) {
      if (labels.length < 3) return 'a wildcard needs at least two labels after it (*.example.org)';
      continue;
    }
    if (l.includes('*'))
      return opts.wildcard
        ? 'a wildcard must be the whole left-most label (*.example.org)'
        : 'wildcards are not allowed here';
    if (!LABEL.test(l))
      return `label '${printable(l)}' must be 1-63 letters, digits or hyphens, not starting or ending with a hyphen`;
  }
  return undefined;
}

/** Validates a DNS name for a certificate we issue (see dnsNameProblem). Returns the lower-cased name. */
export function checkDnsName(name: string, opts: { wildcard?: boolean } = {}): string {
  const why = dnsNameProblem(name, opts);
  if (why)
    throw new MtlsError(
      'BAD_NAME',
      `DNS name '${printable(name)}' is not valid: ${why}${why === 'it is an IP address' ? '; use --ip for addresses' : why === 'it has a trailing dot' ? '; remove it' : ''}`,
    );
  return name.toLowerCase();
}

/** Why `email` is not a mailbox for an rfc822Name SAN (ASCII local part; the domain a DNS name), or undefined. */
export function emailProblem(email: string): string | undefined {
  const at = email.lastIndexOf('@');
  const local = email.slice(0, at);
  if (
    at <= 0 ||
    !/^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}$/.test(local) ||
    local.startsWith('.') ||
    local.endsWith('.') ||
    local.includes('..')
  )
    return 'it is not local-part@domain';
  const why = dnsNameProblem(email.slice(at + 1));
  return why ? `its domain is not a host name (${why})` : undefined;
}

/** Validates an email address for an rfc822Name SAN we issue. */
export function checkEmail(email: string): string {
  const at = email.lastIndexOf('@');
  if (emailProblem(email) === 'it is not local-part@domain' || at <= 0) {
    throw new MtlsError(
      'BAD_NAME',
      `'${printable(email)}' is not a valid email address; write it like alice@example.org`,
    );
  }
  return `${email.slice(0, at)}@${checkDnsName(email.slice(at + 1))}`;
}

/** A SPIFFE ID split into its parts (SPIFFE ID spec, section 2). */
export interface SpiffeId {
  uri: string;
  trustDomain: string;
  /** The path, `''` or starting with `/`. */
  path: string;
  segments: string[];
}

/**
 * Parses and validates a SPIFFE ID as the SPIFFE ID specification requires: scheme `spiffe`, a lower-case
 * trust domain of [a-z0-9.-_] with no port or user info, a path of non-empty segments of [A-Za-z0-9.-_] that
 * are not `.` or `..`, no trailing slash, no query or fragment, 2048 bytes at most.
 */
export function parseSpiffeId(uri: string): SpiffeId {
  const fail = (why: string): never => {
    throw new MtlsError(
      'BAD_SPIFFE_ID',
      `'${printable(uri)}' is not a valid SPIFFE ID: ${why}; write it like spiffe://example.org/ns/prod/sa/api`,
    );
  };
  if (Buffer.byteLength(uri) > 2048) fail('longer than 2048 bytes');
  if (!uri.startsWith('spiffe://'))
    fail(/^spiffe:/i.test(uri) ? "the scheme must be lower-case 'spiffe://'" : "it must start with 'spiffe://'");
  const rest = uri.slice('spiffe://'.length);
  if (rest.includes('?')) fail('a query is not allowed');
  if (rest.includes('#')) fail('a fragment is not allowed');
  const slash = rest.indexOf('/');
  const trustDomain = slash < 0 ? rest : rest.slice(0, slash);
  const path = slash < 0 ? '' : rest.slice(slash);
  if (trustDomain.length === 0) fail('the trust domain is empty');
  if (trustDomain.includes('@')) fail('user info is not allowed');
  if (trustDomain.includes(':')) fail('a port is not allowed in the trust domain');
  if (/[A-Z]/.test(trustDomain)) fail('the trust domain must be lower-case');
  if (!/^[a-z0-9._-]+$/.test(trustDomain)) fail('the trust domain may hold only a-z, 0-9, dot, hyphen and underscore');
  if (trustDomain.length > 255) fail('the trust domain is longer than 255 characters');
  const segments = path === '' ? [] : path.slice(1).split('/');
  if (path !== '') {
    if (path.endsWith('/')) fail('a trailing slash is not allowed');
    for (const s of segments) {
      if (s.length === 0) fail('empty path segments (//) are not allowed');
      if (s === '.' || s === '..') fail(`the path segment '${s}' is not allowed`);
      if (!/^[A-Za-z0-9._-]+$/.test(s))
        fail(`the path segment '${printable(s)}' may hold only letters, digits, dot, hyphen and underscore`);
    }
  }
  return { uri, trustDomain, path, segments };
}

/** Checks a trust domain name on its own (as given to `ca init --trust-domain`). */
export function checkTrustDomain(td: string): string {
  return parseSpiffeId(`spiffe://${td}`).trustDomain;
}

/**
 * Compiles a SPIFFE ID pattern: `*` matches exactly one path segment (or the trust domain), `**` as the last
 * segment matches one or more segments. Everything else matches literally.
 */
export function compileSpiffePattern(pattern: string): (id: SpiffeId) => boolean {
  if (!pattern.startsWith('spiffe://')) {
    throw new MtlsError(
      'BAD_SPIFFE_ID',
      `SPIFFE ID pattern '${printable(pattern)}' must start with 'spiffe://', e.g. spiffe://example.org/ns/*/sa/api`,
    );
  }
  const rest = pattern.slice('spiffe://'.length);
  const [td, ...segs] = rest.split('/');
  segs.forEach((s, i) => {
    if (s.includes('*') && s !== '*' && s !== '**')
      throw new MtlsError('BAD_SPIFFE_ID', `pattern segment '${s}': '*' must stand alone as a whole segment`);
    if (s === '**' && i !== segs.length - 1)
      throw new MtlsError('BAD_SPIFFE_ID', `pattern '${pattern}': '**' may only be the last segment`);
    if (s === '') throw new MtlsError('BAD_SPIFFE_ID', `pattern '${pattern}' has an empty path segment`);
  });
  return (id) => {
    if (td !== '*' && td !== id.trustDomain) return false;
    if (segs.at(-1) === '**') {
      if (id.segments.length < segs.length) return false;
      return segs.slice(0, -1).every((s, i) => s === '*' || s === id.segments[i]);
    }
    return id.segments.length === segs.length && segs.every((s, i) => s === '*' || s === id.segments[i]);
  };
}

/** Whether a host (optionally in [brackets]) is an IP literal that a certificate could carry. */
export function isIpLiteral(host: string): boolean {
  try {
    checkIpAddress(host.replace(/^\[|\]$/g, ''));
    return true;
  } catch {
    return false;
  }
}

/** What a server certificate must be valid for when we connected to `host`: its IP SAN or its DNS SAN. */
export function hostCheck(host: string): { ip: string } | { dns: string } {
  const name = host.replace(/^\[|\]$/g, '');
  return isIpLiteral(name) ? { ip: name } : { dns: name };
}
