import { MtlsError } from '../errors.js';
import { ExtensionType } from './enums.js';
import { checkUniqueExtensions, type Extension } from './extensions.js';
import { WireReader } from './reader.js';

/** One handshake message: its type, body, and the raw bytes with the 4-byte header (what the transcript hashes). */
export interface HandshakeMessage {
  type: number;
  body: Buffer;
  raw: Buffer;
}

/** Most handshake bytes we buffer for one message (certificate chains are the largest). */
export const MAX_HANDSHAKE_MESSAGE = 256 * 1024;

/** Reassembles handshake messages that may span records, or share one (RFC 8446 5.1). */
export class HandshakeAssembler {
  private pending: Buffer = Buffer.alloc(0);

  push(bytes: Buffer): HandshakeMessage[] {
    this.pending = this.pending.length ? Buffer.concat([this.pending, bytes]) : Buffer.from(bytes);
    const out: HandshakeMessage[] = [];
    while (this.pending.length >= 4) {
      const len = this.pending.readUIntBE(1, 3);
      if (len > MAX_HANDSHAKE_MESSAGE)
        throw new MtlsError(
          'BAD_INPUT',
          `handshake message of ${len} bytes is over the ${MAX_HANDSHAKE_MESSAGE}-byte limit`,
        );
      if (this.pending.length < 4 + len) break;
      const raw = this.pending.subarray(0, 4 + len);
      out.push({ type: raw[0]!, body: raw.subarray(4), raw });
      this.pending = this.pending.subarray(4 + len);
    }
    return out;
  }
}

export type { Extension };

function extensions(r: WireReader, field = 'extensions'): Extension[] {
  const list = r.sub(2, field);
  const out: Extension[] = [];
  while (list.remaining > 0) out.push({ type: list.u16('extension type'), data: list.vec(2, 'extension data') });
  checkUniqueExtensions(out, r.where);
  return out;
}

export interface ClientHello {
  random: Buffer;
  sessionId: Buffer;
  cipherSuites: number[];
  extensions: Extension[];
}

export function decodeClientHello(body: Buffer): ClientHello {
  const r = new WireReader(body, 'ClientHello');
  r.u16('legacy_version');
  const random = r.bytes(32, 'random');
  const sessionId = r.vec(1, 'legacy_session_id');
  const suites = r.sub(2, 'cipher_suites');
  const cipherSuites: number[] = [];
  while (suites.remaining > 0) cipherSuites.push(suites.u16('cipher suite'));
  r.vec(1, 'legacy_compression_methods');
  const ext = r.remaining > 0 ? extensions(r) : [];
  r.end();
  return { random, sessionId, cipherSuites, extensions: ext };
}

export interface ServerHello {
  version: number;
  random: Buffer;
  sessionId: Buffer;
  cipherSuite: number;
  extensions: Extension[];
  /** RFC 8446 4.1.3: a HelloRetryRequest is a ServerHello with this special random. */
  isHelloRetryRequest: boolean;
}

const HRR_RANDOM = Buffer.from('cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c', 'hex');

export function decodeServerHello(body: Buffer): ServerHello {
  const r = new WireReader(body, 'ServerHello');
  const legacy = r.u16('legacy_version');
  const random = r.bytes(32, 'random');
  const sessionId = r.vec(1, 'legacy_session_id_echo');
  const cipherSuite = r.u16('cipher_suite');
  r.u8('legacy_compression_method');
  const ext = r.remaining > 0 ? extensions(r) : [];
  r.end();
  const sv = ext.find((e) => e.type === ExtensionType.supported_versions);
  return {
    version: sv && sv.data.length === 2 ? sv.data.readUInt16BE(0) : legacy,
    random,
    sessionId,
    cipherSuite,
    extensions: ext,
    isHelloRetryRequest: random.equals(HRR_RANDOM),
  };
}

/** The server's key_share entry (group, key_exchange) from a ServerHello. */
export function serverKeyShare(sh: ServerHello): { group: number; key: Buffer } | undefined {
  const ks = sh.extensions.find((e) => e.type === ExtensionType.key_share);
  if (!ks) return undefined;
  const r = new WireReader(ks.data, 'key_share');
  const group = r.u16('group');
  const key = sh.isHelloRetryRequest ? Buffer.alloc(0) : r.vec(2, 'key_exchange');
  return { group, key };
}

export function decodeEncryptedExtensions(body: Buffer): Extension[] {
  const r = new WireReader(body, 'EncryptedExtensions');
  const ext = extensions(r);
  r.end();
  return ext;
}

export interface CertificateRequest {
  /** TLS 1.3 certificate_request_context. */
  context?: Buffer;
  /** TLS 1.2 certificate_types. */
  certificateTypes?: number[];
  signatureAlgorithms: number[];
  /** The acceptable CA names: DER-encoded DistinguishedNames. */
  certificateAuthorities: Buffer[];
  extensions: Extension[];
}

function u16List(data: Buffer, field: string): number[] {
  const r = new WireReader(data, field);
  const list = r.sub(2, field);
  const out: number[] = [];
  while (list.remaining > 0) out.push(list.u16(field));
  r.end();
  return out;
}

function distinguishedNames(r: WireReader, field: string): Buffer[] {
  const list = r.sub(2, field);
  const out: Buffer[] = [];
  while (list.remaining > 0) out.push(list.vec(2, 'DistinguishedName'));
  return out;
}

/** RFC 8446 4.3.2 (TLS 1.3) or RFC 5246 7.4.4 (TLS 1.2). */
export function decodeCertificateRequest(body: Buffer, tls13: boolean): CertificateRequest {
  const r = new WireReader(body, 'CertificateRequest');
  if (tls13) {
    const context = r.vec(1, 'certificate_request_context');
    const ext = extensions(r);
    r.end();
    const sa = ext.find((e) => e.type === ExtensionType.signature_algorithms);
    const ca = ext.find((e) => e.type === ExtensionType.certificate_authorities);
    const certificateAuthorities = ca
      ? (() => {
          const cr = new WireReader(ca.data, 'certificate_authorities');
          const v = distinguishedNames(cr, 'authorities');
          cr.end();
          return v;
        })()
      : [];
    return {
      context,
      signatureAlgorithms: sa ? u16List(sa.data, 'signature_algorithms') : [],
      certificateAuthorities,
      extensions: ext,
    };
  }
  const certificateTypes = [...r.vec(1, 'certificate_types')];
  const algs = r.sub(2, 'supported_signature_algorithms');
  const signatureAlgorithms: number[] = [];
  while (algs.remaining > 0) signatureAlgorithms.push(algs.u16('signature algorithm'));
  const certificateAuthorities = distinguishedNames(r, 'certificate_authorities');
  r.end();
  return { certificateTypes, signatureAlgorithms, certificateAuthorities, extensions: [] };
}

export interface CertificateMessage {
  context?: Buffer;
  /** DER certificates, leaf first. */
  certificates: Buffer[];
}

export function decodeCertificate(body: Buffer, tls13: boolean): CertificateMessage {
  const r = new WireReader(body, 'Certificate');
  const context = tls13 ? r.vec(1, 'certificate_request_context') : undefined;
  const list = r.sub(3, 'certificate_list');
  const certificates: Buffer[] = [];
  while (list.remaining > 0) {
    certificates.push(list.vec(3, 'cert_data'));
    if (tls13) list.vec(2, 'certificate extensions');
  }
  r.end();
  return context ? { context, certificates } : { certificates };
}

export function decodeCertificateVerify(body: Buffer): { scheme: number; signature: Buffer } {
  const r = new WireReader(body, 'CertificateVerify');
  const scheme = r.u16('algorithm');
  const signature = r.vec(2, 'signature');
  r.end();
  return { scheme, signature };
}
