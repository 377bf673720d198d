import crypto, { type KeyObject } from 'node:crypto';
import { MtlsError } from '../errors.js';
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
  return `key algorithm ${t} is not allowed`;
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
