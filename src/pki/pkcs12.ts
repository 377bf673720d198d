import crypto, { type KeyObject } from 'node:crypto';
import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import { ContentInfo, EncryptedContentInfo } from '@peculiar/asn1-cms';
import * as pfx from '@peculiar/asn1-pfx';
import { DigestInfo } from '@peculiar/asn1-rsa';
import * as asn from '@peculiar/asn1-x509';
import { MtlsError } from '../errors.js';
import { decodeOid, readChildren, readSingle, type Tlv } from './der.js';

const ID_DATA = '1.2.840.113549.1.7.1';
const ID_ENCRYPTED_DATA = '1.2.840.113549.1.7.6';
const ID_FRIENDLY_NAME = '1.2.840.113549.1.9.20';
const ID_LOCAL_KEY_ID = '1.2.840.113549.1.9.21';
const ID_PBES2 = '1.2.840.113549.1.5.13';
const ID_PBKDF2 = '1.2.840.113549.1.5.12';
const MAC_DIGESTS: Record<string, { name: string; v: number }> = {
  '1.3.14.3.2.26': { name: 'sha1', v: 64 },
  '2.16.840.1.101.3.4.2.1': { name: 'sha256', v: 64 },
  '2.16.840.1.101.3.4.2.2': { name: 'sha384', v: 128 },
  '2.16.840.1.101.3.4.2.3': { name: 'sha512', v: 128 },
};
const PRFS: Record<string, string> = {
  '1.2.840.113549.2.7': 'sha1',
  '1.2.840.113549.2.9': 'sha256',
  '1.2.840.113549.2.10': 'sha384',
  '1.2.840.113549.2.11': 'sha512',
};
const CIPHERS: Record<string, { name: string; key: number }> = {
  '2.16.840.1.101.3.4.1.2': { name: 'aes-128-cbc', key: 16 },
  '2.16.840.1.101.3.4.1.22': { name: 'aes-192-cbc', key: 24 },
  '2.16.840.1.101.3.4.1.42': { name: 'aes-256-cbc', key: 32 },
  '1.2.840.113549.3.7': { name: 'des-ede3-cbc', key: 24 },
};
const MAC_ITERATIONS = 2048;

/** PKCS#12 passwords are BMPString with a terminating NUL (RFC 7292 appendix B.1). */
function bmpPassword(password: string): Buffer {
  const b = Buffer.alloc(password.length * 2 + 2);
  for (let i = 0; i < password.length; i++) b.writeUInt16BE(password.charCodeAt(i), i * 2);
  return b;
}

/** RFC 7292 appendix B.2: the PKCS#12 key derivation (for the MAC key and legacy PBE). */
export function pkcs12Kdf(
  password: string,
  salt: Buffer,
  id: 1 | 2 | 3,
  iterations: number,
  n: number,
  hash: string,
  v: number,
): Buffer {
  const pw = bmpPassword(password);
  const fill = (src: Buffer) => {
    if (src.length === 0) return Buffer.alloc(0);
    const len = v * Math.ceil(src.length / v);
    const out = Buffer.alloc(len);
    for (let i = 0; i < len; i++) out[i] = src[i % src.length]!;
    return out;
  };
  const D = Buffer.alloc(v, id);
  const I = Buffer.concat([fill(salt), fill(pw)]);
  const out: Buffer[] = [];
  let produced = 0;
  while (produced < n) {
    let A = crypto.createHash(hash).update(D).update(I).digest();
    for (let r = 1; r < iterations; r++) A = crypto.createHash(hash).update(A).digest();
    out.push(A);
    produced += A.length;
    const B = fill(A);
    for (let j = 0; j < I.length; j += v) {
      let carry = 1;
      for (let k = v - 1; k >= 0; k--) {
        const sum = I[j + k]! + B[k]! + carry;
        I[j + k] = sum & 0xff;
        carry = sum >> 8;
      }
    }
  }
  return Buffer.concat(out).subarray(0, n);
}

function octets(data: Buffer): ArrayBuffer {
  return AsnConvert.serialize(new OctetString(data));
}

function attr(id: string, valueDer: ArrayBuffer): pfx.PKCS12Attribute {
  // The schema class's constructor drops its params (asn1-pfx 2.x), so set the fields directly.
  const a = new pfx.PKCS12Attribute();
  a.attrId = id;
  a.attrValues = [valueDer];
  return a;
}

/** BMPString DER for a friendlyName attribute. */
function bmpString(s: string): ArrayBuffer {
  const body = Buffer.alloc(s.length * 2);
  for (let i = 0; i < s.length; i++) body.writeUInt16BE(s.charCodeAt(i), i * 2);
  if (body.length > 127) throw new MtlsError('BAD_INPUT', 'PKCS#12 friendly name is too long');
  return new Uint8Array(Buffer.concat([Buffer.from([0x1e, body.length]), body])).buffer;
}

export interface Pkcs12Options {
  friendlyName?: string;
  /** Default 2048 (OpenSSL 3's default); applies to the key encryption and the MAC. */
  iterations?: number;
}

/**
 * Builds a PKCS#12 file as OpenSSL 3 does by default: the key in a PKCS#8 shrouded bag (PBES2, PBKDF2-HMAC-
 * SHA256, AES-256-CBC), the certificates (leaf first) in a plain bag, and an HMAC-SHA256 integrity MAC. The
 * certificates are not encrypted (they are public), like `openssl pkcs12 -export -certpbe NONE`.
 */
export function buildPkcs12(key: KeyObject, chain: Buffer[], password: string, opts: Pkcs12Options = {}): Buffer {
  if (chain.length === 0) throw new MtlsError('BAD_INPUT', 'a PKCS#12 file needs at least the certificate');
  const localKeyId = crypto.createHash('sha1').update(chain[0]!).digest();
  const keyAttrs = [attr(ID_LOCAL_KEY_ID, octets(localKeyId))];
  if (opts.friendlyName) keyAttrs.push(attr(ID_FRIENDLY_NAME, bmpString(opts.friendlyName)));
  const shrouded = key.export({ type: 'pkcs8', format: 'der', cipher: 'aes-256-cbc', passphrase: password });
  const keyBag = new pfx.SafeBag({
    bagId: pfx.id_pkcs8ShroudedKeyBag,
    bagValue: new Uint8Array(shrouded).buffer,
    bagAttributes: keyAttrs,
  });
  const certBags = chain.map(
    (der, i) =>
      new pfx.SafeBag({
        bagId: pfx.id_certBag,
        bagValue: AsnConvert.serialize(new pfx.CertBag({ certId: pfx.id_x509Certificate, certValue: octets(der) })),
        ...(i === 0 ? { bagAttributes: [...keyAttrs] } : {}),
      }),
  );
  const dataInfo = (bags: pfx.SafeBag[]) =>
    new ContentInfo({
      contentType: ID_DATA,
      content: octets(Buffer.from(AsnConvert.serialize(new pfx.SafeContents(bags)))),
    });
  const authSafeDer = Buffer.from(
    AsnConvert.serialize(new pfx.AuthenticatedSafe([dataInfo(certBags), dataInfo([keyBag])])),
  );
  const iterations = opts.iterations ?? MAC_ITERATIONS;
  const salt = crypto.randomBytes(16);
  const macKey = pkcs12Kdf(password, salt, 3, iterations, 32, 'sha256', 64);
  const mac = crypto.createHmac('sha256', macKey).update(authSafeDer).digest();
  const pfxValue = new pfx.PFX({
    version: 3,
    authSafe: new ContentInfo({ contentType: ID_DATA, content: octets(authSafeDer) }),
    macData: new pfx.MacData({
      mac: new DigestInfo({
        digestAlgorithm: new asn.AlgorithmIdentifier({ algorithm: '2.16.840.1.101.3.4.2.1', parameters: null }),
        digest: new OctetString(mac),
      }),
      macSalt: new OctetString(salt),
      iterations,
    }),
  });
  return Buffer.from(AsnConvert.serialize(pfxValue));
}

export interface Pkcs12Contents {
  certificates: Buffer[];
  keys: KeyObject[];
  macAlgorithm: string;
}

function unwrapOctets(content: ArrayBuffer, what: string): Buffer {
  const t = readSingle(Buffer.from(content), what);
  if (t.tag !== 0x04) throw new MtlsError('BAD_PKCS12', `${what} is not an OCTET STRING`);
  return t.value;
}

/** Is this DER a PKCS#12 PFX (SEQUENCE { INTEGER 3, SEQUENCE { OID pkcs7-data ...` )? */
export function looksLikePkcs12(der: Buffer): boolean {
  try {
    const outer = readSingle(der, 'pfx');
    const [version, authSafe] = readChildren(outer.value, 'pfx');
    return version?.tag === 0x02 && version.value.length === 1 && version.value[0] === 3 && authSafe?.tag === 0x30;
  } catch {
    return false;
  }
}

/** Opens a PKCS#12 file: checks the MAC with the password, then decrypts the bags (PBES2, or legacy 3DES). */
export function parsePkcs12(der: Buffer, password: string, what = 'PKCS#12 file'): Pkcs12Contents {
  let p: pfx.PFX;
  try {
    p = AsnConvert.parse(der, pfx.PFX);
  } catch (err) {
    throw new MtlsError('BAD_PKCS12', `${what} is not a valid PKCS#12 file (${(err as Error).message.split('\n')[0]})`);
  }
  if (p.authSafe.contentType !== ID_DATA)
    throw new MtlsError(
      'UNSUPPORTED',
      `${what} uses public-key integrity mode, which is not supported; re-export it with a password`,
    );
  const authSafeDer = unwrapOctets(p.authSafe.content, `${what} authSafe`);
  if (!p.macData)
    throw new MtlsError('BAD_PKCS12', `${what} has no integrity MAC; re-export it with 'openssl pkcs12 -export'`);
  const digest = MAC_DIGESTS[p.macData.mac.digestAlgorithm.algorithm];
  if (!digest)
    throw new MtlsError(
      'UNSUPPORTED',
      `${what} uses an unsupported MAC digest ${p.macData.mac.digestAlgorithm.algorithm}`,
    );
  const hashLen = crypto.createHash(digest.name).digest().length;
  const macKey = pkcs12Kdf(
    password,
    Buffer.from(p.macData.macSalt.buffer),
    3,
    p.macData.iterations,
    hashLen,
    digest.name,
    digest.v,
  );
  const mac = crypto.createHmac(digest.name, macKey).update(authSafeDer).digest();
  const expected = Buffer.from(p.macData.mac.digest.buffer);
  if (mac.length !== expected.length || !crypto.timingSafeEqual(mac, expected)) {
    throw new MtlsError('WRONG_PASSPHRASE', `${what}: wrong password (the integrity check failed)`);
  }
  const out: Pkcs12Contents = { certificates: [], keys: [], macAlgorithm: `HMAC-${digest.name.toUpperCase()}` };
  for (const ci of AsnConvert.parse(authSafeDer, pfx.AuthenticatedSafe)) {
    let safeContents: Buffer;
    if (ci.contentType === ID_DATA) safeContents = unwrapOctets(ci.content, `${what} SafeContents`);
    else if (ci.contentType === ID_ENCRYPTED_DATA)
      safeContents = decryptEncryptedData(Buffer.from(ci.content), password, what);
    else throw new MtlsError('UNSUPPORTED', `${what} holds content of type ${ci.contentType}, which is not supported`);
    for (const bag of AsnConvert.parse(safeContents, pfx.SafeContents)) readBag(bag, password, out, what);
  }
  return out;
}

function readBag(bag: pfx.SafeBag, password: string, out: Pkcs12Contents, what: string): void {
  const value = Buffer.from(bag.bagValue);
  if (bag.bagId === pfx.id_certBag) {
    const cb = AsnConvert.parse(value, pfx.CertBag);
    if (cb.certId === pfx.id_x509Certificate)
      out.certificates.push(unwrapOctets(cb.certValue, `${what} certificate bag`));
  } else if (bag.bagId === pfx.id_pkcs8ShroudedKeyBag) {
    try {
      out.keys.push(crypto.createPrivateKey({ key: value, format: 'der', type: 'pkcs8', passphrase: password }));
    } catch {
      throw new MtlsError(
        'UNSUPPORTED',
        `${what}: the private key is encrypted with an algorithm OpenSSL 3 does not ` +
          `load by default (RC2?); re-export it with 'openssl pkcs12 -export'`,
      );
    }
  } else if (bag.bagId === pfx.id_keyBag) {
    out.keys.push(crypto.createPrivateKey({ key: value, format: 'der', type: 'pkcs8' }));
  }
}

/** EncryptedData ::= SEQUENCE { version, EncryptedContentInfo } with PBES2 or pbeWithSHAAnd3-KeyTripleDES-CBC. */
function decryptEncryptedData(der: Buffer, password: string, what: string): Buffer {
  const seq = readSingle(der, 'EncryptedData');
  const [, eciTlv] = readChildren(seq.value, 'EncryptedData');
  if (!eciTlv) throw new MtlsError('BAD_PKCS12', `${what}: EncryptedData has no content`);
  const eci = AsnConvert.parse(
    der.subarray(seq.valueStart + eciTlv.start, seq.valueStart + eciTlv.end),
    EncryptedContentInfo,
  );
  const ciphertext = eci.encryptedContent?.value
    ? Buffer.from(eci.encryptedContent.value.buffer)
    : Buffer.concat((eci.encryptedContent?.constructedValue ?? []).map((o) => Buffer.from(o.buffer)));
  const alg = eci.contentEncryptionAlgorithm;
  const params = alg.parameters ? Buffer.from(alg.parameters) : Buffer.alloc(0);
  try {
    if (alg.algorithm === ID_PBES2) return decryptPbes2(params, password, ciphertext);
    if (alg.algorithm === pfx.id_pbeWithSHAAnd3_KeyTripleDES_CBC) {
      const [salt, iter] = readChildren(readSingle(params, 'pbeParams').value, 'pbeParams') as [Tlv, Tlv];
      const iterations = iter.value.readUIntBE(0, iter.value.length);
      const key = pkcs12Kdf(password, salt.value, 1, iterations, 24, 'sha1', 64);
      const iv = pkcs12Kdf(password, salt.value, 2, iterations, 8, 'sha1', 64);
      const d = crypto.createDecipheriv('des-ede3-cbc', key, iv);
      return Buffer.concat([d.update(ciphertext), d.final()]);
    }
  } catch (err) {
    if (err instanceof MtlsError) throw err;
    throw new MtlsError(
      'BAD_PKCS12',
      `${what}: the certificates could not be decrypted (${(err as Error).message.split('\n')[0]})`,
    );
  }
  throw new MtlsError(
    'UNSUPPORTED',
    `${what}: certificates are encrypted with ${alg.algorithm} (legacy RC2/RC4?); ` +
      `re-export with 'openssl pkcs12 -export' (OpenSSL 3 uses AES)`,
  );
}

function decryptPbes2(params: Buffer, password: string, ciphertext: Buffer): Buffer {
  const [kdf, enc] = readChildren(readSingle(params, 'PBES2-params').value, 'PBES2-params') as [Tlv, Tlv];
  const [kdfOid, kdfParams] = readChildren(kdf.value, 'keyDerivationFunc') as [Tlv, Tlv];
  if (decodeOid(kdfOid.value) !== ID_PBKDF2) throw new Error('only PBKDF2 is supported');
  const [salt, iter, ...rest] = readChildren(kdfParams.value, 'PBKDF2-params') as Tlv[];
  let prf = 'sha1';
  for (const r of rest) if (r.tag === 0x30) prf = PRFS[decodeOid(readChildren(r.value, 'prf')[0]!.value)] ?? 'unknown';
  const [encOid, iv] = readChildren(enc.value, 'encryptionScheme') as [Tlv, Tlv];
  const cipher = CIPHERS[decodeOid(encOid.value)];
  if (!cipher || prf === 'unknown') throw new Error('unsupported PBES2 cipher or PRF');
  const key = crypto.pbkdf2Sync(
    Buffer.from(password, 'utf8'),
    salt!.value,
    iter!.value.readUIntBE(0, iter!.value.length),
    cipher.key,
    prf,
  );
  const d = crypto.createDecipheriv(cipher.name, key, iv.value);
  return Buffer.concat([d.update(ciphertext), d.final()]);
}
