import net from 'node:net';
import { MtlsError } from '../errors.js';
import type { PeerIdentity } from '../identity/identity.js';

/**
 * The PROXY protocol, version 2 (haproxy.org/download/2.9/doc/proxy-protocol.txt): a binary header sent to the
 * target before any payload, saying who the client was. We add the verified mTLS identity as TLVs.
 */
export const PP2_SIGNATURE = Buffer.from('0d0a0d0a000d0a515549540a', 'hex');

/** TLV types: the spec's, and ours in its custom range (0xE0-0xEF). */
export const PP2 = {
  ALPN: 0x01,
  AUTHORITY: 0x02,
  UNIQUE_ID: 0x05,
  SSL: 0x20,
  SUBTYPE_SSL_VERSION: 0x21,
  SUBTYPE_SSL_CN: 0x22,
  SUBTYPE_SSL_CIPHER: 0x23,
  SUBTYPE_SSL_SIG_ALG: 0x24,
  SUBTYPE_SSL_KEY_ALG: 0x25,
  /** mtlskit: the client's SPIFFE ID (UTF-8 URI). */
  MTLS_SPIFFE_ID: 0xe0,
  /** mtlskit: the client's subject DN (RFC 4514 string). */
  MTLS_SUBJECT: 0xe1,
  /** mtlskit: SHA-256 fingerprint of the client certificate (32 bytes). */
  MTLS_FINGERPRINT: 0xe2,
  /** mtlskit: the client's leaf certificate (DER). */
  MTLS_CERT: 0xe3,
} as const;

/** PP2_CLIENT_* flags of the SSL TLV. */
const PP2_CLIENT_SSL = 0x01;
const PP2_CLIENT_CERT_CONN = 0x02;
const PP2_CLIENT_CERT_SESS = 0x04;

export interface ProxyHeaderInput {
  source: { address: string; port: number };
  destination: { address: string; port: number };
  identity?: PeerIdentity;
  /** Whether the certificate came from this connection (false: from a resumed session). */
  certInConnection?: boolean;
  tlsVersion?: string;
  cipher?: string;
  alpn?: string;
  sni?: string;
  /** Include the DER leaf certificate (larger header). */
  includeCertificate?: boolean;
}

function tlv(type: number, value: Buffer): Buffer {
  if (value.length > 0xffff)
    throw new MtlsError('BAD_INPUT', `PROXY v2 TLV 0x${type.toString(16)} is too long (${value.length} bytes)`);
  const h = Buffer.alloc(3);
  h[0] = type;
  h.writeUInt16BE(value.length, 1);
  return Buffer.concat([h, value]);
}

/** Encodes a PROXY v2 header (command PROXY, TCP over IPv4 or IPv6) with the identity TLVs. */
export function encodeProxyV2(o: ProxyHeaderInput): Buffer {
  const v4 = net.isIPv4(o.source.address) && net.isIPv4(o.destination.address);
  const addr = (a: string) => (v4 ? Buffer.from(a.split('.').map(Number)) : ipv6Bytes(a));
  const ports = Buffer.alloc(4);
  ports.writeUInt16BE(o.source.port, 0);
  ports.writeUInt16BE(o.destination.port, 2);
  const addresses = Buffer.concat([addr(o.source.address), addr(o.destination.address), ports]);
  const tlvs: Buffer[] = [];
  if (o.alpn) tlvs.push(tlv(PP2.ALPN, Buffer.from(o.alpn, 'latin1')));
  if (o.sni) tlvs.push(tlv(PP2.AUTHORITY, Buffer.from(o.sni, 'latin1')));
  const id = o.identity;
  const sub: Buffer[] = [];
  if (o.tlsVersion) sub.push(tlv(PP2.SUBTYPE_SSL_VERSION, Buffer.from(o.tlsVersion, 'latin1')));
  const cn = id?.subject.find((a) => a.oid === '2.5.4.3')?.value;
  if (cn) sub.push(tlv(PP2.SUBTYPE_SSL_CN, Buffer.from(cn, 'utf8')));
  if (o.cipher) sub.push(tlv(PP2.SUBTYPE_SSL_CIPHER, Buffer.from(o.cipher, 'latin1')));
  const head = Buffer.alloc(5);
  head[0] = PP2_CLIENT_SSL | (id ? (o.certInConnection === false ? PP2_CLIENT_CERT_SESS : PP2_CLIENT_CERT_CONN) : 0);
  head.writeUInt32BE(id ? 0 : 1, 1); // verify: 0 = the client presented a certificate and it was verified
  tlvs.push(tlv(PP2.SSL, Buffer.concat([head, ...sub])));
  if (id?.spiffeId) tlvs.push(tlv(PP2.MTLS_SPIFFE_ID, Buffer.from(id.spiffeId.uri, 'utf8')));
  if (id) tlvs.push(tlv(PP2.MTLS_SUBJECT, Buffer.from(id.subjectDn, 'utf8')));
  if (id) tlvs.push(tlv(PP2.MTLS_FINGERPRINT, Buffer.from(id.fingerprint256.replace(/:/g, ''), 'hex')));
  if (id && o.includeCertificate) tlvs.push(tlv(PP2.MTLS_CERT, id.certificate.der));
  const body = Buffer.concat([addresses, ...tlvs]);
  const fixed = Buffer.alloc(4);
  fixed[0] = 0x21; // version 2, command PROXY
  fixed[1] = v4 ? 0x11 : 0x21; // TCP over IPv4 / IPv6
  fixed.writeUInt16BE(body.length, 2);
  return Buffer.concat([PP2_SIGNATURE, fixed, body]);
}

function ipv6Bytes(a: string): Buffer {
  const mapped = net.isIPv4(a) ? `::ffff:${a}` : a;
  const [head, tail] = mapped.includes('::') ? (mapped.split('::') as [string, string]) : [mapped, undefined];
  const parts = (s: string | undefined) => (s ? s.split(':') : []);
  let groups = parts(head);
  let rest = parts(tail);
  const last = (rest.length ? rest : groups).at(-1);
  if (last && net.isIPv4(last)) {
    const b = last.split('.').map(Number);
    const repl = [((b[0]! << 8) | b[1]!).toString(16), ((b[2]! << 8) | b[3]!).toString(16)];
    if (rest.length) rest = [...rest.slice(0, -1), ...repl];
    else groups = [...groups.slice(0, -1), ...repl];
  }
  const all = tail === undefined ? groups : [...groups, ...Array(8 - groups.length - rest.length).fill('0'), ...rest];
  const out = Buffer.alloc(16);
  all.forEach((g, i) => out.writeUInt16BE(parseInt(g || '0', 16), i * 2));
  return out;
}

export interface ProxyHeader {
  /** Bytes the header took (the payload starts there). */
  length: number;
  command: 'PROXY' | 'LOCAL';
  source?: { address: string; port: number };
  destination?: { address: string; port: number };
  /** TLVs by type; the SSL TLV's sub-TLVs are under `ssl`. */
  tlvs: Map<number, Buffer>;
  ssl?: { client: number; verify: number; sub: Map<number, Buffer> };
}

/**
 * Decodes a PROXY v2 header at the start of `buf`. Returns undefined when more bytes are needed; throws on
 * anything that is not a valid v2 header. For backends in Node (and our tests).
 */
export function decodeProxyV2(buf: Buffer): ProxyHeader | undefined {
  if (buf.length < 16) {
    if (!PP2_SIGNATURE.subarray(0, buf.length).equals(buf.subarray(0, PP2_SIGNATURE.length)))
      throw new MtlsError('BAD_INPUT', 'not a PROXY v2 header');
    return undefined;
  }
  if (!buf.subarray(0, 12).equals(PP2_SIGNATURE)) throw new MtlsError('BAD_INPUT', 'not a PROXY v2 header');
  if (buf[12]! >> 4 !== 2) throw new MtlsError('BAD_INPUT', `PROXY header version ${buf[12]! >> 4}, expected 2`);
  const cmd = buf[12]! & 0x0f;
  const len = buf.readUInt16BE(14);
  if (buf.length < 16 + len) return undefined;
  const body = buf.subarray(16, 16 + len);
  const fam = buf[13]!;
  const h: ProxyHeader = { length: 16 + len, command: cmd === 1 ? 'PROXY' : 'LOCAL', tlvs: new Map() };
  let off = 0;
  if (fam === 0x11) {
    if (body.length < 12) throw new MtlsError('BAD_INPUT', 'PROXY v2 IPv4 address block is truncated');
    h.source = { address: [...body.subarray(0, 4)].join('.'), port: body.readUInt16BE(8) };
    h.destination = { address: [...body.subarray(4, 8)].join('.'), port: body.readUInt16BE(10) };
    off = 12;
  } else if (fam === 0x21) {
    if (body.length < 36) throw new MtlsError('BAD_INPUT', 'PROXY v2 IPv6 address block is truncated');
    const six = (b: Buffer) => Array.from({ length: 8 }, (_, i) => b.readUInt16BE(i * 2).toString(16)).join(':');
    h.source = { address: six(body.subarray(0, 16)), port: body.readUInt16BE(32) };
    h.destination = { address: six(body.subarray(16, 32)), port: body.readUInt16BE(34) };
    off = 36;
  }
  const readTlvs = (b: Buffer, into: Map<number, Buffer>) => {
    let i = 0;
    while (i < b.length) {
      if (i + 3 > b.length) throw new MtlsError('BAD_INPUT', 'PROXY v2 TLV header is truncated');
      const l = b.readUInt16BE(i + 1);
      if (i + 3 + l > b.length) throw new MtlsError('BAD_INPUT', 'PROXY v2 TLV value is truncated');
      into.set(b[i]!, b.subarray(i + 3, i + 3 + l));
      i += 3 + l;
    }
  };
  readTlvs(body.subarray(off), h.tlvs);
  const ssl = h.tlvs.get(PP2.SSL);
  if (ssl && ssl.length >= 5) {
    h.ssl = { client: ssl[0]!, verify: ssl.readUInt32BE(1), sub: new Map() };
    readTlvs(ssl.subarray(5), h.ssl.sub);
  }
  return h;
}
