import crypto, { type KeyObject, type webcrypto } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { errors as joseErrors, jwtVerify, SignJWT } from 'jose';
import { MtlsError } from '../errors.js';
import { checkPrivateFile, stageFiles } from '../io/files.js';
import { exportPrivateKey, generateKeyPair, loadPrivateKey } from '../pki/keys.js';
import { checkLeafNames, type LeafNames, type LeafProfile } from '../pki/profiles.js';
import { checkCertName } from './authority.js';

/**
 * One-time enrollment tokens (issue 15): a JWT (ES256) signed with the CA's provisioner key, granting one
 * certificate for the names it carries, to whoever presents it to `POST /v1/sign` before it expires. Bound to the
 * CA by its audience (the root's SHA-256 fingerprint); spent once, by its `jti`, in the inventory (a constraint,
 * so a token is spent once across replicas too).
 */

const ISSUER = 'mtlskit-ca';
/** A token's lifetime at most: an enrollment secret that lives for days is a credential, not a token. */
export const MAX_TOKEN_TTL_MS = 24 * 3600e3;
export const DEFAULT_TOKEN_TTL_MS = 5 * 60e3;
/** Clock skew allowed between the machine that made the token and the CA that checks it. */
const SKEW_S = 60;
/** A token longer than this is not ours (ours are well under 1 KiB). */
const MAX_TOKEN_LENGTH = 8192;

/** What a token grants: one certificate of `profile` for exactly these names, valid for `validityMs`. */
export interface Grant {
  name: string;
  profile: LeafProfile;
  names: LeafNames;
  validityMs: number;
}

/** A checked token: what it grants, and what spends it. */
export interface CheckedToken extends Grant {
  jti: string;
  expiresAt: Date;
}

export const provisionerKeyPath = (home: string) => path.join(home, 'provisioner.key');

/** The audience a CA's tokens carry: its root's fingerprint, so a token for one CA is refused by every other. */
export const tokenAudience = (rootFingerprint256: string) =>
  `urn:mtlskit:ca:sha256:${rootFingerprint256.replace(/:/g, '').toLowerCase()}`;

/** The provisioner key of the CA in `home`, created (0600, atomically) on first use. */
export function provisionerKey(home: string, create: boolean): KeyObject {
  const file = provisionerKeyPath(home);
  if (!fs.existsSync(file)) {
    if (!create)
      throw new MtlsError(
        'CA_NOT_FOUND',
        `${file} is missing: no enrollment token was ever made for this CA; make one with 'mtls ca token NAME'`,
      );
    const { privateKey } = generateKeyPair('ec-p256');
    stageFiles([{ path: file, data: exportPrivateKey(privateKey), mode: 0o600 }]).commit();
  }
  checkPrivateFile(file, 'provisioner key');
  return loadPrivateKey(fs.readFileSync(file), `provisioner key ${file}`);
}

/** The provisioner's public key, imported once for verifying (importing it for every token cost ~0.3 ms). */
export interface TokenVerifier {
  verifyKey: webcrypto.CryptoKey;
}

/**
 * A verifier for the provisioner key of `home`, re-read only when the key file changes (a service may start before
 * the first `mtls ca token` makes it). Throws TOKEN_INVALID while there is none.
 */
export function provisionerVerifier(home: string): () => Promise<TokenVerifier> {
  const file = provisionerKeyPath(home);
  let cached: { stamp: string; verifier: TokenVerifier } | undefined;
  return async () => {
    let stamp: string;
    try {
      const st = fs.statSync(file);
      stamp = `${st.ino}:${st.mtimeMs}:${st.size}`;
    } catch {
      throw new MtlsError('TOKEN_INVALID', 'this CA has made no enrollment token yet; make one with mtls ca token');
    }
    if (cached?.stamp !== stamp) {
      const spki = crypto.createPublicKey(provisionerKey(home, false)).export({ type: 'spki', format: 'der' });
      const verifyKey = await crypto.webcrypto.subtle.importKey(
        'spki',
        spki,
        { name: 'ECDSA', namedCurve: 'P-256' },
        false,
        ['verify'],
      );
      cached = { stamp, verifier: { verifyKey } };
    }
    return cached.verifier;
  };
}

/** Signs a token for `grant`, valid `ttlMs` from `now`. */
export async function makeToken(
  key: KeyObject,
  audience: string,
  grant: Grant,
  ttlMs = DEFAULT_TOKEN_TTL_MS,
  now = new Date(),
): Promise<string> {
  if (!(ttlMs > 0) || ttlMs > MAX_TOKEN_TTL_MS)
    throw new MtlsError('USAGE', `--ttl of ${Math.round(ttlMs / 1000)}s is out of range; a token lives at most 24h`);
  checkCertName(grant.name);
  const iat = Math.floor(now.getTime() / 1000);
  return new SignJWT({
    mtls: {
      profile: grant.profile,
      dns: grant.names.dns,
      ip: grant.names.ip,
      ...(grant.names.uri[0] ? { spiffeId: grant.names.uri[0] } : {}),
      validity: Math.floor(grant.validityMs / 1000),
    },
  })
    .setProtectedHeader({ alg: 'ES256', typ: 'JWT' })
    .setIssuer(ISSUER)
    .setAudience(audience)
    .setSubject(grant.name)
    .setJti(crypto.randomBytes(16).toString('base64url'))
    .setIssuedAt(iat)
    .setNotBefore(iat - SKEW_S)
    .setExpirationTime(iat + Math.ceil(ttlMs / 1000))
    .sign(key);
}

/**
 * Checks a token's signature (ES256 only, by the provisioner key), issuer, audience, times and grant. Does not
 * spend it: the caller spends `jti` in the same transaction that records the certificate.
 */
export async function checkToken(
  token: unknown,
  key: KeyObject | TokenVerifier,
  audience: string,
  now = new Date(),
): Promise<CheckedToken> {
  if (typeof token !== 'string' || token.length === 0 || token.length > MAX_TOKEN_LENGTH)
    throw new MtlsError('TOKEN_INVALID', 'the request has no enrollment token; make one with mtls ca token NAME');
  let payload;
  try {
    const verifier = 'verifyKey' in key ? key.verifyKey : crypto.createPublicKey(key);
    ({ payload } = await jwtVerify(token, verifier, {
      algorithms: ['ES256'],
      issuer: ISSUER,
      audience,
      requiredClaims: ['jti', 'sub', 'exp', 'iat'],
      clockTolerance: SKEW_S,
      currentDate: now,
    }));
  } catch (err) {
    if (err instanceof joseErrors.JWTExpired)
      throw new MtlsError('TOKEN_EXPIRED', 'the enrollment token has expired; make a new one with mtls ca token');
    if (err instanceof joseErrors.JWTClaimValidationFailed && err.claim === 'aud')
      throw new MtlsError('TOKEN_INVALID', 'the enrollment token is for another CA (its audience is not this root)');
    throw new MtlsError(
      'TOKEN_INVALID',
      `the enrollment token is not valid for this CA (${(err as Error).message}); make one with mtls ca token`,
    );
  }
  if (payload.exp! - payload.iat! > MAX_TOKEN_TTL_MS / 1000)
    throw new MtlsError('TOKEN_INVALID', 'the enrollment token lives longer than 24h; this CA does not accept it');
  const m = payload['mtls'] as
    { profile?: unknown; dns?: unknown; ip?: unknown; spiffeId?: unknown; validity?: unknown } | undefined;
  const strings = (v: unknown) => Array.isArray(v) && v.every((x) => typeof x === 'string');
  if (
    !m ||
    typeof m !== 'object' ||
    !['server', 'client', 'spiffe'].includes(m.profile as string) ||
    !strings(m.dns ?? []) ||
    !strings(m.ip ?? []) ||
    (m.spiffeId !== undefined && typeof m.spiffeId !== 'string') ||
    typeof m.validity !== 'number' ||
    !(m.validity > 0)
  )
    throw new MtlsError('TOKEN_INVALID', 'the enrollment token grants nothing this CA understands');
  const profile = m.profile as LeafProfile;
  return {
    jti: payload.jti!,
    expiresAt: new Date(payload.exp! * 1000),
    name: checkCertName(payload.sub!),
    profile,
    names: checkLeafNames(profile, {
      dns: m.dns as string[],
      ip: m.ip as string[],
      ...(m.spiffeId !== undefined ? { spiffeId: m.spiffeId as string } : {}),
    }),
    validityMs: m.validity * 1000,
  };
}
