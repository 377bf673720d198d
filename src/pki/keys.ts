import crypto, { type KeyObject } from 'node:crypto';
import { MtlsError } from '../errors.js';
import { decodeOid, readChildren, readSingle } from './der.js';
import { chunksOf, sliceParts, type Part } from './octets.js';
import { OID } from './oid.js';
import { decodePem, encodePem, looksLikePem } from './pem.js';

export const KEY_TYPES = ['ec-p256', 'ec-p384', 'ed25519', 'rsa-2048', 'rsa-3072', 'rsa-4096'] as const;
export type KeyType = (typeof KEY_TYPES)[number];
/** The default for every key we generate: ECDSA P-256 (fast, universally supported). */
export const DEFAULT_KEY_TYPE: KeyType = 'ec-p256';

export function parseKeyType(text: string): KeyType {
  if ((KEY_TYPES as readonly string[]).includes(text)) return text as KeyType;
  throw new MtlsError('BAD_INPUT', `unknown key type '${text}'; use one of ${KEY_TYPES.join(', ')}`);
}

export function generateKeyPair(type: KeyType = DEFAULT_KEY_TYPE): { privateKey: KeyObject; publicKey: KeyObject } {
  switch (type) {
    case 'ec-p256':
      return crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
    case 'ec-p384':
      return crypto.generateKeyPairSync('ec', { namedCurve: 'P-384' });
    case 'ed25519':
      return crypto.generateKeyPairSync('ed25519');
    case 'rsa-2048':
      return crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
    case 'rsa-3072':
      return crypto.generateKeyPairSync('rsa', { modulusLength: 3072 });
    case 'rsa-4096':
      return crypto.generateKeyPairSync('rsa', { modulusLength: 4096 });
  }
}

/** What a signature by this key looks like in a certificate: the AlgorithmIdentifier and the digest. */
export interface SignatureScheme {
  oid: string;
  /** `null` parameters are encoded as ASN.1 NULL (RSA PKCS#1 v1.5); `undefined` as absent (ECDSA, EdDSA). */
  params: null | undefined;
  hash: 'sha256' | 'sha384' | 'sha512' | null;
}

/** RFC 5758 / RFC 8410 / RFC 4055: the signature scheme we use for each issuer key. SHA-256 or stronger only. */
export function signatureSchemeFor(key: KeyObject): SignatureScheme {
  const t = key.asymmetricKeyType;
  if (t === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === 'prime256v1') return { oid: OID.ecdsaWithSha256, params: undefined, hash: 'sha256' };
    if (curve === 'secp384r1') return { oid: OID.ecdsaWithSha384, params: undefined, hash: 'sha384' };
    if (curve === 'secp521r1') return { oid: OID.ecdsaWithSha512, params: undefined, hash: 'sha512' };
    throw new MtlsError('UNSUPPORTED', `EC curve '${curve}' is not supported for signing; use P-256 or P-384`);
  }
  if (t === 'ed25519') return { oid: OID.ed25519, params: undefined, hash: null };
  if (t === 'rsa') return { oid: OID.sha256WithRsa, params: null, hash: 'sha256' };
  throw new MtlsError(
    'UNSUPPORTED',
    `key type '${t}' is not supported for signing; use ec-p256, ec-p384, ed25519 or rsa-*`,
  );
}

export function signData(key: KeyObject, data: Uint8Array): Buffer {
  const scheme = signatureSchemeFor(key);
  return crypto.sign(scheme.hash, data, key);
}

/** signData over the concatenation of `parts`, hashed piece by piece (a 5 MB CRL is neither copied nor held whole). */
export function signParts(key: KeyObject, parts: Part[]): Buffer {
  const scheme = signatureSchemeFor(key);
  // Ed25519 signs the message itself (PureEdDSA), so it needs it whole.
  if (!scheme.hash) return crypto.sign(null, sliceParts(parts, 0, Infinity), key);
  const signer = crypto.createSign(scheme.hash);
  for (const p of parts) for (const c of chunksOf(p)) signer.update(c);
  return signer.sign(key);
}

/** PKCS#8 PEM; with a passphrase, encrypted with PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC). */
export function exportPrivateKey(key: KeyObject, passphrase?: string): string {
  if (passphrase !== undefined) {
    return key.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase }) as string;
  }
  return key.export({ type: 'pkcs8', format: 'pem' }) as string;
}

const KEY_LABELS = new Set(['PRIVATE KEY', 'ENCRYPTED PRIVATE KEY', 'EC PRIVATE KEY', 'RSA PRIVATE KEY']);

/**
 * Loads a private key from PEM (PKCS#8, encrypted PKCS#8, SEC1, PKCS#1) or DER PKCS#8. Errors say what is
 * wrong without quoting the key.
 */
export function loadPrivateKey(data: Buffer | string, what: string, passphrase?: string): KeyObject {
  let input: crypto.PrivateKeyInput;
  let encrypted = false;
  if (looksLikePem(data)) {
    const blocks = decodePem(data.toString(), what).filter((b) => KEY_LABELS.has(b.label));
    if (blocks.length === 0)
      throw new MtlsError('BAD_KEY', `${what}: no private key found; expected a 'BEGIN PRIVATE KEY' PEM block`);
    if (blocks.length > 1)
      throw new MtlsError('BAD_KEY', `${what}: holds ${blocks.length} private keys; keep one key per file`);
    const b = blocks[0]!;
    encrypted = b.label === 'ENCRYPTED PRIVATE KEY';
    input = { key: encodePem(b.label, b.der), format: 'pem' };
  } else {
    const der = Buffer.isBuffer(data) ? data : Buffer.from(data);
    encrypted = isEncryptedPkcs8(der);
    input = { key: der, format: 'der', type: 'pkcs8' };
  }
  if (encrypted && passphrase === undefined) {
    throw new MtlsError('WRONG_PASSPHRASE', `${what} is encrypted; give its passphrase with --passphrase-file`);
  }
  if (passphrase !== undefined) input.passphrase = passphrase;
  try {
    return crypto.createPrivateKey(input);
  } catch (err) {
    if (encrypted)
      throw new MtlsError('WRONG_PASSPHRASE', `${what}: wrong passphrase (the key could not be decrypted)`);
    throw new MtlsError('BAD_KEY', `${what} is not a valid private key (${(err as Error).message.split('\n')[0]})`);
  }
}

/** An EncryptedPrivateKeyInfo starts with SEQUENCE { SEQUENCE { OID ... } }, a PrivateKeyInfo with an INTEGER version. */
function isEncryptedPkcs8(der: Buffer): boolean {
  const lenBytes = der[1] !== undefined && der[1] & 0x80 ? (der[1] & 0x7f) + 2 : 2;
  return der[0] === 0x30 && der[lenBytes] === 0x30;
}

/** "EC P-256", "RSA 2048", "Ed25519". */
export function describeKey(key: KeyObject): string {
  const t = key.asymmetricKeyType;
  const d = key.asymmetricKeyDetails;
  if (t === 'ec') return `EC ${curveLabel(d?.namedCurve)}`;
  if (t === 'rsa' || t === 'rsa-pss') return `${t.toUpperCase()} ${d?.modulusLength}`;
  if (t === 'ed25519') return 'Ed25519';
  if (t === 'ed448') return 'Ed448';
  return String(t);
}

function curveLabel(curve: string | undefined): string {
  return (
    ({ prime256v1: 'P-256', secp384r1: 'P-384', secp521r1: 'P-521' } as Record<string, string>)[curve ?? ''] ??
    String(curve)
  );
}

/**
 * Why a public key is too weak or unknown for mTLS, or null when it is acceptable. RSA under 2048 bits and
 * curves other than P-256/P-384/P-521 are refused, as rustls-webpki and Go do.
 */
export function keyWeakness(key: KeyObject): string | null {
  const t = key.asymmetricKeyType;
  const d = key.asymmetricKeyDetails;
  if (t === 'rsa' || t === 'rsa-pss')
    return (d?.modulusLength ?? 0) < 2048
      ? `RSA key of ${d?.modulusLength} bits is too weak (need 2048 or more)`
      : null;
  if (t === 'ec')
    return ['prime256v1', 'secp384r1', 'secp521r1'].includes(d?.namedCurve ?? '')
      ? null
      : `EC curve ${d?.namedCurve} is not allowed (use P-256, P-384 or P-521)`;
  if (t === 'ed25519') return null;
  if (t === 'dsa') return DSA_REFUSED;
  return `key algorithm ${t} is not allowed`;
}

/** The subjectPublicKey's bits of a SubjectPublicKeyInfo, without the BIT STRING's unused-bits octet (what key
 * identifiers and OCSP key hashes are computed over). */
export function spkiKeyBits(spki: Buffer): Buffer {
  const [, bits] = readChildren(readSingle(spki, 'SubjectPublicKeyInfo').value, 'SubjectPublicKeyInfo');
  if (!bits || bits.tag !== 0x03) throw new Error('SubjectPublicKeyInfo has no key BIT STRING');
  return bits.value.subarray(1);
}

/** The NIST prime curves we accept: field prime p, coefficient b (a = -3), and the length of a coordinate. */
const CURVES: Record<string, { name: string; p: bigint; b: bigint; bytes: number }> = {
  [OID.secp256r1]: {
    name: 'P-256',
    p: 2n ** 256n - 2n ** 224n + 2n ** 192n + 2n ** 96n - 1n,
    b: 0x5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604bn,
    bytes: 32,
  },
  [OID.secp384r1]: {
    name: 'P-384',
    p: 2n ** 384n - 2n ** 128n - 2n ** 96n + 2n ** 32n - 1n,
    b: 0xb3312fa7e23ee7e4988e056be3f82d19181d9c6efe8141120314088f5013875ac656398d8a2ed19d2a85c8edd3ec2aefn,
    bytes: 48,
  },
  [OID.secp521r1]: {
    name: 'P-521',
    p: 2n ** 521n - 1n,
    b: 0x0051953eb9618e1c9a1f929a21a0b68540eea2da725b99b315f3b8b489918ef109e156193951ec7e937b1652c0bd3bb1bf073573df883d2c34f1ef451fd46b503f00n,
    bytes: 66,
  },
};
/** Names OpenSSL gives the curves we refuse, so both paths of keyWeakness say the same. */
const OTHER_CURVES: Record<string, string> = {
  '1.2.840.10045.3.1.1': 'prime192v1',
  '1.3.132.0.33': 'secp224r1',
  '1.3.132.0.10': 'secp256k1',
  '1.3.36.3.3.2.8.1.1.7': 'brainpoolP256r1',
};

const big = (b: Buffer) => BigInt(`0x${b.toString('hex') || '0'}`);

/**
 * keyWeakness read from the SubjectPublicKeyInfo DER without loading the key (OpenSSL 3.0's decoder costs
 * ~200 µs, most of a leaf's validation): a reason, null when acceptable, or undefined when only loading the key
 * can tell (a compressed EC point, an algorithm we do not read here). An uncompressed EC point must lie on its
 * curve, as loading the key would check.
 */
export function spkiWeakness(spki: Buffer): KeyVerdict | null | undefined {
  try {
    const [algT, bitsT] = readChildren(readSingle(spki, 'SubjectPublicKeyInfo').value, 'SubjectPublicKeyInfo');
    if (!algT || !bitsT || bitsT.tag !== 0x03 || bitsT.value[0] !== 0) return undefined;
    const [oidT, paramT] = readChildren(algT.value, 'AlgorithmIdentifier');
    const alg = decodeOid(oidT!.value, 'algorithm');
    const key = bitsT.value.subarray(1);
    if (alg === OID.ed25519) return key.length === 32 ? null : undefined;
    if (alg === OID.dsa) return weak(DSA_REFUSED);
    if (alg === OID.rsaEncryption) {
      const [n, e] = readChildren(readSingle(key, 'RSAPublicKey').value, 'RSAPublicKey');
      if (!n || n.tag !== 0x02 || !e || e.tag !== 0x02) return undefined;
      const bits = big(n.value).toString(2).length;
      return bits < 2048 ? weak(`RSA key of ${bits} bits is too weak (need 2048 or more)`) : null;
    }
    if (alg !== OID.ecPublicKey || paramT?.tag !== 0x06) return undefined;
    const curveOid = decodeOid(paramT.value, 'namedCurve');
    const curve = CURVES[curveOid];
    if (!curve)
      return weak(`EC curve ${OTHER_CURVES[curveOid] ?? curveOid} is not allowed (use P-256, P-384 or P-521)`);
    if (key[0] !== 0x04 || key.length !== 1 + 2 * curve.bytes) return undefined;
    const x = big(key.subarray(1, 1 + curve.bytes));
    const y = big(key.subarray(1 + curve.bytes));
    const { p, b } = curve;
    const onCurve = x < p && y < p && (y * y - (x * x * x - 3n * x + b)) % p === 0n;
    return onCurve ? null : { malformed: true, why: `its EC public key is not a point on ${curve.name}` };
  } catch {
    return undefined;
  }
}

/** What spkiWeakness found: a weak key, or one that is no key at all. */
export interface KeyVerdict {
  malformed: boolean;
  why: string;
}
const weak = (why: string): KeyVerdict => ({ malformed: false, why });
const DSA_REFUSED = 'DSA keys are not allowed (TLS 1.3 has no DSA; use ECDSA P-256)';

/** A DER INTEGER's content is positive and minimally encoded (what OpenSSL's decoder insists on). */
const minimalPositive = (v: Buffer) =>
  v.length > 0 && !(v[0]! & 0x80) && !(v[0] === 0 && v.length > 1 && !(v[1]! & 0x80));

/**
 * The public key of a SubjectPublicKeyInfo. EC (an uncompressed point on P-256/384/521), RSA and Ed25519 keys are
 * imported as JWK, which OpenSSL 3.0 builds directly (EC 2x, RSA 30x faster than its DER decoder framework, whose
 * ~100-200 µs per key was most of a handshake's chain validation); the point is still checked to be on its curve.
 * Anything else, or anything unusual, goes through the DER decoder, which judges it.
 */
export function loadSpki(spki: Buffer): KeyObject {
  const jwk = spkiJwk(spki);
  if (jwk) {
    try {
      return crypto.createPublicKey({ key: jwk, format: 'jwk' });
    } catch {
      // the DER decoder below says why
    }
  }
  return crypto.createPublicKey({ key: spki, format: 'der', type: 'spki' });
}

function spkiJwk(spki: Buffer): crypto.JsonWebKey | undefined {
  try {
    const [algT, bitsT, extra] = readChildren(readSingle(spki, 'SubjectPublicKeyInfo').value, 'SubjectPublicKeyInfo');
    if (!algT || algT.tag !== 0x30 || !bitsT || bitsT.tag !== 0x03 || bitsT.value[0] !== 0 || extra) return undefined;
    const [oidT, paramT, more] = readChildren(algT.value, 'AlgorithmIdentifier');
    if (!oidT || oidT.tag !== 0x06 || more) return undefined;
    const alg = decodeOid(oidT.value, 'algorithm');
    const key = bitsT.value.subarray(1);
    const b64 = (b: Buffer) => b.toString('base64url');
    if (alg === OID.ed25519)
      return !paramT && key.length === 32 ? { kty: 'OKP', crv: 'Ed25519', x: b64(key) } : undefined;
    if (alg === OID.rsaEncryption) {
      if (!paramT || paramT.tag !== 0x05 || paramT.value.length !== 0) return undefined;
      const [n, e, rest] = readChildren(readSingle(key, 'RSAPublicKey').value, 'RSAPublicKey');
      if (
        !n ||
        n.tag !== 0x02 ||
        !e ||
        e.tag !== 0x02 ||
        rest ||
        !minimalPositive(n.value) ||
        !minimalPositive(e.value)
      )
        return undefined;
      const strip = (v: Buffer) => (v[0] === 0 ? v.subarray(1) : v);
      return { kty: 'RSA', n: b64(strip(n.value)), e: b64(strip(e.value)) };
    }
    if (alg !== OID.ecPublicKey || paramT?.tag !== 0x06) return undefined;
    const curve = CURVES[decodeOid(paramT.value, 'namedCurve')];
    if (!curve || key[0] !== 0x04 || key.length !== 1 + 2 * curve.bytes) return undefined;
    return {
      kty: 'EC',
      crv: curve.name,
      x: b64(key.subarray(1, 1 + curve.bytes)),
      y: b64(key.subarray(1 + curve.bytes)),
    };
  } catch {
    return undefined;
  }
}

const spkiCache = new WeakMap<KeyObject, Buffer>();

/** SubjectPublicKeyInfo DER of a key, memoized: OpenSSL 3.0's encoder costs ~200 µs per export. */
export function spkiDer(key: KeyObject): Buffer {
  let der = spkiCache.get(key);
  if (!der) {
    der = key.export({ type: 'spki', format: 'der' });
    spkiCache.set(key, der);
  }
  return der;
}

/** Does the private key belong to the public key? Compared by their SubjectPublicKeyInfo encodings. */
export function keysMatch(privateKey: KeyObject, publicKey: KeyObject): boolean {
  return crypto.createPublicKey(privateKey).export({ type: 'spki', format: 'der' }).equals(spkiDer(publicKey));
}
