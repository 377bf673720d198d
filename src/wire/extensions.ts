import { MtlsError } from '../errors.js';
import { ExtensionType, extensionName } from './enums.js';
import { WireReader } from './reader.js';

/**
 * Typed decoders for the extensions a trace shows (RFC 8446 4.2, RFC 6066 3, RFC 7301 3.1), after Go's
 * handshake_messages.go: each reads its whole body and refuses trailing bytes or a list of the wrong length.
 */

/** One extension as it is on the wire. */
export interface Extension {
  type: number;
  data: Buffer;
}

/** RFC 8446 4.2: an extension block carries each type at most once. */
export function checkUniqueExtensions(list: Extension[], where: string): void {
  const seen = new Set<number>();
  for (const e of list) {
    if (seen.has(e.type))
      throw new MtlsError('BAD_INPUT', `${where}: duplicate ${extensionName(e.type)} extension (RFC 8446 4.2)`);
    seen.add(e.type);
  }
}

/** The one length-prefixed list an extension body is, with nothing after it. */
function onlyList(data: Buffer, what: string, lenBytes: 1 | 2, field: string): WireReader {
  const r = new WireReader(data, what);
  const list = r.sub(lenBytes, field);
  r.end();
  return list;
}

function u16List(data: Buffer, lenBytes: 1 | 2, what: string): number[] {
  const list = onlyList(data, what, lenBytes, 'list');
  if (list.remaining % 2 !== 0)
    throw new MtlsError('BAD_INPUT', `${what}: list of ${list.remaining} bytes is not a list of 16-bit values`);
  const out: number[] = [];
  while (list.remaining > 0) out.push(list.u16('value'));
  return out;
}

/** supported_versions in a ClientHello: a 1-byte-length list of versions. */
export const decodeSupportedVersions = (data: Buffer) => u16List(data, 1, 'supported_versions');
export const decodeSupportedGroups = (data: Buffer) => u16List(data, 2, 'supported_groups');
export const decodeSignatureAlgorithms = (data: Buffer) => u16List(data, 2, 'signature_algorithms');

/** key_share in a ClientHello: the groups of the offered shares (the keys themselves are skipped). */
export function decodeKeyShareGroups(data: Buffer): number[] {
  const shares = onlyList(data, 'key_share', 2, 'client_shares');
  const groups: number[] = [];
  while (shares.remaining > 0) {
    groups.push(shares.u16('group'));
    shares.vec(2, 'key_exchange');
  }
  return groups;
}

/** server_name: the host_name entry (RFC 6066 3 allows one name per type, and host_name is the only type). */
export function decodeServerName(data: Buffer): string | undefined {
  const list = onlyList(data, 'server_name', 2, 'server_name_list');
  let host: string | undefined;
  while (list.remaining > 0) {
    const type = list.u8('name_type');
    const name = list.vec(2, 'host_name');
    if (type !== 0) continue;
    if (host !== undefined) throw new MtlsError('BAD_INPUT', 'server_name: more than one host_name (RFC 6066 3)');
    host = name.toString('latin1');
  }
  return host;
}

/** application_layer_protocol_negotiation: the protocol names, none of them empty (RFC 7301 3.1). */
export function decodeAlpn(data: Buffer): string[] {
  const list = onlyList(data, 'alpn', 2, 'protocol_name_list');
  const out: string[] = [];
  while (list.remaining > 0) {
    const p = list.vec(1, 'protocol');
    if (p.length === 0) throw new MtlsError('BAD_INPUT', 'alpn: an empty protocol name (RFC 7301 3.1)');
    out.push(p.toString('latin1'));
  }
  return out;
}

/** What a ClientHello offers, decoded from its extensions. */
export interface ClientOffer {
  versions: number[];
  groups: number[];
  /** Groups with a key share; undefined when there is no key_share extension. */
  keyShareGroups?: number[];
  signatureAlgorithms: number[];
  serverName?: string;
  alpn: string[];
}

export function clientOffer(extensions: Extension[]): ClientOffer {
  const find = (t: number) => extensions.find((e) => e.type === t)?.data;
  const ks = find(ExtensionType.key_share);
  const sn = find(ExtensionType.server_name);
  const name = sn ? decodeServerName(sn) : undefined;
  const versions = find(ExtensionType.supported_versions);
  const groups = find(ExtensionType.supported_groups);
  const sigs = find(ExtensionType.signature_algorithms);
  const alpn = find(ExtensionType.alpn);
  return {
    versions: versions ? decodeSupportedVersions(versions) : [],
    groups: groups ? decodeSupportedGroups(groups) : [],
    ...(ks ? { keyShareGroups: decodeKeyShareGroups(ks) } : {}),
    signatureAlgorithms: sigs ? decodeSignatureAlgorithms(sigs) : [],
    ...(name !== undefined ? { serverName: name } : {}),
    alpn: alpn ? decodeAlpn(alpn) : [],
  };
}
