import crypto from 'node:crypto';
import { MtlsError } from '../errors.js';
import type { TlsRecord } from '../wire/records.js';

/** The TLS 1.2 AEAD suites we decrypt (RFC 5288 GCM, RFC 7905 ChaCha20-Poly1305), with their PRF hash. */
export interface Tls12Suite {
  id: number;
  cipher: 'aes-128-gcm' | 'aes-256-gcm' | 'chacha20-poly1305';
  hash: 'sha256' | 'sha384';
  keyLength: number;
  /** GCM: 4-byte implicit salt + 8-byte explicit nonce per record; ChaCha: 12-byte IV XOR sequence number. */
  fixedIvLength: 4 | 12;
}

export const TLS12_SUITES: Record<number, Tls12Suite> = {
  0xc02b: { id: 0xc02b, cipher: 'aes-128-gcm', hash: 'sha256', keyLength: 16, fixedIvLength: 4 },
  0xc02f: { id: 0xc02f, cipher: 'aes-128-gcm', hash: 'sha256', keyLength: 16, fixedIvLength: 4 },
  0xc02c: { id: 0xc02c, cipher: 'aes-256-gcm', hash: 'sha384', keyLength: 32, fixedIvLength: 4 },
  0xc030: { id: 0xc030, cipher: 'aes-256-gcm', hash: 'sha384', keyLength: 32, fixedIvLength: 4 },
  0xcca9: { id: 0xcca9, cipher: 'chacha20-poly1305', hash: 'sha256', keyLength: 32, fixedIvLength: 12 },
  0xcca8: { id: 0xcca8, cipher: 'chacha20-poly1305', hash: 'sha256', keyLength: 32, fixedIvLength: 12 },
};

/** RFC 5246 5: PRF(secret, label, seed) = P_hash(secret, label + seed). */
export function prf12(hash: 'sha256' | 'sha384', secret: Buffer, label: string, seed: Buffer, length: number): Buffer {
  const labelSeed = Buffer.concat([Buffer.from(label, 'latin1'), seed]);
  const out: Buffer[] = [];
  let a = labelSeed;
  let produced = 0;
  while (produced < length) {
    a = crypto.createHmac(hash, secret).update(a).digest();
    const block = crypto
      .createHmac(hash, secret)
      .update(Buffer.concat([a, labelSeed]))
      .digest();
    out.push(block);
    produced += block.length;
  }
  return Buffer.concat(out).subarray(0, length);
}

export interface Tls12Keys {
  clientWriteKey: Buffer;
  serverWriteKey: Buffer;
  clientWriteIv: Buffer;
  serverWriteIv: Buffer;
}

/** RFC 5246 6.3: key_block = PRF(master_secret, "key expansion", server_random + client_random), split in order (no MAC keys for AEAD). */
export function keyBlock(
  suite: Tls12Suite,
  masterSecret: Buffer,
  clientRandom: Buffer,
  serverRandom: Buffer,
): Tls12Keys {
  const k = suite.keyLength;
  const iv = suite.fixedIvLength;
  const block = prf12(
    suite.hash,
    masterSecret,
    'key expansion',
    Buffer.concat([serverRandom, clientRandom]),
    2 * k + 2 * iv,
  );
  return {
    clientWriteKey: block.subarray(0, k),
    serverWriteKey: block.subarray(k, 2 * k),
    clientWriteIv: block.subarray(2 * k, 2 * k + iv),
    serverWriteIv: block.subarray(2 * k + iv, 2 * k + 2 * iv),
  };
}

/** RFC 5246 7.4.9: verify_data = PRF(master_secret, finished_label, Hash(handshake_messages))[0..11]. */
export function finished12(suite: Tls12Suite, masterSecret: Buffer, fromClient: boolean, transcript: Buffer[]): Buffer {
  const hash = crypto.createHash(suite.hash).update(Buffer.concat(transcript)).digest();
  return prf12(suite.hash, masterSecret, fromClient ? 'client finished' : 'server finished', hash, 12);
}

/** RFC 5288 3 / RFC 7905 2: decrypts one TLS 1.2 AEAD record; AAD = seq_num + type + version + plaintext length. */
export function decryptRecord12(
  suite: Tls12Suite,
  key: Buffer,
  fixedIv: Buffer,
  seq: bigint,
  record: TlsRecord,
): Buffer {
  let nonce: Buffer;
  let body = record.fragment;
  if (suite.fixedIvLength === 4) {
    if (body.length < 8 + 16) throw new MtlsError('BAD_INPUT', `TLS 1.2 record ${seq} is too short`);
    nonce = Buffer.concat([fixedIv, body.subarray(0, 8)]);
    body = body.subarray(8);
  } else {
    nonce = Buffer.from(fixedIv);
    for (let i = 0; i < 8; i++) nonce[11 - i]! ^= Number((seq >> BigInt(8 * i)) & 0xffn);
  }
  const ciphertext = body.subarray(0, body.length - 16);
  const aad = Buffer.alloc(13);
  aad.writeBigUInt64BE(seq, 0);
  aad[8] = record.type;
  aad.writeUInt16BE(record.version, 9);
  aad.writeUInt16BE(ciphertext.length, 11);
  const d = crypto.createDecipheriv(suite.cipher, key, nonce, {
    authTagLength: 16,
  } as crypto.CipherGCMOptions) as crypto.DecipherGCM;
  d.setAAD(aad, { plaintextLength: ciphertext.length });
  d.setAuthTag(body.subarray(body.length - 16));
  try {
    return Buffer.concat([d.update(ciphertext), d.final()]);
  } catch {
    throw new MtlsError('BAD_INPUT', `TLS 1.2 record ${seq} does not decrypt (wrong key, or the record was altered)`);
  }
}
