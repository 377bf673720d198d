import crypto from 'node:crypto';
import { MtlsError } from '../errors.js';
import type { TlsRecord } from '../wire/records.js';

export type HashName = 'sha256' | 'sha384';

export interface Tls13Suite {
  id: number;
  name: string;
  hash: HashName;
  keyLength: number;
  cipher: 'aes-128-gcm' | 'aes-256-gcm' | 'chacha20-poly1305';
}

/** RFC 8446 B.4. */
export const TLS13_SUITES: Record<number, Tls13Suite> = {
  0x1301: { id: 0x1301, name: 'TLS_AES_128_GCM_SHA256', hash: 'sha256', keyLength: 16, cipher: 'aes-128-gcm' },
  0x1302: { id: 0x1302, name: 'TLS_AES_256_GCM_SHA384', hash: 'sha384', keyLength: 32, cipher: 'aes-256-gcm' },
  0x1303: {
    id: 0x1303,
    name: 'TLS_CHACHA20_POLY1305_SHA256',
    hash: 'sha256',
    keyLength: 32,
    cipher: 'chacha20-poly1305',
  },
};

export function suiteOf(id: number): Tls13Suite {
  const s = TLS13_SUITES[id];
  if (!s)
    throw new MtlsError(
      'UNSUPPORTED',
      `cipher suite 0x${id.toString(16).padStart(4, '0')} is not a TLS 1.3 suite we decrypt`,
    );
  return s;
}

export const hashLength = (h: HashName) => (h === 'sha256' ? 32 : 48);
export const transcriptHash = (h: HashName, ...messages: Buffer[]) =>
  crypto.createHash(h).update(Buffer.concat(messages)).digest();

/** RFC 5869 2.2. */
export function hkdfExtract(h: HashName, salt: Buffer, ikm: Buffer): Buffer {
  return crypto
    .createHmac(h, salt.length ? salt : Buffer.alloc(hashLength(h)))
    .update(ikm)
    .digest();
}

/** RFC 5869 2.3. */
export function hkdfExpand(h: HashName, prk: Buffer, info: Buffer, length: number): Buffer {
  const out: Buffer[] = [];
  let t = Buffer.alloc(0);
  for (let i = 1; Buffer.concat(out).length < length; i++) {
    t = crypto
      .createHmac(h, prk)
      .update(Buffer.concat([t, info, Buffer.from([i])]))
      .digest();
    out.push(t);
  }
  return Buffer.concat(out).subarray(0, length);
}

/** RFC 8446 7.1: HKDF-Expand-Label(Secret, Label, Context, Length) with the "tls13 " prefix. */
export function hkdfExpandLabel(h: HashName, secret: Buffer, label: string, context: Buffer, length: number): Buffer {
  const full = Buffer.from('tls13 ' + label, 'latin1');
  const info = Buffer.concat([
    Buffer.from([length >> 8, length & 0xff, full.length]),
    full,
    Buffer.from([context.length]),
    context,
  ]);
  return hkdfExpand(h, secret, info, length);
}

/** RFC 8446 7.1: Derive-Secret(Secret, Label, Messages) = HKDF-Expand-Label(Secret, Label, Transcript-Hash(Messages), Hash.length). */
export function deriveSecret(h: HashName, secret: Buffer, label: string, transcript: Buffer): Buffer {
  return hkdfExpandLabel(h, secret, label, transcript, hashLength(h));
}

export interface HandshakeSecrets {
  handshakeSecret: Buffer;
  clientHandshakeTrafficSecret: Buffer;
  serverHandshakeTrafficSecret: Buffer;
  masterSecret: Buffer;
}

/** RFC 8446 7.1, up to the handshake traffic secrets, from the (EC)DHE shared secret (no PSK). */
export function handshakeSecrets(h: HashName, sharedSecret: Buffer, helloHash: Buffer): HandshakeSecrets {
  const zeros = Buffer.alloc(hashLength(h));
  const early = hkdfExtract(h, Buffer.alloc(0), zeros);
  const emptyHash = transcriptHash(h);
  const handshakeSecret = hkdfExtract(h, deriveSecret(h, early, 'derived', emptyHash), sharedSecret);
  return {
    handshakeSecret,
    clientHandshakeTrafficSecret: deriveSecret(h, handshakeSecret, 'c hs traffic', helloHash),
    serverHandshakeTrafficSecret: deriveSecret(h, handshakeSecret, 's hs traffic', helloHash),
    masterSecret: hkdfExtract(h, deriveSecret(h, handshakeSecret, 'derived', emptyHash), zeros),
  };
}

/** RFC 8446 7.1: application traffic secrets from the master secret and the hash up to the server Finished. */
export function applicationSecrets(h: HashName, masterSecret: Buffer, serverFinishedHash: Buffer) {
  return {
    clientApplicationTrafficSecret: deriveSecret(h, masterSecret, 'c ap traffic', serverFinishedHash),
    serverApplicationTrafficSecret: deriveSecret(h, masterSecret, 's ap traffic', serverFinishedHash),
    exporterMasterSecret: deriveSecret(h, masterSecret, 'exp master', serverFinishedHash),
  };
}

/**
 * RFC 8446 4.4.1: after a HelloRetryRequest, the first ClientHello enters the transcript as this synthetic
 * message_hash handshake message (type 254) carrying its hash.
 */
export function messageHash(h: HashName, clientHello1: Buffer): Buffer {
  const digest = transcriptHash(h, clientHello1);
  return Buffer.concat([Buffer.from([254, 0, 0, digest.length]), digest]);
}

export interface TrafficKeys {
  key: Buffer;
  iv: Buffer;
}

/** RFC 8446 7.3: [sender]_write_key and [sender]_write_iv from a traffic secret. */
export function trafficKeys(suite: Tls13Suite, secret: Buffer): TrafficKeys {
  return {
    key: hkdfExpandLabel(suite.hash, secret, 'key', Buffer.alloc(0), suite.keyLength),
    iv: hkdfExpandLabel(suite.hash, secret, 'iv', Buffer.alloc(0), 12),
  };
}

/** RFC 8446 4.4.4: verify_data = HMAC(finished_key, Transcript-Hash(...)). */
export function finishedVerifyData(h: HashName, trafficSecret: Buffer, transcript: Buffer): Buffer {
  const finishedKey = hkdfExpandLabel(h, trafficSecret, 'finished', Buffer.alloc(0), hashLength(h));
  return crypto.createHmac(h, finishedKey).update(transcript).digest();
}

/** RFC 8446 5.3: the per-record nonce is the IV XORed with the 64-bit sequence number, left-padded. */
export function recordNonce(iv: Buffer, seq: bigint): Buffer {
  const nonce = Buffer.from(iv);
  for (let i = 0; i < 8; i++) nonce[nonce.length - 1 - i]! ^= Number((seq >> BigInt(8 * i)) & 0xffn);
  return nonce;
}

export interface DecryptedRecord {
  /** The real content type from TLSInnerPlaintext. */
  type: number;
  content: Buffer;
  nonce: Buffer;
}

/** RFC 8446 5.2: AEAD-decrypts a TLSCiphertext and strips the zero padding. */
export function decryptRecord(suite: Tls13Suite, keys: TrafficKeys, seq: bigint, record: TlsRecord): DecryptedRecord {
  if (record.fragment.length < 17)
    throw new MtlsError(
      'BAD_INPUT',
      `encrypted record of ${record.fragment.length} bytes is too short for an AEAD tag`,
    );
  const nonce = recordNonce(keys.iv, seq);
  const ciphertext = record.fragment.subarray(0, record.fragment.length - 16);
  const tag = record.fragment.subarray(record.fragment.length - 16);
  const d = crypto.createDecipheriv(suite.cipher, keys.key, nonce, {
    authTagLength: 16,
  } as crypto.CipherGCMOptions) as crypto.DecipherGCM;
  d.setAAD(record.header, { plaintextLength: ciphertext.length });
  d.setAuthTag(tag);
  let plain: Buffer;
  try {
    plain = Buffer.concat([d.update(ciphertext), d.final()]);
  } catch {
    throw new MtlsError('BAD_INPUT', `record ${seq} does not decrypt (wrong key, or the record was altered)`);
  }
  let end = plain.length;
  while (end > 0 && plain[end - 1] === 0) end--;
  if (end === 0) throw new MtlsError('BAD_INPUT', `record ${seq} has no content type (all padding)`);
  return { type: plain[end - 1]!, content: plain.subarray(0, end - 1), nonce };
}

/** NSS key log lines (what Node's 'keylog' event and `openssl -keylogfile` write), by label then client random. */
export type KeyLog = Map<string, Map<string, Buffer>>;

export function parseKeyLog(text: string, into: KeyLog = new Map()): KeyLog {
  for (const line of text.split('\n')) {
    const m = /^([A-Z_0-9]+) ([0-9a-fA-F]{64}) ([0-9a-fA-F]+)\s*$/.exec(line.trim());
    if (!m) continue;
    if (!into.has(m[1]!)) into.set(m[1]!, new Map());
    into.get(m[1]!)!.set(m[2]!.toLowerCase(), Buffer.from(m[3]!, 'hex'));
  }
  return into;
}
